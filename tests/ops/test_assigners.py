"""ATSS and TAL assignment (fcoslab.ops.atss_assign, tal_assign): hand cases with known answers, a plain loop
over boxes and points as the reference, properties (positives per box, padding, empty images, mixed sizes,
alone = in a batch), the targets' format, a training step per method, and the kernels against the reference
(marked gpu)."""

import math

import pytest
import torch

from fcoslab import ops
from fcoslab.config import AssignConfig, load_config
from fcoslab.errors import FcoslabError
from fcoslab.modeling.points import level_sizes, make_points
from fcoslab.modeling.targets import assign_targets, fcos_targets
from fcoslab.ops import reference

STRIDES = (8, 16, 32, 64, 128)


def grid(height, width, strides=STRIDES):
    sizes = level_sizes(height, width, strides)
    points, point_strides = make_points(sizes, strides, 0.5)
    return points, point_strides, sizes


def anchor_iou(px, py, side, box):
    x1, y1, x2, y2 = box
    iw = max(0.0, min(px + side / 2, x2) - max(px - side / 2, x1))
    ih = max(0.0, min(py + side / 2, y2) - max(py - side / 2, y1))
    return iw * ih / (side * side + (x2 - x1) * (y2 - y1) - iw * ih)


def box_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def inside(px, py, box):
    return min(px - box[0], py - box[1], box[2] - px, box[3] - py) > 0


def valid_box(box, label):
    return label >= 0 and box[2] > box[0] and box[3] > box[1]


def resolve(claims, P):
    """{point: [(iou, box), ...]} -> matched list: highest IoU, then lowest box index."""
    out = [-1] * P
    for p, c in claims.items():
        out[p] = min(c, key=lambda t: (-t[0], t[1]))[1]
    return out


def loop_atss(points, strides, sizes, boxes, labels, topk, scale, hw=None):
    """ATSS for one image, one box and one point at a time; also the candidates of each box."""
    pts, st = points.tolist(), strides.tolist()
    claims, candidates = {}, {}
    for m, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        if not valid_box(box, label):
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cands, start = [], 0
        for h, w in sizes:
            level = [p for p in range(start, start + h * w)
                     if hw is None or (pts[p][0] < hw[1] and pts[p][1] < hw[0])]
            level.sort(key=lambda p: ((pts[p][0] - cx) ** 2 + (pts[p][1] - cy) ** 2, p))
            cands += level[:topk]
            start += h * w
        candidates[m] = cands
        ious = [anchor_iou(*pts[p], scale * st[p], box) for p in cands]
        inner = [u for p, u in zip(cands, ious) if inside(*pts[p], box)]
        if not inner:
            continue
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((u - mean) ** 2 for u in ious) / (len(ious) - 1)) if len(ious) > 1 else 0.0
        threshold = min(mean + std, max(inner))
        for p, u in zip(cands, ious):
            if inside(*pts[p], box) and u >= threshold:
                claims.setdefault(p, []).append((u, m))
    return resolve(claims, len(pts)), candidates


def loop_tal(points, pred, scores, boxes, labels, topk, alpha, beta):
    """TAL for one image, one box and one point at a time."""
    pts, pred, scores = points.tolist(), pred.tolist(), scores.tolist()
    claims = {}
    for m, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        if not valid_box(box, label):
            continue
        cands = [p for p in range(len(pts)) if inside(*pts[p], box)]
        align = {p: scores[p][label] ** alpha * box_iou(pred[p], box) ** beta for p in cands}
        for p in sorted(cands, key=lambda p: (-align[p], p))[:topk]:
            claims.setdefault(p, []).append((box_iou(pred[p], box), m))
    return resolve(claims, len(pts))


def random_boxes(gen, B, M, size, low=4.0, high=48.0):
    xy = torch.rand(B, M, 2, generator=gen) * (size - low)
    wh = low + torch.rand(B, M, 2, generator=gen) * (high - low)
    return torch.cat([xy, torch.minimum(xy + wh, torch.tensor(float(size)))], -1)


def random_predictions(gen, points, B, K, spread=24.0):
    ltrb = torch.rand(B, len(points), 4, generator=gen) * spread
    pred = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
    return pred, torch.rand(B, len(points), K, generator=gen)


# ---------------------------------------------------------------------------------------------- ATSS by hand
# One level of four points in a row, stride 8, anchor side 8 (scale 1): p0 (4, 4), p1 (12, 4), p2 (20, 4), p3 (28, 4).
ROW = dict(points=torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0]]), strides=torch.full((4,), 8.0),
           level_sizes=[(1, 4)])


def atss_row(boxes, labels=None, topk=4, scale=1.0):
    boxes = torch.tensor(boxes, dtype=torch.float32)[None]
    labels = torch.zeros(boxes.shape[:2], dtype=torch.int64) if labels is None else torch.tensor([labels])
    return ops.atss_assign(ROW["points"], ROW["strides"], ROW["level_sizes"], boxes, labels, topk, scale)[0].tolist()


def test_atss_threshold_by_hand():
    # box [0, 0, 14, 8], centre (7, 4): anchor IoUs p0 4/7, p1 48/128 = 3/8, p2 0, p3 0 (p0..p3 by distance)
    ious = [4 / 7, 3 / 8, 0.0, 0.0]
    mean = sum(ious) / 4
    threshold = mean + math.sqrt(sum((u - mean) ** 2 for u in ious) / 3)
    # mean 53/224, deviations (75, 31, -53, -53)/224: std = sqrt(12204 / 3) / 224
    assert threshold == pytest.approx((53 + math.sqrt(4068)) / 224) and 3 / 8 < threshold < 4 / 7  # 0.52134
    assert atss_row([[0, 0, 14, 8]]) == [0, -1, -1, -1]  # p1 is inside but below the threshold
    # with the two nearest only: mean + std = 0.6121 > every IoU; the cap at the best inside IoU keeps p0
    assert atss_row([[0, 0, 14, 8]], topk=2) == [0, -1, -1, -1]
    # a wider box: p0 and p1 both 0.5 (IoUs 0.5, 0.5, 0, 0: threshold 0.25 + 0.2887 = 0.5387 > 0.5: capped)
    assert atss_row([[0, 0, 16, 8]]) == [0, 0, -1, -1]


def test_atss_threshold_uses_the_unbiased_std():
    # 4 x 4 points, stride 8, anchor side 8; box [0, 0, 13, 8]: the 9 nearest have IoUs 8/13 (p0), 40/128 (p1), 0 x 7
    ious = [8 / 13, 40 / 128] + [0.0] * 7
    mean = sum(ious) / 9
    unbiased = mean + math.sqrt(sum((u - mean) ** 2 for u in ious) / 8)
    population = mean + math.sqrt(sum((u - mean) ** 2 for u in ious) / 9)
    assert population < 40 / 128 < unbiased  # 0.3088 < 0.3125 < 0.3212
    points, strides, sizes = grid(32, 32, (8,))
    matched = ops.atss_assign(points, strides, sizes, torch.tensor([[[0.0, 0.0, 13.0, 8.0]]]), torch.tensor([[0]]), 9, 1.0)
    assert torch.nonzero(matched[0] >= 0).flatten().tolist() == [0]  # p1 (12, 4) is inside but below


def test_atss_ties_and_conflicts():
    # centre (8, 4): p0 and p1 at the same distance; one candidate per level goes to the lower index
    assert atss_row([[0, 0, 16, 8]], topk=1) == [0, -1, -1, -1]
    # two candidates each: box 0 takes p0 and p1 (IoUs 0.5, 0.5), box 1 p1 (IoU 1) and p0 (0, not inside);
    # p1, claimed by both, goes to the higher anchor IoU
    assert atss_row([[0, 0, 16, 8], [8, 0, 16, 8]], topk=2) == [0, 1, -1, -1]
    # equal IoUs: the lower box index
    assert atss_row([[8, 0, 16, 8], [8, 0, 16, 8]], topk=1) == [-1, 0, -1, -1]


def test_atss_ignores_padding_degenerate_boxes_and_points_outside():
    assert atss_row([[0, 0, 16, 8]], labels=[-1]) == [-1] * 4
    assert atss_row([[4, 0, 4, 8], [10, 0, 2, 8]]) == [-1] * 4  # zero and negative width
    assert atss_row([[0, 0, 3, 3]]) == [-1] * 4  # no point inside: no positive, even the nearest
    assert atss_row([[0, 0, 4, 8]]) == [-1] * 4  # p0 on the right edge (r = 0) is not inside


def test_atss_candidates_come_from_every_level():
    points, strides, sizes = grid(128, 128)
    boxes = torch.tensor([[[10.0, 10.0, 120.0, 120.0]]])
    matched = ops.atss_assign(points, strides, sizes, boxes, torch.tensor([[0]]), 9, 8.0)[0]
    expect, cands = loop_atss(points, strides, sizes, boxes[0], torch.tensor([0]), 9, 8.0)
    assert matched.tolist() == expect
    per_level = torch.tensor([h * w for h, w in sizes]).cumsum(0)
    assert len(cands[0]) == sum(min(9, h * w) for h, w in sizes)
    assert torch.bucketize(torch.tensor(cands[0]), per_level, right=True).unique().tolist() == [0, 1, 2, 3, 4]
    level_of_positive = torch.bucketize(torch.nonzero(matched >= 0)[:, 0], per_level, right=True)
    assert level_of_positive.unique().tolist() == [1]  # a 110 px box: P4's 128 px anchors fit it best (IoU 0.74)


# ----------------------------------------------------------------------------------------------- TAL by hand
def tal_case(pred_ltrb, scores, boxes, labels=None, topk=1, alpha=1.0, beta=6.0):
    points, _, _ = grid(32, 32, (8,))  # 4 x 4 points at 4, 12, 20, 28
    pred = torch.cat([points - pred_ltrb[:, :2], points + pred_ltrb[:, 2:]], -1)[None]
    boxes = torch.tensor(boxes, dtype=torch.float32)[None]
    labels = torch.zeros(boxes.shape[:2], dtype=torch.int64) if labels is None else torch.tensor([labels])
    return ops.tal_assign(points, pred, scores[None], boxes, labels, topk, alpha, beta)[0]


def test_tal_perfect_prediction_wins():
    ltrb = torch.full((16, 4), 2.0)  # small boxes everywhere
    ltrb[5] = torch.tensor([12.0, 12.0, 20.0, 20.0])  # point 5 at (12, 12) predicts the box [0, 0, 32, 32] exactly
    scores = torch.full((16, 1), 0.5)
    matched = tal_case(ltrb, scores, [[0, 0, 32, 32]])
    assert torch.nonzero(matched >= 0).flatten().tolist() == [5]
    assert (tal_case(ltrb, scores, [[0, 0, 32, 32]], topk=3) >= 0).sum() == 3
    # the perfect prediction outside the box is no candidate
    assert tal_case(ltrb, scores, [[16, 16, 32, 32]])[5] == -1


def test_tal_scores_alpha_beta_and_ties():
    ltrb = torch.full((16, 4), 2.0)  # equal boxes: equal IoUs
    scores = torch.full((16, 1), 0.5)
    scores[10] = 0.9
    assert torch.nonzero(tal_case(ltrb, scores, [[0, 0, 32, 32]]) >= 0).flatten().tolist() == [10]
    assert torch.nonzero(tal_case(ltrb, scores, [[0, 0, 32, 32]], alpha=0.0) >= 0).flatten().tolist() == [0]
    # every alignment equal: the lowest point indices
    assert torch.nonzero(tal_case(ltrb, torch.full((16, 1), 0.5), [[0, 0, 32, 32]], topk=3) >= 0).flatten().tolist() == [0, 1, 2]
    # the box's class decides the score: class 1 is high at point 3
    scores2 = torch.full((16, 2), 0.5)
    scores2[3, 1] = 0.99
    assert torch.nonzero(tal_case(ltrb, scores2, [[0, 0, 32, 32]], labels=[1]) >= 0).flatten().tolist() == [3]


def test_tal_conflict_goes_to_the_higher_iou():
    ltrb = torch.full((16, 4), 2.0)
    ltrb[5] = torch.tensor([4.0, 4.0, 4.0, 4.0])  # point 5 (12, 12) predicts [8, 8, 16, 16]
    scores = torch.full((16, 1), 0.5)
    matched = tal_case(ltrb, scores, [[0, 0, 32, 32], [8, 8, 17, 17]], topk=16)
    assert matched[5] == 1  # inside both, IoU 64/81 with box 1, 1/16 with box 0
    assert (matched == 0).sum() == 15  # box 0 holds all 16 points, box 1 only point 5
    equal = tal_case(ltrb, scores, [[8, 8, 17, 17], [8, 8, 17, 17]], topk=16)
    assert equal[5] == 0


def test_tal_padding_and_empty():
    ltrb, scores = torch.full((16, 4), 2.0), torch.full((16, 1), 0.5)
    assert (tal_case(ltrb, scores, [[0, 0, 32, 32]], labels=[-1], topk=16) == -1).all()
    points, _, _ = grid(32, 32, (8,))
    out = ops.tal_assign(points, torch.zeros(2, 16, 4), torch.zeros(2, 16, 1), torch.zeros(2, 0, 4),
                         torch.zeros(2, 0, dtype=torch.int64))
    assert out.shape == (2, 16) and (out == -1).all()


# ------------------------------------------------------------------------------- against the loop, properties
@pytest.mark.parametrize("seed", range(4))
def test_atss_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    points, strides, sizes = grid(96, 128)
    B, M = 2, 8
    boxes = random_boxes(gen, B, M, 96)
    labels = torch.randint(0, 3, (B, M), generator=gen)
    labels[1, -3:] = -1  # padding
    boxes[0, 2, 2] = boxes[0, 2, 0]  # zero width
    hw = torch.tensor([[96, 128], [80, 100]])
    for image_sizes in (None, hw):
        got = ops.atss_assign(points, strides, sizes, boxes, labels, 9, 8.0, image_sizes=image_sizes, backend="torch")
        for b in range(B):
            expect, _ = loop_atss(points, strides, sizes, boxes[b], labels[b], 9, 8.0,
                                  None if image_sizes is None else hw[b].tolist())
            assert got[b].tolist() == expect
        assert (got >= 0).sum() > 0


@pytest.mark.parametrize("seed", range(4))
def test_tal_matches_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    points, _, _ = grid(64, 96)
    B, M, K = 2, 7, 3
    boxes = random_boxes(gen, B, M, 64)
    labels = torch.randint(0, K, (B, M), generator=gen)
    labels[0, -2:] = -1
    pred, scores = random_predictions(gen, points, B, K)
    for topk, alpha, beta in ((13, 1.0, 6.0), (4, 0.5, 2.0)):
        got = ops.tal_assign(points, pred, scores, boxes, labels, topk, alpha, beta, backend="torch")
        for b in range(B):
            assert got[b].tolist() == loop_tal(points, pred[b], scores[b], boxes[b], labels[b], topk, alpha, beta)


def separated_boxes(gen, B, cells=3, cell=40.0):
    """Boxes that do not overlap: one (or none) per cell of a cells x cells grid; some tiny or padding."""
    M = cells * cells
    corner = torch.stack(torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="xy"), -1).reshape(M, 2) * cell
    lo = corner + torch.rand(B, M, 2, generator=gen) * cell / 3
    hi = lo + 1 + torch.rand(B, M, 2, generator=gen) * (corner + cell - 1 - lo)
    labels = torch.randint(-1, 2, (B, M), generator=gen)  # -1: padding
    return torch.cat([lo, hi], -1), labels


@pytest.mark.parametrize("seed", range(3))
def test_every_box_with_a_candidate_inside_gets_positives(seed):
    gen = torch.Generator().manual_seed(seed)
    points, strides, sizes = grid(120, 120)
    boxes, labels = separated_boxes(gen, 2)
    atss = ops.atss_assign(points, strides, sizes, boxes, labels, 9, 8.0)
    pred, scores = random_predictions(gen, points, 2, 2)
    tal = ops.tal_assign(points, pred, scores, boxes, labels, 5)
    pts = points.tolist()
    for b in range(2):
        _, candidates = loop_atss(points, strides, sizes, boxes[b], labels[b], 9, 8.0)
        for m, (box, label) in enumerate(zip(boxes[b].tolist(), labels[b].tolist())):
            if not valid_box(box, label):
                assert not (atss[b] == m).any() and not (tal[b] == m).any()
                continue
            if any(inside(*pts[p], box) for p in candidates[m]):
                assert (atss[b] == m).sum() >= 1
            assert (tal[b] == m).sum() == min(5, sum(inside(px, py, box) for px, py in pts))
        for matched in (atss[b], tal[b]):
            for p in torch.nonzero(matched >= 0).flatten().tolist():
                assert inside(*pts[p], boxes[b, matched[p]].tolist())


def test_padded_slots_and_images_without_boxes_have_no_positives():
    points, strides, sizes = grid(64, 64)
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 40.0], [10.0, 10.0, 50.0, 60.0]], [[4.0, 4.0, 40.0, 40.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, -1], [-1, -1]])  # image 1 is all padding
    pred, scores = random_predictions(torch.Generator().manual_seed(0), points, 2, 1)
    for matched in (ops.atss_assign(points, strides, sizes, boxes, labels), ops.tal_assign(points, pred, scores, boxes, labels)):
        assert (matched[0] >= 0).any() and not (matched[0] == 1).any()
        assert (matched[1] == -1).all()
    empty = ops.atss_assign(points, strides, sizes, torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.int64))
    assert empty.shape == (3, len(points)) and (empty == -1).all()


def place(points_alone, points_batch, strides_alone, strides_batch):
    """Index in the batch's grid of each point of the image's own grid (same location and level)."""
    where = {(s, x, y): i for i, ((x, y), s) in enumerate(zip(points_batch.tolist(), strides_batch.tolist()))}
    return torch.tensor([where[(s, x, y)] for (x, y), s in zip(points_alone.tolist(), strides_alone.tolist())])


@pytest.mark.parametrize("method", ["atss", "tal"])
def test_an_image_alone_equals_the_image_in_a_padded_batch_of_mixed_sizes(method):
    gen = torch.Generator().manual_seed(3)
    sizes_hw = [(64, 96), (200, 256), (72, 40)]  # padded batch: 256 x 256; alone: each to a multiple of 128
    batch_points, batch_strides, batch_sizes = grid(256, 256)
    M = 6
    all_boxes, all_labels = [], []
    for h, w in sizes_hw:
        b = random_boxes(gen, 1, M, min(h, w), low=3.0, high=min(h, w) * 0.8)[0]
        all_boxes.append(b)
        all_labels.append(torch.randint(0, 2, (M,), generator=gen))
    all_labels[0][4:] = -1  # padding slots in the batch; the image alone has only its 4 boxes
    pred, scores = random_predictions(gen, batch_points, 3, 2)
    boxes, labels = torch.stack(all_boxes), torch.stack(all_labels)
    if method == "atss":
        batched = ops.atss_assign(batch_points, batch_strides, batch_sizes, boxes, labels, 9, 8.0,
                                  image_sizes=torch.tensor(sizes_hw))
    else:
        batched = ops.tal_assign(batch_points, pred, scores, boxes, labels, 13)
    for i, (h, w) in enumerate(sizes_hw):
        points, strides, sizes = grid(-(-h // 128) * 128, -(-w // 128) * 128)
        idx = place(points, batch_points, strides, batch_strides)
        n = int((labels[i] >= 0).sum()) if i == 0 else M
        if method == "atss":
            alone = ops.atss_assign(points, strides, sizes, boxes[i:i + 1, :n], labels[i:i + 1, :n], 9, 8.0,
                                    image_sizes=torch.tensor([[h, w]]))[0]
        else:
            alone = ops.tal_assign(points, pred[i:i + 1, idx], scores[i:i + 1, idx], boxes[i:i + 1, :n],
                                   labels[i:i + 1, :n], 13)[0]
        assert torch.equal(batched[i, idx], alone)
        outside = torch.ones(len(batch_points), dtype=torch.bool)
        outside[idx] = False
        assert (batched[i, outside] == -1).all() and (alone >= 0).any()


# ------------------------------------------------------------------------------------- targets and config
def test_every_method_gives_fcos_targets_format():
    torch.manual_seed(0)
    points, strides, sizes = grid(64, 64)
    outputs = {"points": points, "strides": strides, "level_sizes": sizes,
               "cls_logits": torch.randn(2, len(points), 3, requires_grad=True),
               "bbox_ltrb": torch.rand(2, len(points), 4, requires_grad=True) * 20}
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 30.0], [30.0, 20.0, 60.0, 62.0]], [[8.0, 8.0, 24.0, 56.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[2, 0], [1, -1]])
    ref = assign_targets(outputs, boxes, labels, AssignConfig(regress_ranges=((-1, 16), (16, 32), (32, 64), (64, 128),
                                                                              (128, 1e8))))
    for method in ("atss", "tal"):
        t = assign_targets(outputs, boxes, labels, AssignConfig(method=method), torch.tensor([[64, 64], [64, 40]]))
        assert {k: (v.shape, v.dtype) for k, v in t.items()} == {k: (v.shape, v.dtype) for k, v in ref.items()}
        pos = t["matched"] >= 0
        assert pos.any() and torch.equal(pos, t["labels"] >= 0)
        assert torch.equal(t["labels"][pos], torch.gather(labels, 1, t["matched"].clamp(min=0))[pos])
        assert (t["ltrb"][pos] > 0).all() and (t["ltrb"][~pos] == 0).all()
        assert (t["centerness"][pos] > 0).all() and (t["centerness"][~pos] == 0).all()
        assert not any(v.requires_grad for v in t.values())


def test_the_default_method_is_fcos_targets_bit_for_bit():
    points, strides, sizes = grid(64, 96)
    gen = torch.Generator().manual_seed(5)
    boxes, labels = random_boxes(gen, 2, 6, 64), torch.randint(-1, 3, (2, 6), generator=gen)
    cfg = load_config("shapes_128").assign  # five levels, as grid() makes
    assert cfg.method == "fcos"
    got = assign_targets({"points": points, "strides": strides, "level_sizes": sizes}, boxes, labels, cfg,
                         torch.tensor([[64, 96], [50, 60]]))
    expect = fcos_targets(points, strides, sizes, boxes, labels, cfg)
    assert all(torch.equal(got[k], expect[k]) for k in expect) and (got["matched"] >= 0).any()


@pytest.mark.parametrize("key,value", [("assign.atss_topk", 0), ("assign.tal_topk", 0), ("assign.atss_anchor_scale", 0.0),
                                       ("assign.tal_alpha", -1.0), ("assign.tal_beta", -0.5)])
def test_assign_keys_are_checked(key, value):
    with pytest.raises(FcoslabError, match=key):
        load_config("shapes", {key: value})
    load_config("shapes", {key: 1})  # the smallest valid value of each


def test_assign_method_lists_the_methods():
    with pytest.raises(FcoslabError, match="assign.method.*fcos.*atss.*tal"):
        load_config("shapes", {"assign.method": "simota"})


@pytest.mark.parametrize("method", ["atss", "tal"])
def test_two_training_steps_per_method(shapes_dir, tmp_path, method):
    from helpers import tiny_overrides
    from fcoslab.data import collate_fn
    from fcoslab.engine.trainer import Trainer

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"assign.method": method}))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = collate_fn(cfg.data, cfg.model.size_divisibility)([trainer.train_set[i] for i in range(4)])
    for _ in range(2):
        parts = trainer.train_step(batch)
        assert parts is not None and math.isfinite(parts["loss"]) and parts["box"] > 0
    after = trainer.model.state_dict()
    assert not torch.equal(before["head.cls_logits.weight"], after["head.cls_logits.weight"])
    assert not torch.equal(before["head.bbox_pred.weight"], after["head.bbox_pred.weight"])


# ------------------------------------------------------------------------------------------------ kernels
gpu = pytest.mark.gpu


def gpu_inputs(seed, B=3, M=40, image=(512, 768), K=5):
    gen = torch.Generator("cuda").manual_seed(seed)
    points, strides, sizes = (t.cuda() if torch.is_tensor(t) else t for t in grid(*image))
    xy = torch.rand(B, M, 2, generator=gen, device="cuda") * torch.tensor(image[::-1], device="cuda")
    wh = torch.rand(B, M, 2, generator=gen, device="cuda") ** 2 * 300
    boxes = torch.cat([xy, xy + wh], -1).round()  # integer corners: ties and boundary points
    labels = torch.randint(0, K, (B, M), generator=gen, device="cuda")
    labels[:, M - M // 5:] = -1
    ltrb = torch.rand(B, len(points), 4, generator=gen, device="cuda") * 100
    pred = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
    scores = torch.rand(B, len(points), K, generator=gen, device="cuda")
    return points, strides, sizes, boxes, labels, pred, scores


@gpu
@pytest.mark.parametrize("seed", range(4))
def test_atss_kernel_matches_reference(seed):
    from fcoslab.ops import cuda as kernels

    points, strides, sizes, boxes, labels, _, _ = gpu_inputs(seed)
    for got, ref in zip(kernels.atss_pairs(points, strides, boxes, 8.0), reference.atss_pairs(points, strides, boxes, 8.0)):
        assert torch.equal(got, ref)
    hw = torch.tensor([[512, 768], [400, 700], [512, 300]], device="cuda")
    got = ops.atss_assign(points, strides, sizes, boxes, labels, 9, 8.0, image_sizes=hw, backend="cupy")
    assert torch.equal(got, ops.atss_assign(points, strides, sizes, boxes, labels, 9, 8.0, image_sizes=hw, backend="torch"))
    assert (got >= 0).sum() > 0


@gpu
@pytest.mark.parametrize("seed", range(4))
def test_tal_kernel_matches_reference(seed):
    from fcoslab.ops import cuda as kernels

    points, _, _, boxes, labels, pred, scores = gpu_inputs(seed)
    pairs = zip(kernels.tal_pairs(points, pred, scores, boxes, labels), reference.tal_pairs(points, pred, scores, boxes, labels))
    for got, ref in pairs:
        assert torch.equal(got, ref)
    got = ops.tal_assign(points, pred, scores, boxes, labels, 13, backend="cupy")
    assert torch.equal(got, ops.tal_assign(points, pred, scores, boxes, labels, 13, backend="torch"))
    assert (got >= 0).sum() > 0


def test_cupy_backend_on_cpu_tensors_is_an_error():
    points, strides, sizes = grid(32, 32)
    with pytest.raises(ValueError, match="atss_assign: backend='cupy' needs CUDA"):
        ops.atss_assign(points, strides, sizes, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.int64), backend="cupy")
    with pytest.raises(ValueError, match="tal_assign: backend='cupy' needs CUDA"):
        ops.tal_assign(points, torch.zeros(1, len(points), 4), torch.zeros(1, len(points), 1), torch.zeros(1, 0, 4),
                       torch.zeros(1, 0, dtype=torch.int64), backend="cupy")
