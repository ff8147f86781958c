"""The network: backbone widths and the folding of frozen BatchNorm into convolutions."""

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from fcoslab.config import load_config
from fcoslab.errors import FcoslabError
from fcoslab.modeling.model import Backbone, build_model, load_pretrained_backbone


def _randomise_frozen_bn(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.weight.numel()
            m.weight.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_folded_frozen_bn_equals_torchvision_resnet(name):
    cfg = load_config("imprv_coco_1x", {"model.backbone": name}).model
    torch.manual_seed(0)
    ours = Backbone(cfg)
    reference = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
    _randomise_frozen_bn(reference)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    # the backbone keeps torchvision's key names below its stages, so its weights load unchanged
    ours_state = ours.state_dict()
    mapping = {"stem.0": "conv1", "stem.1": "bn1"}
    for key in ours_state:
        src = next((key.replace(a, b, 1) for a, b in mapping.items() if key.startswith(a + ".")), key)
        ours_state[key] = state[src]
    ours.load_state_dict(ours_state)
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        c2 = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
        c3 = reference.layer2(c2)
        c4 = reference.layer3(c3)
        c5 = reference.layer4(c4)
        got = ours(x)
    for a, b in zip(got, (c3, c4, c5)):  # float rounding only: errors far below the activations' scale
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_folded_frozen_bn_trains_the_convolution():
    cfg = load_config("imprv_coco_1x", {"model.backbone": "resnet18", "model.freeze_at": 0}).model
    net = Backbone(cfg)
    _randomise_frozen_bn(net)
    sum(f.sum() for f in net(torch.rand(1, 3, 64, 64))).backward()
    conv, bn = net.layer2[0].conv1, net.layer2[0].bn1
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert not bn.weight.requires_grad and "layer2.0.bn1.running_var" in net.state_dict()


def test_backbone_width_scales_every_stage():
    cfg = load_config("shapes_128", {"model.backbone_width": 32})  # P3-P7
    model = build_model(cfg.model, 4)
    assert model.backbone.out_channels == (64, 128, 256)
    assert model.backbone.layer1[0].conv1.out_channels == 32 and model.backbone.layer4[0].conv2.out_channels == 256
    out = model(torch.rand(2, 3, 128, 128))
    assert out["cls_logits"].shape == (2, 16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1, 4)
    full = sum(p.numel() for p in build_model(load_config("shapes_128", {"model.backbone_width": 64}).model, 4).backbone.parameters())
    assert sum(p.numel() for p in model.backbone.parameters()) < full / 3


@pytest.mark.parametrize("over, message", [
    ({"model.backbone": "resnet50", "model.backbone_width": 32}, "resnet10/18/34"),
    ({"model.backbone_width": 20}, "multiple of 8"),
    ({"model.backbone_width": 32, "model.backbone_weights": "w.pth"}, "pretrained weights exist only for width 64"),
])
def test_backbone_width_errors_name_the_key(over, message):
    with pytest.raises(FcoslabError, match="model.backbone_width") as err:
        load_config("shapes", over)
    assert message in str(err.value)


def test_pretrained_backbone_loads_after_the_model_is_built(tmp_path):

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"module." + k: v for k, v in reference.state_dict().items()}, path)  # a DDP-saved file
    cfg = load_config("imprv_coco_1x", {"model.backbone": "resnet18", "model.backbone_weights": str(path)})
    model = build_model(cfg.model, 3)  # building reads no file
    assert not torch.equal(model.backbone.stem[0].weight, reference.conv1.weight)
    load_pretrained_backbone(model, cfg.model)
    assert torch.equal(model.backbone.stem[0].weight, reference.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    (tmp_path / "bad.pth").write_text("not weights")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    for bad, message in ((tmp_path / "none.pth", "does not exist"), (tmp_path / "bad.pth", "cannot load backbone weights"),
                         (tmp_path / "other.pth", "do not fit the backbone"), (tmp_path / "tensor.pth", "not a state_dict")):
        with pytest.raises(FcoslabError, match=message) as err:
            load_pretrained_backbone(model, cfg.replace(**{"model.backbone_weights": str(bad)}).model)
        assert "config key 'model.backbone_weights'" in str(err.value) and str(bad) in str(err.value)


def test_torchvision_weights_without_network_name_the_key(monkeypatch):
    from urllib.error import URLError

    from torchvision.models import WeightsEnum

    def offline(self, *args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    cfg = load_config("shapes", {"model.backbone": "resnet18", "model.backbone_width": 64, "model.torchvision_weights": True})
    with pytest.raises(FcoslabError, match="config key 'model.torchvision_weights': cannot get ResNet18_Weights"):
        load_pretrained_backbone(build_model(cfg.model, 3), cfg.model)


@pytest.mark.parametrize("strides", [(8, 16, 32), (8, 16, 32, 64), (8, 16, 32, 64, 128), (4, 8, 16, 32),
                                     (4, 8, 16, 32, 64), (4, 8, 16, 32, 64, 128)])
def test_strides_choose_the_pyramid_levels_and_train_a_step(strides):
    bounds = {4: -1, 8: 16, 16: 32, 32: 64, 64: 128, 128: 256}
    ranges = [[-1 if s == strides[0] else bounds[s], bounds[s] * 4 if s != strides[-1] else 1e8] for s in strides]
    for i in range(1, len(ranges)):
        ranges[i][0] = ranges[i - 1][1]
    cfg = load_config("shapes", {"model.strides": list(strides), "assign.regress_ranges": ranges, "model.fpn_norm": "none"})
    model = build_model(cfg.model, 4)
    out = model(torch.rand(2, 3, 128, 128))
    assert out["level_sizes"] == [(128 // s, 128 // s) for s in strides]
    assert out["cls_logits"].shape[1] == sum((128 // s) ** 2 for s in strides)
    assert (model.fpn.p7 is None) == (128 not in strides) and (model.fpn.p6 is None) == (64 not in strides)
    assert len(model.head.scales) == len(strides) and len(model.fpn.lateral) == (4 if strides[0] == 4 else 3)
    from fcoslab.modeling.decode import decode
    from fcoslab.modeling.loss import FCOSCriterion

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    terms, stats = FCOSCriterion(cfg.assign, cfg.loss)(out, torch.tensor([[[10.0, 10.0, 90.0, 70.0]]] * 2),
                                                       torch.tensor([[1]] * 2))
    assert torch.isfinite(terms["loss"]) and stats["num_pos"] > 0
    terms["loss"].backward()  # a training step through every level, P2 included
    assert model.fpn.lateral[0].weight.grad.abs().sum() > 0
    optimizer.step()
    size = torch.tensor([[128, 128]])
    assert len(decode(model(torch.rand(1, 3, 128, 128)), size, size, cfg.decode)) == 1


@pytest.mark.parametrize("strides", [[2, 4, 8, 16, 32], [8, 16, 32, 64, 128, 256], [8, 16], [4, 16, 32]])
def test_other_strides_are_refused_by_name(strides):
    ranges = [[0, 1e8]] * len(strides)
    with pytest.raises(FcoslabError, match="model.strides"):
        load_config("shapes", {"model.strides": strides, "assign.regress_ranges": ranges})


def test_imagenet_resnet50_file_by_torchvision_name(tmp_path):
    """model.backbone_weights with the file torchvision's ImageNet R-50 downloads as, saved here from its own
    resnet50(); a file of another network names the keys that do not fit."""
    reference = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        reference.layer3[0].bn1.running_mean.normal_()
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(reference.state_dict(), path)
    cfg = load_config("seed_coco_2x", {"model.backbone_weights": str(path)})
    model = build_model(cfg.model, 2)
    load_pretrained_backbone(model, cfg.model)
    assert torch.equal(model.backbone.layer3[0].bn1.running_mean, reference.layer3[0].bn1.running_mean)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    r18 = tmp_path / "resnet18-f37072fd.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), r18)
    with pytest.raises(FcoslabError, match=r"resnet18-f37072fd.pth \(config key 'model.backbone_weights'\) do not fit the backbone: "
                       r".*layer1\.0\.conv1\.weight"):
        load_pretrained_backbone(model, cfg.replace(**{"model.backbone_weights": str(r18)}).model)


def test_fpn_norm_normalises_each_pyramid_level():
    """``model.fpn_norm=gn``: every P3-P5 map leaves the FPN with zero mean and unit spread per image and
    group (GroupNorm's initial affine), whatever the input's scale; without it the maps follow the input."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 128, 96) * 50
    levels = {}
    for norm in ("none", "gn"):
        cfg = load_config("shapes", {"model.fpn_norm": norm})
        model = build_model(cfg.model, 4).eval()
        with torch.no_grad():
            levels[norm] = model.fpn(model.backbone(images))[:3]
    groups = 32
    for p in levels["gn"]:
        g = p.reshape(p.shape[0], groups, -1)
        torch.testing.assert_close(g.mean(-1), torch.zeros(2, groups), atol=1e-4, rtol=0)
        torch.testing.assert_close(g.std(-1, unbiased=False), torch.ones(2, groups), atol=1e-2, rtol=0)
    assert any(float(p.reshape(2, groups, -1).std(-1).sub(1).abs().max()) > 0.5 for p in levels["none"])


def test_zero_init_residual_starts_each_block_as_the_identity():
    """``model.zero_init_residual``: a block without a downsampling shortcut returns its (non-negative) input
    unchanged at initialisation, and its last BatchNorm still trains; the plain init is no identity."""
    x = torch.rand(2, 32, 16, 16)
    for zero in (True, False):
        cfg = load_config("shapes", {"model.zero_init_residual": zero})
        torch.manual_seed(0)
        block = build_model(cfg.model, 4).backbone.layer1[0].train()
        assert block.downsample is None
        same = torch.allclose(block(x), x)
        assert same == zero
    assert block.bn2.weight.requires_grad


def test_zero_init_residual_refuses_frozen_batchnorm():
    cfg = load_config("shapes", {"model.zero_init_residual": True, "model.frozen_bn": True})
    with pytest.raises(FcoslabError, match="model.zero_init_residual=true needs model.frozen_bn=false"):
        build_model(cfg.model, 4)
