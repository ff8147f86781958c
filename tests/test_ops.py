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
    from fcoslab.ops_reference import _suppression_matrix

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
