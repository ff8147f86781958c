"""Training parity with torchvision's FCOS (docs/assignment.md): under the ``tv_fcos_r50`` preset fcoslab's
assignment, loss terms and head gradients equal torchvision's training forward, and fcoslab's training
transforms + collate give the padded batch and boxes of torchvision's GeneralizedRCNNTransform.
Seeded random weights (tests/helpers.py), no download, images of 128-256 px."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torchvision import tv_tensors
from torchvision.models.detection import FCOS as TorchvisionFCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.transforms.v2 import functional as F

from fcoslab import ops
from fcoslab.config import load_config
from fcoslab.data import IMAGENET_MEAN, IMAGENET_STD, build_transforms, collate, pad_targets
from fcoslab.inference.torchvision_import import fcoslab_state, load_torchvision_fcos
from fcoslab.modeling.loss import FCOSCriterion
from fcoslab.modeling.model import build_model
from fcoslab.modeling.points import level_sizes, make_points, point_input_size
from fcoslab.modeling.targets import fcos_targets
from helpers import torchvision_fcos

STRIDES = (8, 16, 32, 64, 128)
SMALL = {"model.num_classes": 91, "data.min_size": [128], "data.max_size": 192, "data.hflip": 0.0}
CFG = load_config("tv_fcos_r50", SMALL)
TERMS = {"cls": "classification", "box": "bbox_regression", "centerness": "bbox_ctrness"}  # fcoslab: torchvision


def points_of(H, W, cfg=CFG):
    """fcoslab's points (P, 2), strides (P,) and level sizes for a padded (H, W) batch under ``cfg``."""
    sizes = level_sizes(H, W, cfg.model.strides)
    points, strides = make_points(sizes, cfg.model.strides, cfg.model.point_offset,
                                  input_size=point_input_size(cfg.model, H, W))
    return points, strides, sizes


def tv_compute_loss(targets, head_outputs, B, H, W, head=None):
    """torchvision's ``FCOS.compute_loss`` itself (its assignment) on its default anchors for a padded batch,
    followed by ``head.compute_loss`` (its losses), or returning its matched indices (B, P) without a head."""
    sizes = level_sizes(H, W, STRIDES)
    generator = AnchorGenerator(tuple((s,) for s in STRIDES), ((1.0,),) * len(STRIDES))  # FCOS's default
    anchors = generator(ImageList(torch.zeros(B, 1, H, W), [(H, W)] * B), [torch.zeros(B, 1, h, w) for h, w in sizes])
    matched = SimpleNamespace(compute_loss=lambda targets, outputs, anchors, matched_idxs: torch.stack(matched_idxs))
    model = SimpleNamespace(center_sampling_radius=1.5, head=head or matched)
    return TorchvisionFCOS.compute_loss(model, targets, head_outputs, anchors, [h * w for h, w in sizes])


def as_targets(boxes, labels=None):
    labels = labels or [torch.arange(len(b), dtype=torch.int64) % 90 + 1 for b in boxes]
    return [{"boxes": torch.tensor(b, dtype=torch.float32).reshape(-1, 4), "labels": l} for b, l in zip(boxes, labels)]


def point_index(points, strides, x, y, stride):
    return int(((points[:, 0] == x) & (points[:, 1] == y) & (strides == stride)).nonzero())


# A 1024 x 1024 batch (no network): max(l, t, r, b) exactly on each bound 64, 128, 256, 512 at a point of both
# levels, inside the center-sampling reach of both; areas 4099 and 4096 (equal in float32 after 1e8 - area),
# equal areas, nested boxes, areas 4112 and 4096 (not equal), borders; an image without boxes; random boxes
# with integer corners (many more boundary points).
BOUNDS = [[[96, 120, 208, 200], [512, 240, 736, 400]],  # at (160, 160): l = 64; at (640, 320): l = 128
          [[256, 352, 704, 672]],  # at (512, 512): l = 256
          [[0, 192, 896, 832]]]  # at (512, 512): l = 512; touches the left border
TIES = [[100, 100, 164, 164.046875], [100, 100, 164, 164], [300, 300, 364, 364], [290, 310, 354, 374],
        [560, 560, 720, 720], [570, 570, 710, 710], [100, 600, 164.25, 664], [100, 600, 164, 664],
        [900, 800, 1024, 1024], [0, 0, 200, 90]]


def random_boxes(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    wh = torch.rand(n, 2, generator=g) ** 2 * size * 0.6 + 2
    return torch.cat([xy, (xy + wh).clamp(max=size)], 1).round().tolist()


def test_assignment_matches_torchvision_on_range_bounds_area_ties_and_borders():
    boxes = BOUNDS + [TIES, [], random_boxes(40, 1024, 0), random_boxes(40, 1024, 1)]
    targets = as_targets(boxes)
    gt_boxes, gt_labels = pad_targets([t["boxes"] for t in targets], [t["labels"] for t in targets])
    points, strides, sizes = points_of(1024, 1024)
    want = tv_compute_loss(targets, None, len(boxes), 1024, 1024)  # (B, P)
    got = fcos_targets(points, strides, sizes, gt_boxes, gt_labels, CFG.assign)["matched"]
    assert torch.equal(got, want) and (want >= 0).sum() > 400
    # each option matters on this batch: fcoslab's own rules give what torchvision does not
    at = lambda x, y, s: point_index(points, strides, x, y, s)  # noqa: E731
    closed = fcos_targets(points, strides, sizes, gt_boxes, gt_labels,
                          dataclasses.replace(CFG.assign, range_bounds="closed"))["matched"]
    for b, m, (x, y), (s_lo, s_hi) in [(0, 0, (160, 160), (8, 16)), (0, 1, (640, 320), (16, 32)),
                                       (1, 0, (512, 512), (32, 64)), (2, 0, (512, 512), (64, 128))]:
        assert want[b, at(x, y, s_lo)] == want[b, at(x, y, s_hi)] == -1  # a bound belongs to no level
        assert closed[b, at(x, y, s_lo)] == closed[b, at(x, y, s_hi)] == m  # fcoslab's: to both
    exact = fcos_targets(points, strides, sizes, gt_boxes, gt_labels,
                         dataclasses.replace(CFG.assign, area_order="exact"))["matched"]
    assert want[3, at(128, 128, 8)] == 0 and exact[3, at(128, 128, 8)] == 1  # 4099 ties 4096 in float32
    assert want[3, at(128, 640, 8)] == exact[3, at(128, 640, 8)] == 7  # 4096 beats 4112
    assert want[3, at(328, 336, 8)] == exact[3, at(328, 336, 8)] == 2  # equal areas: the first
    assert want[3, at(640, 640, 16)] == exact[3, at(640, 640, 16)] == 5  # nested: the smaller


def test_assignment_rules_by_hand():
    point = (torch.tensor([[4.0, 5.0]]), torch.tensor([8.0]), torch.tensor([[6.0, 10.0]]))
    box, label = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]]), torch.zeros(1, 1, dtype=torch.int64)  # max(l,t,r,b) = 6
    assert ops.fcos_assign(*point, box, label, None).item() == 0  # closed: lo <= 6
    assert ops.fcos_assign(*point, box, label, None, range_bounds="open").item() == -1  # open: lo < 6
    two = torch.tensor([[[0.0, 0.0, 64.0, 64.046875], [0.0, 0.0, 64.0, 64.0]]])  # areas 4099 and 4096
    labels = torch.zeros(1, 2, dtype=torch.int64)
    wide = (point[0], point[1], torch.tensor([[0.0, 1e8]]))
    assert ops.fcos_assign(*wide, two, labels, None).item() == 1
    assert ops.fcos_assign(*wide, two, labels, None, area_order="float32_1e8").item() == 0  # both 99995904 in float32
    assert ops.fcos_assign(*wide, two * 2, labels, None, area_order="float32_1e8").item() == 1  # 16396 vs 16384: not
    with pytest.raises(ValueError, match="area_order"):
        ops.fcos_assign(*wide, two, labels, None, area_order="smallest")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ops.fcos_assign(*wide, two, labels, None, backend="cupy", range_bounds="open")


def test_loss_terms_and_output_gradients_match_torchvision_head_loss():
    g = torch.Generator().manual_seed(0)
    B, H, W, K = 4, 384, 512, 91
    boxes = [random_boxes(12, 384, 2), random_boxes(5, 384, 3) + TIES[:2], [], [[0, 0, 512, 384], [0, 0, 64, 64]]]
    targets = as_targets(boxes, [torch.randint(1, K, (len(b),), generator=g) for b in boxes])
    points, strides, sizes = points_of(H, W)
    P = len(points)
    cls = (torch.randn(B, P, K, generator=g) * 2 - 3).requires_grad_()
    reg = torch.relu(torch.randn(B, P, 4, generator=g) * 3 + 2).requires_grad_()  # relu'd, as the head gives
    ctr = torch.randn(B, P, 1, generator=g).requires_grad_()
    want = tv_compute_loss(targets, {"cls_logits": cls, "bbox_regression": reg, "bbox_ctrness": ctr}, B, H, W,
                           head=FCOSHead(8, 1, K, num_convs=0))
    grads_want = torch.autograd.grad(sum(want.values()), (cls, reg, ctr))
    outputs = {"cls_logits": cls, "bbox_ltrb": reg * strides[None, :, None], "centerness": ctr[..., 0],
               "points": points, "strides": strides, "level_sizes": sizes}  # the model's relu(x) * stride
    gt_boxes, gt_labels = pad_targets([t["boxes"] for t in targets], [t["labels"] for t in targets])
    got, stats = FCOSCriterion(CFG.assign, CFG.loss)(outputs, gt_boxes, gt_labels)
    grads_got = torch.autograd.grad(got["loss"], (cls, reg, ctr))
    assert stats["num_pos"] > 100
    for ours, theirs in TERMS.items():
        torch.testing.assert_close(got[ours], want[theirs].detach(), rtol=1e-5, atol=0)
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_each_process_divides_by_its_own_positives_as_torchvision_under_ddp():
    """torchvision's FCOS divides each process's losses by that process's positives (DistributedDataParallel
    then averages the gradients); fcoslab by default by the mean count over processes."""
    g = torch.Generator().manual_seed(1)
    points, strides, sizes = points_of(128, 128)
    B, P, K = 2, len(points), 3
    outputs = {"cls_logits": torch.randn(B, P, K, generator=g), "bbox_ltrb": torch.rand(B, P, 4, generator=g) * 40,
               "centerness": torch.randn(B, P, generator=g), "points": points, "strides": strides, "level_sizes": sizes}
    boxes, labels = torch.tensor([[[10.0, 10, 60, 70]], [[50, 40, 120, 100]]]), torch.tensor([[1], [2]])
    other_ranks = lambda t: t * 0 + 1000.0  # noqa: E731  (the mean over processes as many positive-rich ranks make it)
    alone = FCOSCriterion(CFG.assign, CFG.loss)(outputs, boxes, labels)
    own = FCOSCriterion(CFG.assign, CFG.loss, all_reduce=other_ranks)(outputs, boxes, labels)
    mean = FCOSCriterion(CFG.assign, dataclasses.replace(CFG.loss, num_pos_per_process=False),
                         all_reduce=other_ranks)(outputs, boxes, labels)
    assert 0 < alone[1]["num_pos"] == own[1]["num_pos"] < 1000 == mean[1]["num_pos"]
    for term in TERMS:
        assert own[0][term] == alone[0][term]
        torch.testing.assert_close(mean[0][term], alone[0][term] * alone[1]["num_pos"] / 1000)


@pytest.fixture(scope="module")
def networks():
    """torchvision's seeded random FCOS in training mode (its BatchNorm on running statistics, as the
    FrozenBatchNorm2d it trains with from pretrained weights) and the same weights imported into fcoslab.
    Backbone and FPN are held fixed in both, so that backward runs through the heads only (their gradients
    do not depend on it)."""
    tv = torchvision_fcos(min_size=128, max_size=192).train()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    model = build_model(CFG.model, 91).train()
    load_torchvision_fcos(model, tv.state_dict(), "torchvision_fcos()")
    for part in (tv.backbone, model.backbone, model.fpn):
        part.requires_grad_(False)
    return tv, model


class GivenBatch(torch.nn.Module):
    """Stands in for torchvision's transform: hands over a batch already normalised and padded."""

    def __init__(self, tensors):
        super().__init__()
        self.tensors = tensors

    def forward(self, images, targets):
        return ImageList(self.tensors, [tuple(self.tensors.shape[-2:])] * len(self.tensors)), targets


def head_gradients(module, prefix=""):
    return {prefix + n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def compare(tv, model, want, got, same_input=True):
    """The loss terms within 1e-5 relative, and every head gradient within 1e-4 in norm and each of its values
    within 5e-4 of its largest (float32 convolutions sum in another order with AVX2 than with AVX-512: up to 1.1e-4
    of the largest on a few of 590k values of a tower's weight gradient, 3e-5 in norm, on a Zen 3); from
    inputs equal only up to float rounding, within 1e-2 in norm (a pre-activation within 1e-6 of 0 then
    switches its ReLU, which changes the gradients of the layers below it by ~1e-3)."""
    for ours, theirs in TERMS.items():
        torch.testing.assert_close(got[ours], want[theirs].detach(), rtol=1e-5, atol=0)
    tv.zero_grad(), model.zero_grad()
    sum(want.values()).backward()
    got["loss"].backward()
    theirs = fcoslab_state(head_gradients(tv.head, "head."), "torchvision's gradients")
    ours = head_gradients(model.head, "head.")
    assert set(ours) == set(theirs) and len(ours) == 38
    for name, grad in theirs.items():
        if same_input:
            torch.testing.assert_close(ours[name], grad, rtol=1e-4, atol=5e-4 * float(grad.abs().max()), msg=name)
            assert (ours[name] - grad).norm() <= 1e-4 * grad.norm(), name
        else:
            assert (ours[name] - grad).norm() <= 1e-2 * grad.norm(), name


# A padded batch of 3 sizes: a box on the 64 bound (levels P3 / P4) and one on the 128 bound (P4 / P5) that
# touches every border of its image; areas that tie in float32, equal areas, nested boxes; an image without boxes.
MODEL_BOXES = [[[96, 120, 208, 200], [20, 20, 84, 84.046875], [20, 20, 84, 84], [110, 10, 174, 74], [100, 20, 164, 84]],
               [[0, 0, 224, 160], [40, 40, 120, 100], [60, 50, 100, 90]], []]


def test_model_training_losses_and_head_gradients_match_torchvision(networks):
    tv, model = networks
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 3, 224, 224)  # normalised pixels, zero padding: what torchvision's transform gives
    for i, (h, w) in enumerate([(224, 192), (160, 224), (128, 160)]):
        x[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
    targets = as_targets(MODEL_BOXES)
    transform, tv.transform = tv.transform, GivenBatch(x)
    try:
        want = tv(list(x), targets)
    finally:
        tv.transform = transform
    mean, std = model.pixel_mean.clone(), model.pixel_std.clone()
    model.pixel_mean.zero_(), model.pixel_std.fill_(1.0)  # the same normalised tensor into fcoslab's network
    try:
        outputs = model(x)
    finally:
        model.pixel_mean.copy_(mean), model.pixel_std.copy_(std)
    got, stats = FCOSCriterion(CFG.assign, CFG.loss)(outputs, *pad_targets([t["boxes"] for t in targets],
                                                                            [t["labels"] for t in targets]))
    assert stats["num_pos"] >= 25
    compare(tv, model, want, got)


def raw_batch(seed=0):
    """Three uint8 images of other sizes than the training size, with boxes: the whole image (every border;
    145 x 231 becomes 120 x 192 and its bottom edge 145 * float32(120 / 145) = 120.00001), a box under 1 px
    after the resize, and random ones."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (h, w) in enumerate([(240, 320), (300, 200), (145, 231)]):
        coarse = torch.randint(0, 256, (3, h // 16 + 1, w // 16 + 1), generator=g, dtype=torch.uint8)
        image = F.resize(coarse, [h, w], antialias=False)  # smooth, so that the resizes differ by rounding only
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w, h]) * 0.6
        wh = torch.rand(4, 2, generator=g) * torch.tensor([w, h]) * 0.35 + 8
        boxes = torch.cat([torch.tensor([[0.0, 0, w, h], [3, 3, 4.2, 4.4]]), torch.cat([xy, xy + wh], 1)])
        out.append((image, boxes, torch.randint(1, 91, (6,), generator=g), i))
    return out


def fcoslab_batch(raw, cfg=CFG):
    """fcoslab's training transforms and collate of :func:`raw_batch` (as its dataset hands samples over)."""
    transforms = build_transforms(cfg.data, train=True)
    samples = []
    for image, boxes, labels, i in raw:
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])),
                  "labels": labels, "orig_size": torch.tensor(image.shape[-2:]), "image_id": torch.tensor(i)}
        samples.append(transforms(tv_tensors.Image(image), target))
    return collate(samples, cfg.model.size_divisibility, cfg.data.pad_with_mean)


def test_training_transform_and_collate_match_torchvision_transform():
    raw = raw_batch()
    transform = GeneralizedRCNNTransform(128, 192, list(IMAGENET_MEAN), list(IMAGENET_STD)).train()
    images = [F.to_dtype(image, torch.float32, scale=True) for image, *_ in raw]
    want, targets = transform(images, [{"boxes": b.clone(), "labels": l} for _, b, l, _ in raw])
    batch = fcoslab_batch(raw)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close((batch["images"] - mean) / std, want.tensors, rtol=0, atol=1e-5)
    assert batch["image_sizes"].tolist() == [list(s) for s in want.image_sizes] == [[128, 170], [192, 128], [120, 192]]
    assert targets[2]["boxes"][0, 3] > 120  # past the image: fcoslab's sanitising dropped it before the clamp
    for i, t in enumerate(targets):
        assert torch.equal(batch["gt_labels"][i], t["labels"])  # every box kept, the tiny and the border ones
        torch.testing.assert_close(batch["gt_boxes"][i], t["boxes"], rtol=0, atol=1e-4)
    default = fcoslab_batch(raw, dataclasses.replace(CFG, data=dataclasses.replace(CFG.data, keep_small_boxes=False)))
    assert ((default["gt_labels"] >= 0).sum(1) == 5).all()  # fcoslab's own rule drops the box under 1 px


def test_end_to_end_training_losses_match_torchvision(networks):
    """Raw images and boxes through each library's whole training path: torchvision's forward with its
    transform, and fcoslab's transforms, collate, model and criterion."""
    tv, model = networks
    raw = raw_batch(1)
    raw[2] = (raw[2][0], raw[2][1][:0], raw[2][2][:0], 2)  # an image without objects
    images = [F.to_dtype(image, torch.float32, scale=True) for image, *_ in raw]
    want = tv(images, [{"boxes": b.clone(), "labels": l} for _, b, l, _ in raw])
    batch = fcoslab_batch(raw)
    got, stats = FCOSCriterion(CFG.assign, CFG.loss)(model(batch["images"]), batch["gt_boxes"], batch["gt_labels"])
    assert stats["num_pos"] >= 20
    compare(tv, model, want, got, same_input=False)  # torchvision normalises, then resizes: 7e-7 apart


def test_fcoslab_defaults_are_unchanged():
    options = lambda c: (c.assign.range_bounds, c.assign.area_order, c.data.keep_small_boxes,  # noqa: E731
                         c.loss.num_pos_per_process)
    for name in ("shapes", "imprv_coco_1x", "seed_voc"):
        assert options(load_config(name)) == ("closed", "exact", False, False)
    assert options(load_config("tv_fcos_r50")) == ("open", "float32_1e8", True, True)


@pytest.mark.gpu
def test_rules_without_a_kernel_run_the_reference_on_cuda():
    points, strides, sizes = points_of(1024, 1024)
    targets = as_targets([TIES] + BOUNDS[:1])
    boxes, labels = pad_targets([t["boxes"] for t in targets], [t["labels"] for t in targets])
    ranges = torch.tensor(CFG.assign.regress_ranges).repeat_interleave(torch.tensor([h * w for h, w in sizes]), 0)
    args = [t.cuda() for t in (points, strides, ranges, boxes, labels)]
    rules = {"range_bounds": "open", "area_order": "float32_1e8"}
    want = ops.fcos_assign(*args, 1.5, backend="torch", **rules)
    assert torch.equal(ops.fcos_assign(*args, 1.5, **rules), want)
    with pytest.raises(ValueError, match="CuPy kernel implements"):
        ops.fcos_assign(*args, 1.5, backend="cupy", **rules)
