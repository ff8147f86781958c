"""``fcoslab compare``: runs scored on the same validation images, each metric with a bootstrap confidence
interval over images, and each run's paired difference against the first with its interval and p-value
(:mod:`fcoslab.evaluation.bootstrap` has the statistics).

    fcoslab compare runs/a runs/b [runs/c ...] [--ann VAL.json --images VAL/] [--bootstrap 1000] [--seed 0]
                    [--out compare.json]
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from .bootstrap import METRICS, interval, match_tables, paired_p_value, resample_weights, weighted_ap
from ..errors import FcoslabError


def scored_runs(runs: Sequence[str | Path], ann_file: Optional[str] = None, image_dir: Optional[str] = None,
                device: str = "auto") -> tuple[list[int], list[dict]]:
    """Evaluate each run on one validation set (``ann_file`` + ``image_dir``, default the first run's) and
    take pycocotools' per-image matching of its detections. Returns the image ids and, per run, its
    :func:`fcoslab.evaluation.bootstrap.match_tables` tables."""
    from ..config import config_from_dict
    from .coco import evaluate
    from ..runfolder import load_checkpoint

    if (ann_file is None) != (image_dir is None):
        raise FcoslabError("give --ann and --images together (or neither: the first run's validation set)")
    if ann_file is None:
        data = config_from_dict(load_checkpoint(runs[0])["config"]).data
        ann_file, image_dir = data.val_ann, data.val_images
    ids, tables = None, []
    for run in runs:
        evaluation = evaluate(run, ann_file, image_dir, metrics="coco", backend="pycocotools", device=device)
        run_ids, run_tables = match_tables(evaluation.gt, evaluation.results)
        if ids is not None and run_ids != ids:
            raise FcoslabError(f"{run} was scored on other images than {runs[0]}")
        ids = run_ids
        tables.append(run_tables)
    return ids, tables


def bootstrap_metrics(tables: Sequence[dict], num_images: int, n: int = 1000, seed: int = 0,
                      metrics: Sequence[str] = METRICS) -> tuple[list[dict], list[dict]]:
    """Point estimates (``weights`` all 1) and ``n`` resamples of each metric for each run's tables, the
    same resamples for every run. Returns ``(points, samples)``: per run ``{metric: float}`` and
    ``{metric: (n,) tensor}``."""
    weights = resample_weights(num_images, n, seed)
    ones = torch.ones(1, num_images, dtype=torch.float64)
    points = [{m: float(v[0]) for m, v in weighted_ap(t, ones, tuple(metrics)).items()} for t in tables]
    samples = [weighted_ap(t, weights, tuple(metrics)) for t in tables]
    return points, samples


def summarise(names: Sequence[str], points: list[dict], samples: list[dict], level: float = 0.95) -> list[dict]:
    """One record per run: each metric's value and interval, and (after the first run) the paired
    difference against the first run: value, interval and p-value. None for a metric without ground truth
    (e.g. APl on a set without large objects)."""
    out = []
    for i, name in enumerate(names):
        record = {"run": str(name), "metrics": {m: None if v != v else {"value": v, "ci": list(interval(samples[i][m], level))}
                                                for m, v in points[i].items()}}
        if i:
            record["vs_first"] = {}
            for m, v in points[i].items():
                d = samples[i][m] - samples[0][m]
                record["vs_first"][m] = None if v != v else {"value": v - points[0][m], "ci": list(interval(d, level)),
                                                             "p": paired_p_value(d)}
        out.append(record)
    return out


def compare_runs(runs: Sequence[str | Path], ann_file: Optional[str] = None, image_dir: Optional[str] = None,
                 n: int = 1000, seed: int = 0, device: str = "auto", level: float = 0.95) -> dict:
    """Everything ``fcoslab compare`` prints, as a JSON-able dict: ``images``, ``bootstrap`` (n, seed,
    level) and ``runs`` (:func:`summarise`).

    Example::

        from fcoslab.evaluation.compare import compare_runs, comparison_table
        report = compare_runs(["runs/a", "runs/b"], n=1000)
        print(comparison_table(report))
        report["runs"][1]["vs_first"]["AP"]  # {"value": 0.012, "ci": [0.004, 0.020], "p": 0.002}
    """
    if len(runs) < 1:
        raise FcoslabError("compare needs at least one run")
    if n < 10:
        raise FcoslabError(f"--bootstrap must be at least 10 resamples, got {n}")
    ids, tables = scored_runs(runs, ann_file, image_dir, device)
    points, samples = bootstrap_metrics(tables, len(ids), n, seed)
    return {"images": len(ids), "bootstrap": {"n": n, "seed": seed, "level": level},
            "runs": summarise([str(r) for r in runs], points, samples, level)}


def _cell(entry: Optional[dict], signed: bool = False) -> str:
    if entry is None:  # no ground truth of that size
        return "-"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    value, (lo, hi) = entry["value"], entry["ci"]
    text = f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text + (f" p={entry['p']:.3g}" if "p" in entry else "")


def comparison_table(report: dict) -> str:
    """:func:`compare_runs`'s report as aligned text: one row per run, one row per difference."""
    metrics = list(report["runs"][0]["metrics"])
    rows = [["run", *metrics]]
    for r in report["runs"]:
        rows.append([r["run"], *[_cell(r["metrics"][m]) for m in metrics]])
        if "vs_first" in r:
            rows.append([f"  minus {report['runs'][0]['run']}", *[_cell(r["vs_first"][m], True) for m in metrics]])
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    b = report["bootstrap"]
    head = (f"{report['images']} images; {100 * b['level']:.0f}% intervals from {b['n']} bootstrap resamples of the "
            f"images (seed {b['seed']}); differences paired on the same resamples")
    return head + "\n" + "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
