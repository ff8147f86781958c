"""fcos_assign against a plain loop over points and boxes, plus a hand case for every rule and tie."""

import pytest
import torch

from fcoslab import ops
from fcoslab.modeling.points import make_points
from fcoslab.modeling.targets import centerness_target, fcos_targets, point_regress_ranges
from fcoslab.config import AssignConfig


def loop_assign(points, strides, ranges, gt_boxes, gt_labels, radius):
    B, M = gt_labels.shape
    out = torch.full((B, len(points)), -1, dtype=torch.int64)
    for b in range(B):
        for p, ((px, py), s, (lo, hi)) in enumerate(zip(points.tolist(), strides.tolist(), ranges.tolist())):
            best, best_area = -1, float("inf")
            for m in range(M):
                x1, y1, x2, y2 = gt_boxes[b, m].tolist()
                if gt_labels[b, m] < 0 or x2 <= x1 or y2 <= y1:
                    continue
                d = (px - x1, py - y1, x2 - px, y2 - py)
                if min(d) <= 0 or not (lo <= max(d) <= hi):
                    continue
                if radius is not None and not (abs(px - (x1 + x2) / 2) < radius * s and abs(py - (y1 + y2) / 2) < radius * s):
                    continue
                area = (x2 - x1) * (y2 - y1)
                if area < best_area:
                    best, best_area = m, area
            out[b, p] = best
    return out


def level_inputs(size=64):
    sizes = [(size // s, size // s) for s in (8, 16, 32, 64, 128)]
    sizes = [(max(h, 1), max(w, 1)) for h, w in sizes]
    points, strides = make_points(sizes, (8, 16, 32, 64, 128), 0.5)
    ranges = point_regress_ranges(sizes, ((-1, 16), (16, 32), (32, 64), (64, 128), (128, 1e8)), "cpu")
    return points, strides, ranges


@pytest.mark.parametrize("radius", [None, 1.5, 0.8])
@pytest.mark.parametrize("seed", range(4))
def test_assign_matches_loop(seed, radius):
    g = torch.Generator().manual_seed(seed)
    points, strides, ranges = level_inputs(64)
    B, M = 2, 9
    xy = torch.rand(B, M, 2, generator=g) * 56
    wh = torch.rand(B, M, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + wh], -1).round()  # integer corners: many exact ties and boundary points
    boxes[0, 3] = boxes[0, 2]  # duplicate: equal areas
    boxes[1, 4, 2] = boxes[1, 4, 0]  # zero width
    labels = torch.randint(0, 3, (B, M), generator=g)
    labels[1, -2:] = -1  # padding
    got = ops.fcos_assign(points, strides, ranges, boxes, labels, radius, backend="torch")
    assert torch.equal(got, loop_assign(points, strides, ranges, boxes, labels, radius))
    assert (got >= 0).any()


def one_point(px, py, stride=8.0, lo=-1.0, hi=1e8):
    return torch.tensor([[px, py]]), torch.tensor([stride]), torch.tensor([[lo, hi]])


def assign_one(point, boxes, labels=None, radius=None):
    boxes = torch.tensor(boxes, dtype=torch.float32)[None]
    labels = torch.zeros(boxes.shape[:2], dtype=torch.int64) if labels is None else torch.tensor([labels])
    return ops.fcos_assign(*point, boxes, labels, radius)[0, 0].item()


def test_inside_rule_is_strict():
    assert assign_one(one_point(5, 5), [[0, 0, 10, 10]]) == 0
    assert assign_one(one_point(10, 5), [[0, 0, 10, 10]]) == -1  # on the right edge: r = 0
    assert assign_one(one_point(0, 5), [[0, 0, 10, 10]]) == -1  # on the left edge: l = 0


def test_regress_range_bounds_are_inclusive():
    # max(l, t, r, b) = 6 for the point (4, 5) in [0, 0, 10, 10]
    assert assign_one(one_point(4, 5, lo=6, hi=10), [[0, 0, 10, 10]]) == 0
    assert assign_one(one_point(4, 5, lo=0, hi=6), [[0, 0, 10, 10]]) == 0
    assert assign_one(one_point(4, 5, lo=6 + 1e-3, hi=10), [[0, 0, 10, 10]]) == -1
    assert assign_one(one_point(4, 5, lo=0, hi=6 - 1e-3), [[0, 0, 10, 10]]) == -1


def test_center_sampling_radius_is_strict():
    box = [[0, 0, 100, 100]]  # centre (50, 50); radius 1.5 * stride 8 = 12
    assert assign_one(one_point(61.9, 50), box, radius=1.5) == 0
    assert assign_one(one_point(62.0, 50), box, radius=1.5) == -1
    assert assign_one(one_point(50, 38.1), box, radius=1.5) == 0
    assert assign_one(one_point(62.0, 50), box, radius=None) == 0


def test_smallest_area_wins_and_ties_go_to_lowest_index():
    big, small = [0, 0, 40, 40], [2, 2, 12, 12]
    assert assign_one(one_point(5, 5), [big, small]) == 1
    assert assign_one(one_point(5, 5), [small, big]) == 0
    other_same_area = [1, 1, 11, 11]
    assert assign_one(one_point(5, 5), [big, other_same_area, small]) == 1
    assert assign_one(one_point(5, 5), [big, small, other_same_area]) == 1


def test_padding_and_degenerate_boxes_never_match():
    assert assign_one(one_point(5, 5), [[0, 0, 10, 10]], labels=[-1]) == -1
    assert assign_one(one_point(5, 5), [[0, 0, 0, 10]]) == -1
    assert assign_one(one_point(5, 5), [[10, 0, 0, 10]]) == -1


def test_no_ground_truth():
    points, strides, ranges = level_inputs(32)
    out = ops.fcos_assign(points, strides, ranges, torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.int64), 1.5)
    assert out.shape == (3, len(points)) and (out == -1).all()


def test_targets_ltrb_and_centerness():
    points, strides, _ = level_inputs(64)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    boxes = torch.tensor([[[4.0, 4.0, 28.0, 20.0]]])
    t = fcos_targets(points, strides, sizes, boxes, torch.tensor([[2]]),
                     AssignConfig(regress_ranges=((-1, 16), (16, 32), (32, 64), (64, 128), (128, 1e8)), center_radius=None))
    pos = t["labels"][0] >= 0
    assert pos.any() and (t["labels"][0][pos] == 2).all()
    p = points[pos]
    expect = torch.stack([p[:, 0] - 4, p[:, 1] - 4, 28 - p[:, 0], 20 - p[:, 1]], 1)
    torch.testing.assert_close(t["ltrb"][0][pos], expect)
    assert (t["ltrb"][0][~pos] == 0).all() and (t["centerness"][0][~pos] == 0).all()
    torch.testing.assert_close(centerness_target(torch.tensor([[2.0, 3.0, 2.0, 3.0]])), torch.tensor([1.0]))
    torch.testing.assert_close(centerness_target(torch.tensor([[1.0, 1.0, 3.0, 1.0]])), torch.tensor([(1 / 3) ** 0.5]))
