"""Weighted COCO AP against pycocotools (all weights 1: its numbers; weight 2 / 0: a dataset with the image
twice / without it), and the bootstrap statistics on cases computed by hand."""

import contextlib
import io

import numpy as np
import pytest
import torch

from fcoslab.evaluation.bootstrap import (METRICS, interval, match_tables, paired_p_value, resample_weights, weighted_ap)


def synthetic(seed=0, images=12, categories=3):
    """Ground truth of mixed sizes (small, medium, large), crowd boxes, an image without objects, and
    detections that hit, miss, duplicate, mislocate and fire on the background, with distinct scores."""
    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": i + 1, "width": 400, "height": 300, "file_name": f"{i}.jpg"} for i in range(images)],
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(categories)], "annotations": []}
    results = []
    for im in gt["images"][1:]:  # the first image has no objects
        for _ in range(rng.integers(1, 6)):
            side = rng.choice([12.0, 50.0, 150.0]) * rng.uniform(0.8, 1.2)
            x, y = rng.uniform(0, 400 - side), rng.uniform(0, 300 - side)
            cat = int(rng.integers(1, categories + 1))
            crowd = int(rng.random() < 0.08)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": im["id"], "category_id": cat,
                                      "bbox": [x, y, side, side], "area": side * side, "iscrowd": crowd})
            for _ in range(rng.integers(0, 3)):
                jitter = rng.normal(0, side * rng.choice([0.05, 0.3]), 4)
                results.append({"image_id": im["id"], "category_id": cat if rng.random() < 0.8 else
                                int(rng.integers(1, categories + 1)),
                                "bbox": [x + jitter[0], y + jitter[1], side + jitter[2], side + jitter[3]],
                                "score": float(rng.random())})
    for im in gt["images"]:  # background detections
        for _ in range(rng.integers(0, 3)):
            results.append({"image_id": im["id"], "category_id": int(rng.integers(1, categories + 1)),
                            "bbox": [*rng.uniform(0, 250, 2), *rng.uniform(5, 100, 2)], "score": float(rng.random())})
    return gt, results


def pycocotools_stats(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(METRICS, ev.stats[:6]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_weights_one_is_pycocotools(seed):
    gt, results = synthetic(seed)
    ids, tables = match_tables(gt, results)
    got = weighted_ap(tables, torch.ones(1, len(ids)))
    want = pycocotools_stats(gt, results)
    for m in METRICS:
        value = float(got[m][0])
        assert (value if not np.isnan(value) else -1.0) == pytest.approx(want[m], abs=1e-12), m


def test_weights_count_images_as_a_dataset_that_repeats_or_drops_them():
    gt, results = synthetic(3)
    ids, tables = match_tables(gt, results)
    weights = torch.tensor([[2.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    got = weighted_ap(tables, weights)
    # the same resample written out as a dataset: image i as many times as its weight, under new ids
    images, annotations, dets = [], [], []
    for index, (image_id, w) in enumerate(zip(ids, weights[0].tolist())):
        for copy in range(int(w)):
            new_id = 1000 * (copy + 1) + image_id
            images.append({**next(im for im in gt["images"] if im["id"] == image_id), "id": new_id})
            annotations += [{**a, "image_id": new_id, "id": len(annotations) + 1 + j}
                            for j, a in enumerate(a for a in gt["annotations"] if a["image_id"] == image_id)]
            dets += [{**r, "image_id": new_id} for r in results if r["image_id"] == image_id]
    for j, a in enumerate(annotations):
        a["id"] = j + 1
    want = pycocotools_stats({**gt, "images": images, "annotations": annotations}, dets)
    for m in METRICS:
        assert float(got[m][0]) == pytest.approx(want[m], abs=1e-12), m


def test_statistics_on_cases_computed_by_hand():
    w = resample_weights(5, 200, seed=1)
    assert w.shape == (200, 5) and torch.all(w.sum(1) == 5)
    assert torch.equal(w, resample_weights(5, 200, seed=1))  # seeded
    samples = torch.arange(1, 101, dtype=torch.float64)  # 1..100: percentiles 2.5 and 97.5
    assert interval(samples) == pytest.approx((np.percentile(np.arange(1, 101), 2.5), np.percentile(np.arange(1, 101), 97.5)))
    assert interval(torch.tensor([float("nan"), 1.0, 1.0])) == (1.0, 1.0)
    assert paired_p_value(torch.zeros(50, dtype=torch.float64)) == 1.0  # a run against itself
    assert paired_p_value(torch.full((50,), 0.1, dtype=torch.float64)) == pytest.approx(1 / 50)  # always better
    d = torch.tensor([-0.1] * 10 + [0.2] * 30, dtype=torch.float64)  # 25% of the resamples flip the sign
    assert paired_p_value(d) == pytest.approx(0.5)


def test_no_detections_and_no_ground_truth():
    gt, _ = synthetic(0)
    ids, tables = match_tables(gt, [])
    got = weighted_ap(tables, torch.ones(1, len(ids)))
    assert float(got["AP"][0]) == 0.0  # ground truth but no detections: 0, as pycocotools
    empty = {**gt, "annotations": []}
    ids, tables = match_tables(empty, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5}])
    assert np.isnan(float(weighted_ap(tables, torch.ones(1, len(ids)))["AP"][0]))  # pycocotools: -1
