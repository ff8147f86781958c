"""The FCOS network: ResNet backbone, FPN P3-P7 (or P2-P7) and a shared head.

``forward`` returns raw head outputs in train and eval mode; targets, losses and decoding are plain
functions elsewhere. Images come in as (B, 3, H, W), uint8 or float in [0, 1]; conversion to float and
ImageNet normalisation are the model's first steps. No resizing happens inside the model.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from ..files import load_weights_file
from ..config import Config, ModelConfig
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, float_pixels
from ..errors import FcoslabError
from .points import make_points, point_input_size

log = logging.getLogger("fcoslab")

_BLOCKS = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}  # BasicBlock nets


def backbone_channels(name: str, width: int = 64, from_c2: bool = False) -> tuple[int, ...]:
    """Channels of C3, C4, C5 (C2 first with ``from_c2``) for a backbone whose first stage has ``width`` channels."""
    expansion = 1 if name in _BLOCKS else 4  # BasicBlock or Bottleneck
    return tuple(2 ** k * width * expansion for k in range(0 if from_c2 else 1, 4))


def build_resnet(name: str, norm_layer, width: int = 64) -> nn.Module:
    """torchvision's ResNets; ``resnet10`` is torchvision's ResNet class with one BasicBlock per stage
    (half of ResNet-18), for small experiments on a CPU. It has no pretrained weights.

    ``width`` (BasicBlock nets only) scales the channels of every stage: 64 is torchvision's network,
    32 has about a quarter of its multiply-adds."""
    from torchvision.models.resnet import BasicBlock, ResNet

    if name == "resnet10" or width != 64:
        net = ResNet(BasicBlock, _BLOCKS[name], norm_layer=norm_layer)
        if width != 64:  # rebuild every stage at the new width with torchvision's own layer builder
            net.inplanes = width
            net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            net.bn1 = norm_layer(width)
            for i in range(4):
                setattr(net, f"layer{i + 1}", net._make_layer(BasicBlock, width * 2 ** i, _BLOCKS[name][i],
                                                              stride=1 if i == 0 else 2))
            for m in net.modules():  # torchvision's initialisation of the rebuilt layers
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return net
    return getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)


class _ConvThenFrozenBN(nn.Conv2d):
    """A convolution whose following FrozenBatchNorm2d is folded into it: one convolution with weights
    ``w * scale`` and bias ``shift`` (``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``),
    recomputed at every call so that training updates ``w`` as before. This saves the normalisation's two
    passes over the activations, forward and backward; the parameters and buffers keep their names."""

    def forward(self, x: Tensor) -> Tensor:
        bn = self.folded_bn[0]
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # (C_out,)
        return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale)


class _FoldedFrozenBN(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d whose affine its convolution applies: it keeps its buffers and passes x through."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def fold_frozen_bn(net: nn.Module) -> None:
    """Fold every FrozenBatchNorm2d of a torchvision ResNet into the convolution before it (in place).
    Outputs are equal up to float rounding."""
    pairs = [(net.conv1, net.bn1)]
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            pairs += [(getattr(block, f"conv{i}"), getattr(block, f"bn{i}")) for i in (1, 2, 3) if hasattr(block, f"bn{i}")]
            if block.downsample is not None:
                pairs.append((block.downsample[0], block.downsample[1]))
    for conv, bn in pairs:
        if type(conv) is nn.Conv2d and type(bn) is FrozenBatchNorm2d and conv.bias is None:
            conv.__class__, bn.__class__ = _ConvThenFrozenBN, _FoldedFrozenBN
            conv.folded_bn = (bn,)  # a tuple: not registered as a submodule, so no duplicate state_dict keys


class Backbone(nn.Module):
    """A torchvision ResNet returning C3, C4, C5 (strides 8, 16, 32), with C2 (stride 4) first when the
    pyramid starts at stride 4."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        norm = FrozenBatchNorm2d if cfg.frozen_bn else nn.BatchNorm2d
        net = build_resnet(cfg.backbone, norm, cfg.backbone_width)
        if cfg.zero_init_residual:
            if cfg.frozen_bn:
                raise FcoslabError("model.zero_init_residual=true needs model.frozen_bn=false: a frozen "
                                   "BatchNorm started at 0 would switch its residual block off for good")
            from torchvision.models.resnet import BasicBlock, Bottleneck

            for m in net.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.bn3.weight if isinstance(m, Bottleneck) else m.bn2.weight)
        if cfg.frozen_bn:
            fold_frozen_bn(net)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.from_c2 = cfg.strides[0] == 4
        self.out_channels = backbone_channels(cfg.backbone, cfg.backbone_width, self.from_c2)
        for stage in [self.stem, self.layer1, self.layer2, self.layer3, self.layer4][: cfg.freeze_at]:
            stage.requires_grad_(False)

    def load_torchvision_state(self, state: dict[str, Tensor], source: str) -> None:
        """Load an ImageNet state_dict with torchvision's ResNet key names (``conv1.``, ``bn1.``,
        ``layerN.``; a ``fc.`` head and a ``module.`` prefix are ignored)."""
        renamed = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            if key.startswith("fc."):
                continue
            for old, new in (("conv1.", "stem.0."), ("bn1.", "stem.1.")):
                if key.startswith(old):
                    key = new + key[len(old):]
            renamed[key] = value
        try:
            missing, unexpected = self.load_state_dict(renamed, strict=False)
        except RuntimeError as e:  # tensors of other shapes
            detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
            raise FcoslabError(f"backbone weights {source} do not fit the backbone: {detail}") from None
        if missing or unexpected:
            raise FcoslabError(f"backbone weights {source} do not fit the backbone: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")

    def forward(self, x: Tensor) -> list[Tensor]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5] if self.from_c2 else [c3, c4, c5]


def load_pretrained_backbone(model: "FCOS", cfg: ModelConfig) -> None:
    """Load the backbone's ImageNet weights named by the config into a built model: a local
    ``model.backbone_weights`` state_dict file, or ``model.torchvision_weights`` (torchvision's weight enum,
    from its cache or the network). Training calls this once; a checkpoint's weights replace it anyway."""
    if cfg.backbone_weights:
        p = Path(cfg.backbone_weights)
        state = load_weights_file(p, "backbone weights (config key 'model.backbone_weights')")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise FcoslabError(f"config key 'model.backbone_weights': {p} holds a {type(state).__name__}, not a state_dict")
        model.backbone.load_torchvision_state(state, f"{p} (config key 'model.backbone_weights')")
    elif cfg.torchvision_weights:
        if cfg.backbone == "resnet10":
            raise FcoslabError("config key 'model.torchvision_weights': resnet10 has no pretrained weights")
        weights = torchvision.models.get_model_weights(cfg.backbone).DEFAULT
        try:
            state = weights.get_state_dict(progress=False)
        except OSError as e:  # no network and no cached file (URLError is an OSError)
            raise FcoslabError(f"config key 'model.torchvision_weights': cannot get {weights} ({e.strerror or e}): "
                               f"without a network, put its file in {torch.hub.get_dir()}/checkpoints or set "
                               "model.backbone_weights=PATH") from None
        model.backbone.load_torchvision_state(state, f"torchvision {weights} (config key 'model.torchvision_weights')")


class FPN(nn.Module):
    """Feature pyramid P3-P5 from C3-C5 (or P2-P5 from C2-C5), then ``extra_levels`` (0-2) more: P6 from
    P5 (or C5) by a stride-2 conv, P7 from relu(P6). ``norm="gn"`` puts a GroupNorm after each lateral and
    output conv (as detectors trained from scratch do, He et al. 2019); P6 and P7 stay plain."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, p6_from: str, extra_levels: int = 2,
                 norm: str = "none"):
        super().__init__()

        def conv(c_in: int, kernel: int) -> nn.Module:
            layer = nn.Conv2d(c_in, channels, kernel, padding=kernel // 2)
            return layer if norm == "none" else nn.Sequential(layer, nn.GroupNorm(gn_groups(channels), channels))

        self.lateral = nn.ModuleList(conv(c, 1) for c in in_channels)
        self.output = nn.ModuleList(conv(channels, 3) for _ in in_channels)
        self.p6_from = p6_from
        self.p6 = (nn.Conv2d(channels if p6_from == "p5" else in_channels[-1], channels, 3, stride=2, padding=1)
                   if extra_levels >= 1 else None)
        self.p7 = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if extra_levels >= 2 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        inner = self.lateral[-1](feats[-1])
        outs = [self.output[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral[i](feats[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output[i](inner))
        if self.p6 is not None:
            outs.append(self.p6(outs[-1] if self.p6_from == "p5" else feats[-1]))
        if self.p7 is not None:
            outs.append(self.p7(F.relu(outs[-1])))
        return outs


class Scale(nn.Module):
    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def gn_groups(channels: int) -> int:
    """GroupNorm groups for a head of ``channels``: 32 as in FCOS, fewer for thin heads so that a group
    always spans at least 2 channels (a 1x1 P7 map of one image then still has 2 values per group)."""
    return math.gcd(32, channels // 2)


class Head(nn.Module):
    """Shared FCOS head: a classification tower and a regression tower (with center-ness on it)."""

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        c = cfg.fpn_channels

        def tower() -> nn.Sequential:
            layers = []
            for _ in range(cfg.head_convs):
                layers.append(nn.Conv2d(c, c, 3, padding=1))
                if cfg.head_norm == "gn":
                    layers.append(nn.GroupNorm(gn_groups(c), c))
                layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls_logits = nn.Conv2d(c, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(c, 4, 3, padding=1)
        self.centerness = nn.Conv2d(c, 1, 3, padding=1) if cfg.centerness else None
        self.scales = nn.ModuleList((Scale(1.0) if cfg.level_scales else nn.Identity()) for _ in cfg.strides)
        self.regression, self.strides = cfg.regression, cfg.strides
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        logits, ltrb, ctr = [], [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides)):
            cls_feat, reg_feat = self.cls_tower(x), self.reg_tower(x)
            logits.append(self.cls_logits(cls_feat).flatten(2))  # (B, K, H*W)
            reg = self.scales[level](self.bbox_pred(reg_feat)).float()
            reg = F.relu(reg) * stride if self.regression == "relu_stride" else torch.exp(reg.clamp(max=20))
            ltrb.append(reg.flatten(2))  # (B, 4, H*W)
            if self.centerness is not None:
                ctr.append(self.centerness(reg_feat).flatten(2))  # (B, 1, H*W)
        logits_all = torch.cat(logits, dim=2).transpose(1, 2)  # (B, P, K)
        ltrb_all = torch.cat(ltrb, dim=2).transpose(1, 2)  # (B, P, 4)
        ctr_all = torch.cat(ctr, dim=2)[:, 0] if ctr else None  # (B, P)
        return logits_all, ltrb_all, ctr_all


class FCOS(nn.Module):
    """FCOS detector. ``forward(images)`` returns a dict of raw outputs.

    Returns (dict):
        ``cls_logits`` float (B, P, K); ``bbox_ltrb`` float32 (B, P, 4) distances in pixels;
        ``centerness`` float (B, P) logits or None; ``points`` float (P, 2) xy pixels;
        ``strides`` float (P,); ``level_sizes`` list of L (h, w).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = Backbone(cfg)
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn_channels, cfg.p6_from, extra_levels=sum(s > 32 for s in cfg.strides),
                       norm=cfg.fpn_norm)
        self.head = Head(cfg, num_classes)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> dict:
        x = (float_pixels(images) - self.pixel_mean) / self.pixel_std
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.fpn(self.backbone(x))
        logits, ltrb, ctr = self.head(feats)
        sizes = [tuple(f.shape[-2:]) for f in feats]
        points, strides = make_points(sizes, self.cfg.strides, self.cfg.point_offset, images.device,
                                      point_input_size(self.cfg, *images.shape[-2:]))
        return {"cls_logits": logits, "bbox_ltrb": ltrb, "centerness": ctr, "points": points,
                "strides": strides, "level_sizes": sizes}


def build_model(cfg: ModelConfig, num_classes: int) -> FCOS:
    """The FCOS network of a config's ``model`` section, for ``num_classes`` classes."""
    if num_classes < 1:
        raise FcoslabError(f"the model needs at least one class, got num_classes={num_classes}")
    return FCOS(cfg, num_classes)
