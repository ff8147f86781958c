"""fcoslab.ops (torch backend) against torchvision.ops and hand tables."""

import pytest
import torch
import torchvision

from fcoslab import ops
from fcoslab.boxes import box_iou, generalized_box_iou, ltrb_iou


def random_boxes(n, seed, size=200.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(seed, thresh):
    boxes, scores = random_boxes(300, seed)
    assert torch.equal(ops.nms(boxes, scores, thresh, backend="torch"), torchvision.ops.nms(boxes, scores, thresh))


@pytest.mark.parametrize("seed", range(6))
def test_batched_nms_matches_torchvision(seed):
    boxes, scores = random_boxes(400, seed)
    idxs = torch.randint(0, 7, (400,), generator=torch.Generator().manual_seed(seed))
    got = ops.batched_nms(boxes, scores, idxs, 0.5, backend="torch")
    assert torch.equal(got, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("block", [1, 7 * 400, 1 << 22])
def test_suppression_matrix_is_the_same_in_any_block_size(block):
    from fcoslab.boxes import box_iou
    from fcoslab.ops.reference import _suppression_matrix

    boxes, _ = random_boxes(400, 3)
    group = torch.randint(0, 5, (400,), generator=torch.Generator().manual_seed(3))
    whole = ((box_iou(boxes, boxes) > 0.4) & (group[:, None] == group[None, :])).triu(diagonal=1)
    assert torch.equal(_suppression_matrix(boxes, group, 0.4, max_block_elements=block), whole)


def test_nms_hand_table():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.0], [5, 0, 15, 10], [10, 0, 20, 10], [100, 100, 110, 110]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    # box 1 duplicates 0 (IoU 1): always gone. Box 2 has IoU 1/3 with 0 and with 3; 3 touches 0 (IoU 0).
    assert ops.nms(boxes, scores, 0.5).tolist() == [0, 2, 3, 4]
    assert ops.nms(boxes, scores, 1 / 3 - 1e-4).tolist() == [0, 3, 4]  # 2 removed; 3 touches 0 (IoU 0), 3-2 IoU 1/3
    assert ops.nms(boxes, scores, 1 / 3 + 1e-4).tolist() == [0, 2, 3, 4]
    # a chain: 0 suppresses 2 only; 3 survives because its suppressor 2 is gone
    assert ops.nms(boxes[[0, 2, 3]], scores[[0, 2, 3]], 0.3).tolist() == [0, 2]


def test_nms_ties_and_empty():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.0]])
    assert ops.nms(boxes, torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]  # equal scores: lower index first
    empty = ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0
    one = ops.batched_nms(boxes[:1], torch.tensor([0.1]), torch.tensor([3]), 0.5)
    assert one.tolist() == [0]


def test_batched_nms_groups_never_suppress_each_other():
    boxes = torch.tensor([[0, 0, 10, 10.0]] * 3)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (-1.0, 1.5)])
def test_focal_loss_matches_torchvision(reduction, alpha, gamma):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(500, 7, generator=g) * 3).double().requires_grad_()
    labels = torch.randint(-1, 7, (500,), generator=g)
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 7).double() * (labels >= 0)[:, None]
    ours = ops.sigmoid_focal_loss(logits, labels, alpha, gamma, reduction, backend="torch")
    ref_logits = logits.detach().clone().requires_grad_()
    ref = torchvision.ops.sigmoid_focal_loss(ref_logits, onehot, alpha, gamma, reduction)
    torch.testing.assert_close(ours, ref)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_focal_loss_hand_values():
    # logit 0 -> p = 0.5; positive: alpha * 0.5^gamma * log 2; negative: (1 - alpha) * 0.5^gamma * log 2
    loss = ops.sigmoid_focal_loss(torch.zeros(1, 2), torch.tensor([1]), 0.25, 2.0, "none")
    l2 = torch.log(torch.tensor(2.0))
    torch.testing.assert_close(loss, torch.stack([0.75 * 0.25 * l2, 0.25 * 0.25 * l2])[None])


def test_box_iou_and_giou_match_torchvision():
    a, _ = random_boxes(40, 1)
    b, _ = random_boxes(30, 2)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))
    torch.testing.assert_close(generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b))


def test_giou_hand_table():
    # same box: 1; touching side by side: 0; disjoint with a gap as wide as a box: -1/3; inside half: 0.5
    a = torch.tensor([[0, 0, 2, 2.0]])
    b = torch.tensor([[0, 0, 2, 2], [2, 0, 4, 2], [4, 0, 6, 2], [0, 0, 1, 2.0]])
    torch.testing.assert_close(generalized_box_iou(a, b)[0], torch.tensor([1.0, 0.0, -1 / 3, 0.5]))


def test_ltrb_iou_equals_box_iou():
    g = torch.Generator().manual_seed(3)
    point = torch.rand(50, 2, generator=g) * 50 + 25
    p, t = torch.rand(50, 4, generator=g) * 20 + 1, torch.rand(50, 4, generator=g) * 20 + 1
    to_box = lambda d: torch.cat([point - d[:, :2], point + d[:, 2:]], 1)  # noqa: E731
    iou, giou = ltrb_iou(p, t)
    torch.testing.assert_close(iou, box_iou(to_box(p), to_box(t)).diagonal())
    torch.testing.assert_close(giou, generalized_box_iou(to_box(p), to_box(t)).diagonal())


def test_backend_dispatch_errors_and_report():
    boxes, scores = random_boxes(5, 0)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ops.nms(boxes, scores, 0.5, backend="cupy")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.nms(boxes, scores, 0.5, backend="cuda")
    report = ops.backends()
    assert report["torch"] == "available" and isinstance(report["cupy"], str)


def test_backend_env_turns_kernels_off(monkeypatch):
    monkeypatch.setenv("FCOSLAB_BACKEND", "torch")
    assert ops.backends()["cupy"].startswith("turned off by FCOSLAB_BACKEND=torch")


# ---------------------------------------------------- torchvision backend (CPU auto) against the reference
def detections(n, seed, groups=80, size=1333.0, levels=0):
    """``n`` boxes of an FCOS-like output: float32 (n, 4) up to ``size`` px, scores (n,), groups (n,).

    ``levels`` > 0 quantises scores to that many values (many ties); groups are spread out int64 ids.
    """
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 4 + 2
    scores = torch.rand(n, generator=g)
    if levels:
        scores = torch.randint(0, levels, (n,), generator=g).float() / levels
    idxs = torch.randint(0, groups, (n,), generator=g) * 7 + 3  # ids need not be 0..G-1
    return torch.cat([xy, xy + wh], 1), scores, idxs


def test_auto_runs_torchvision_on_cpu_and_torch_runs_the_reference():
    boxes, scores = random_boxes(5, 0)
    assert ops._choose("auto", (boxes, scores), "nms", ops.BACKENDS) == "torchvision"
    assert ops._choose("torch", (boxes, scores), "nms", ops.BACKENDS) == "torch"
    assert ops._choose("auto", (boxes, scores), "fcos_assign") == "torch"  # no torchvision counterpart
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([0, -1]), backend="torchvision")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_auto_nms_equals_reference(seed, thresh):
    boxes, scores, _ = detections(3000, seed, size=300.0)
    got = ops.nms(boxes, scores, thresh)
    assert torch.equal(got, ops.nms(boxes, scores, thresh, backend="torch"))
    assert torch.equal(ops.nms(boxes, scores, thresh, backend="torchvision"), got)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("thresh", [0.3, 0.6, 0.8])
@pytest.mark.parametrize("groups", [1, 80, 1280])
def test_auto_batched_nms_equals_reference(seed, thresh, groups):
    boxes, scores, idxs = detections(4000, seed, groups=groups)
    got = ops.batched_nms(boxes, scores, idxs, thresh)
    assert torch.equal(got, ops.batched_nms(boxes, scores, idxs, thresh, backend="torch"))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("levels", [2, 5])
def test_auto_nms_equals_reference_with_tied_scores(seed, levels):
    boxes, scores, idxs = detections(3000, seed, groups=20, size=400.0, levels=levels)
    assert torch.equal(ops.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5, backend="torch"))
    got = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got, ops.batched_nms(boxes, scores, idxs, 0.5, backend="torch"))
    ranked = scores[got]
    assert bool((ranked[:-1] >= ranked[1:]).all())  # decreasing scores ...
    tied = ranked[:-1] == ranked[1:]
    assert bool((got[:-1][tied] < got[1:][tied]).all())  # ... ties: lower index first


def test_tied_identical_boxes_keep_the_lowest_index():
    boxes = torch.tensor([[0, 0, 10, 10.0]] * 50)
    scores = torch.full((50,), 0.5)
    scores[[7, 30]] = 0.2
    assert ops.nms(boxes, scores, 0.5).tolist() == [0]
    assert ops.batched_nms(boxes, scores, torch.arange(50) % 3, 0.5).tolist() == [0, 1, 2]


def test_batched_nms_stays_exact_with_many_groups_and_large_offsets():
    # 1280 groups of 1333-px images: a float32 offset of group 1279 is ~1.7e6 px, where float32 steps by
    # 0.125 px. Box 2 is box 1 shifted by 0.06 px (IoU 0.988); in float32 the shift rounds away, the IoU
    # becomes 1 and the float32 offset trick (torchvision.ops.batched_nms on small inputs) drops box 2.
    boxes = torch.tensor([[0, 0, 10, 10], [0.06, 0, 10.06, 10]] + [[0, 0, 1333, 1333.0]] * 1280)
    scores = torch.cat([torch.tensor([0.9, 0.8]), torch.full((1280,), 0.1)])
    idxs = torch.cat([torch.tensor([1279, 1279]), torch.arange(1280)])
    expected = [0, 1] + list(range(2, 1282))
    assert ops.batched_nms(boxes, scores, idxs, 0.99, backend="torch").tolist() == expected
    assert ops.batched_nms(boxes, scores, idxs, 0.99).tolist() == expected


@pytest.mark.parametrize("thresh", [0.5, 0.7])
def test_batched_nms_near_threshold_pairs_in_1280_groups(thresh):
    # each group: a pair of small boxes whose IoU is within 2% of the threshold, and a full-image box
    g = torch.Generator().manual_seed(int(thresh * 10))
    side = torch.rand(1280, generator=g) * 30 + 8
    iou = thresh * (1 + (torch.rand(1280, generator=g) - 0.5) * 0.04)
    shift = side * (1 - iou) / (1 + iou)  # IoU of a box and itself shifted by d along x: (s - d) / (s + d)
    xy = torch.rand(1280, 2, generator=g) * 1280
    a = torch.cat([xy, xy + side[:, None]], 1)
    b = a + torch.stack([shift, torch.zeros(1280)] * 2, 1)
    boxes = torch.cat([a, b, torch.tensor([[0, 0, 1333, 1333.0]]).expand(1280, 4)])
    scores = torch.rand(3 * 1280, generator=g)
    idxs = torch.arange(1280).repeat(3)
    expected = ops.batched_nms(boxes, scores, idxs, thresh, backend="torch")
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, thresh), expected)
    # the float32 coordinate-offset trick decides some of these pairs differently
    float32_offsets = boxes + (idxs * (boxes.max() + 1))[:, None]
    assert not torch.equal(torchvision.ops.nms(float32_offsets, scores, thresh), expected)


def test_iou_equal_to_the_threshold_is_decided_as_the_reference_does():
    # IoU 50 / 150 = 1/3 exactly. The reference compares float32 IoU with the threshold rounded to float32
    # (equal: not above, box 1 kept); torchvision compares in double (0.33333334 > 1/3: suppressed).
    boxes = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms(boxes, scores, 1 / 3, backend="torch").tolist() == [0, 1]
    assert ops.nms(boxes, scores, 1 / 3).tolist() == [0, 1]
    assert ops.batched_nms(boxes, scores, torch.tensor([2, 2]), 1 / 3).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_auto_nms_other_dtypes(dtype):
    boxes, scores, idxs = detections(1000, 4, groups=10, size=300.0)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    assert torch.equal(ops.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5, backend="torch"))
    got = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(got, ops.batched_nms(boxes, scores, idxs, 0.5, backend="torch"))


def test_batched_nms_negative_threshold_and_infinite_boxes_follow_the_reference():
    boxes, scores, idxs = detections(300, 5, groups=4, size=100.0)
    for thresh in (-0.5, 0.5):
        assert torch.equal(ops.batched_nms(boxes, scores, idxs, thresh),
                           ops.batched_nms(boxes, scores, idxs, thresh, backend="torch"))
    boxes[3, 2] = float("inf")
    assert torch.equal(ops.batched_nms(boxes, scores, idxs, 0.5),
                       ops.batched_nms(boxes, scores, idxs, 0.5, backend="torch"))


@pytest.mark.parametrize("backend", ["auto", "torchvision", "torch"])
def test_empty_inputs_give_empty_int64(backend):
    boxes, scores, idxs = torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    for keep in (ops.nms(boxes, scores, 0.5, backend=backend),
                 ops.batched_nms(boxes, scores, idxs, 0.5, backend=backend)):
        assert keep.dtype == torch.int64 and keep.shape == (0,)


def test_backends_report_torchvision(monkeypatch):
    assert ops.backends()["torchvision"] == "available"
    monkeypatch.setenv("FCOSLAB_BACKEND", "torch")  # turns the CuPy kernels off, not torchvision's NMS
    assert ops.backends()["torchvision"] == "available"
    boxes, scores = random_boxes(5, 0)
    assert ops._choose("auto", (boxes, scores), "nms", ops.BACKENDS) == "torchvision"
