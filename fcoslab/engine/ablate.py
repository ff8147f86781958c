"""``fcoslab ablate``: a grid of config variants times seeds, trained one run after another (or each as a
job of an existing launcher), resumably, then summarised with the spread over seeds and paired
comparisons against the first variant.

    fcoslab ablate --config shapes --vary model.centerness=true,false --seeds 3 --out runs/abl
                   [--vary KEY=A,B ...] [--set KEY=VALUE ...] [--launcher local|submitit] [--bootstrap 1000]

Each ``--vary`` key gives a list of values; the variants are their product, the first value of each key
making the baseline. The key ``config`` varies the preset itself (``--vary config=shapes_128,shapes``:
names or JSON files, in place of ``--config``), so two whole recipes meet under the same seeds and ``--set``.
Run ``i`` of a variant sets ``train.seed = i`` and lives in ``OUT/VARIANT/seed{i}``. ``OUT/plan.json``
records the grid: a second call with the same grid continues it (finished runs are kept, interrupted ones
resumed from their ``last.pt``, missing ones started); another grid is refused, and so is a run folder whose
saved config differs from what the plan gives now (:func:`check_recipe`).

``OUT/summary.json`` and ``OUT/summary.md`` hold, per variant, the mean, standard deviation, minimum and
maximum over seeds of the last evaluation's AP, AP50, AP75, APs, APm and APl, and against the baseline:
the mean of the paired (same seed) differences with their standard deviation, and a bootstrap interval
over validation images of the seed-averaged difference with its p-value (:mod:`fcoslab.evaluation.bootstrap`).

``--launcher submitit`` hands each run to submitit (SLURM on a cluster, ``--cluster local`` for a
local process per run, which is how the tests run it); the jobs are independent, so a preempted job
resumes from its run folder when it is started again.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..evaluation.bootstrap import METRICS, interval, paired_p_value
from ..config import flatten, load_config, parse_overrides
from ..errors import FcoslabError
from ..files import atomic_write, write_json

log = logging.getLogger("fcoslab")


@dataclass(frozen=True)
class PlannedRun:
    variant: str  # e.g. "model.centerness=false"
    seed: int
    path: Path
    overrides: dict  # the variant's keys, train.seed and the common --set
    config: str  # the preset name or (absolute) JSON file the overrides apply to


def parse_vary(specs: Sequence[str]) -> list[tuple[str, list]]:
    """``["KEY=A,B", ...]`` -> ``[(KEY, [A, B]), ...]`` with the values typed as ``--set`` types them."""
    grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise FcoslabError(f"--vary {spec!r}: expected KEY=VALUE1,VALUE2,...")
        if key == CONFIG_KEY:  # preset names or files, kept as written
            typed = [v.strip() for v in values.split(",")]
            if not all(typed):
                raise FcoslabError(f"--vary {spec!r}: an empty preset name")
        else:
            typed = [parse_overrides([f"{key}={v}"])[key] for v in values.split(",")]
        if len(set(map(repr, typed))) != len(typed):
            raise FcoslabError(f"--vary {spec!r}: a value is given twice")
        grid.append((key, typed))
    if len({k for k, _ in grid}) != len(grid):
        raise FcoslabError("--vary: each key once (its values separated by commas)")
    return grid


CONFIG_KEY = "config"  # the --vary key that names the preset rather than a key of it


def variant_name(assignment: Sequence[tuple[str, object]]) -> str:
    return ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in assignment) or "base"


def _folder_name(variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "_", variant)


def _config_source(name: str) -> str:
    """A preset name as it is; a JSON file as an absolute path, so that a rerun from elsewhere finds it."""
    return str(Path(name).resolve()) if name.endswith(".json") else name


def plan_runs(config: Optional[str], vary: Sequence[str], seeds: int, out: str | Path,
              overrides: Sequence[str] = ()) -> list[PlannedRun]:
    """The runs of the grid, baseline first, each config checked now (a wrong key fails before any training).
    ``config`` None: the ``shapes`` preset, unless ``--vary config=...`` names the presets."""
    if seeds < 1:
        raise FcoslabError(f"--seeds must be at least 1, got {seeds}")
    grid = parse_vary(vary)
    if config is not None and any(k == CONFIG_KEY for k, _ in grid):
        raise FcoslabError(f"--config {config} and --vary {CONFIG_KEY}=... both name the preset: give one of them")
    common = parse_overrides(list(overrides))
    clash = [k for k, _ in grid if k in common or k == "train.seed"]
    if clash:
        raise FcoslabError(f"--vary {clash[0]} is also set by --set (or is train.seed, which --seeds sets)")
    variants = [[(k, v) for (k, _), v in zip(grid, values)] for values in itertools.product(*[v for _, v in grid])]
    named = [(variant_name(a), _folder_name(variant_name(a)), a) for a in variants]
    folders = {}
    for name, folder, _ in named:
        if folders.setdefault(folder, name) != name:
            raise FcoslabError(f"--vary: the variants {folders[folder]!r} and {name!r} would share the folder {folder}")
    runs = []
    for name, folder, assignment in named:
        keys = dict(assignment)
        base = _config_source(keys.pop(CONFIG_KEY, config or "shapes"))
        for seed in range(seeds):
            over = {**common, **keys, "train.seed": seed}
            try:
                load_config(base, over)  # validates
            except FcoslabError as e:
                raise FcoslabError(f"--vary {name}: {e}") from None
            runs.append(PlannedRun(name, seed, Path(out) / folder / f"seed{seed}", over, base))
    return runs


def _check_plan(out: Path, plan: dict) -> None:
    path = out / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != plan:
            raise FcoslabError(f"{out} holds another ablation ({path}: {old['vary']} x {old['seeds']} seeds, "
                               f"config {old['config']}); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, plan)


def _checkpoint(path: Path) -> Optional[dict]:
    from ..runfolder import RunFolder

    folder = RunFolder(path)
    return folder.load() if folder.has_checkpoint() else None


def _finished(ckpt: Optional[dict]) -> bool:
    return ckpt is not None and ckpt["epoch"] >= ckpt["config"]["train"]["epochs"] and not ckpt.get("pending_eval", False)


def run_is_finished(path: Path) -> bool:
    return _finished(_checkpoint(path))


def check_recipe(run: PlannedRun, saved_config: dict) -> None:
    """Refuse a run folder trained from another recipe than the plan's (``saved_config``, its checkpoint's):
    a preset redefined since (a name stays, its contents change) or data found elsewhere would otherwise mix
    two recipes in one variant. ``runtime.*`` (device, threads, precision) may differ; keys one side lacks
    (newer code) are not compared."""
    def flat(tree: dict) -> dict:
        return flatten(json.loads(json.dumps(tree)), str(run.path))  # tuples and lists alike

    saved, planned = flat(saved_config), flat(load_config(run.config, run.overrides).to_dict())
    differ = sorted(k for k in saved.keys() & planned.keys()
                    if not k.startswith("runtime.") and saved[k] != planned[k])
    if differ:
        shown = "; ".join(f"{k} = {saved[k]!r} there, {planned[k]!r} now" for k in differ[:3])
        raise FcoslabError(f"{run.path} holds a run of another recipe than the plan's ({run.config} with the "
                           f"grid's keys): {shown}{'; ...' if len(differ) > 3 else ''}; use another --out")


def train_planned(run: PlannedRun, progress: bool = False) -> str:
    """Train one run of the grid to its end: start it, resume it, or leave it when finished."""
    from .trainer import train

    ckpt = _checkpoint(run.path)  # read once: it holds the weights
    if ckpt is None:
        train(load_config(run.config, run.overrides), run.path, progress=progress)
        return "trained"
    check_recipe(run, ckpt["config"])
    if _finished(ckpt):
        return "finished before"
    del ckpt
    train(None, run.path, resume=True, progress=progress)
    return "resumed"


class _Job:
    """A picklable job for submitit: one planned run."""

    def __init__(self, run: PlannedRun):
        self.run = run

    def __call__(self) -> str:
        logging.basicConfig(level=logging.INFO)
        return train_planned(self.run)


def run_ablation(config: Optional[str], vary: Sequence[str], seeds: int, out: str | Path, overrides: Sequence[str] = (),
                 launcher: str = "local", cluster: Optional[str] = None, n: int = 1000, progress: bool = True) -> dict:
    """Plan, train what is left, then summarise (:func:`summarise_ablation`); returns the summary."""
    out = Path(out)
    runs = plan_runs(config, vary, seeds, out, overrides)
    varied = any(v.partition("=")[0] == CONFIG_KEY for v in vary)
    recorded = config if config is not None else (None if varied else "shapes")
    _check_plan(out, {"config": recorded, "vary": list(vary), "seeds": seeds, "set": list(overrides)})
    if launcher == "local":
        for i, run in enumerate(runs, 1):
            log.info("ablation run %d/%d: %s, seed %d (%s)", i, len(runs), run.variant, run.seed, run.path)
            status = train_planned(run, progress)
            log.info("ablation run %d/%d: %s", i, len(runs), status)
    elif launcher == "submitit":
        _submit(runs, out, cluster)
    else:
        raise FcoslabError(f"--launcher must be local or submitit, got {launcher}")
    return summarise_ablation(runs, out, n)


def _submit(runs: list[PlannedRun], out: Path, cluster: Optional[str]) -> None:
    try:
        import submitit
    except ImportError:
        raise FcoslabError("--launcher submitit needs the submitit package: pip install submitit") from None
    executor = submitit.AutoExecutor(folder=str(out / "submitit"), cluster=cluster)
    executor.update_parameters(timeout_min=24 * 60, name="fcoslab-ablate")
    todo = [r for r in runs if not run_is_finished(r.path)]
    jobs = [executor.submit(_Job(r)) for r in todo]
    for run, job in zip(todo, jobs):
        log.info("submitted %s (seed %d) as job %s", run.variant, run.seed, job.job_id)
    for run, job in zip(todo, jobs):
        try:
            job.result()
        except Exception as e:  # the job's own error is in its log; the other runs are kept
            raise FcoslabError(f"the job of {run.path} failed ({str(e).strip().splitlines()[-1]}); its log is in "
                               f"{out / 'submitit'}; run the same command again to continue") from None


def summarise_ablation(runs: list[PlannedRun], out: Path, n: int = 1000) -> dict:
    """Spread over seeds and paired comparisons against the baseline; written to summary.json and .md."""
    from ..evaluation.compare import bootstrap_metrics, scored_runs

    variants = list(dict.fromkeys(r.variant for r in runs))
    ids, tables = scored_runs([r.path for r in runs])
    points, samples = bootstrap_metrics(tables, len(ids), n)
    by = {(r.variant, r.seed): i for i, r in enumerate(runs)}
    seeds = sorted({r.seed for r in runs})
    summary = {"variants": [], "seeds": seeds, "images": len(ids), "bootstrap": n}
    for v in variants:
        entry = {"variant": v, "runs": [str(r.path) for r in runs if r.variant == v], "metrics": {}}
        for m in METRICS:
            entry["metrics"][m] = _spread([points[by[(v, s)]][m] for s in seeds])
        if v != variants[0]:
            entry["vs_baseline"] = {}
            for m in METRICS:
                d = torch.stack([samples[by[(v, s)]][m] - samples[by[(variants[0], s)]][m] for s in seeds]).mean(0)
                paired = _spread([points[by[(v, s)]][m] - points[by[(variants[0], s)]][m] for s in seeds])
                entry["vs_baseline"][m] = {"mean": paired["mean"], "std": paired["std"], "ci": list(interval(d)),
                                           "p": paired_p_value(d)} if paired["mean"] is not None else None
        summary["variants"].append(entry)
    write_json(out / "summary.json", summary)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(summary_markdown(summary)))
    return summary


def _spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min, max and the values; None for a metric that
    has no ground truth (e.g. APl without large objects)."""
    if any(v != v for v in values):
        return {"mean": None, "std": None, "min": None, "max": None, "values": [None] * len(values)}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def summary_markdown(summary: dict) -> str:
    """The ablation summary as Markdown tables: mean +- std over seeds, then the paired differences."""
    head = "| variant | " + " | ".join(METRICS) + " |\n|---|" + "---:|" * len(METRICS) + "\n"
    lines = [f"{len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}), {summary['images']} "
             f"validation images; mean +- standard deviation over seeds [min, max]\n", head]
    for v in summary["variants"]:
        cells = [f"{s['mean']:.3f} +- {s['std']:.3f} [{s['min']:.3f}, {s['max']:.3f}]" if s["mean"] is not None else "-"
                 for s in v["metrics"].values()]
        lines.append(f"| {v['variant']} | " + " | ".join(cells) + " |\n")
    others = [v for v in summary["variants"] if "vs_baseline" in v]
    if others:
        lines.append(f"\nAgainst {summary['variants'][0]['variant']}: mean paired (same seed) difference +- its "
                     f"standard deviation; 95% interval and p-value from {summary['bootstrap']} bootstrap resamples "
                     "of the images, of the difference averaged over seeds\n\n" + head)
        for v in others:
            cells = [f"{d['mean']:+.3f} +- {d['std']:.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] p={d['p']:.3g}"
                     if d is not None else "-" for d in v["vs_baseline"].values()]
            lines.append(f"| {v['variant']} | " + " | ".join(cells) + " |\n")
    return "".join(lines)
