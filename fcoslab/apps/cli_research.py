"""The command line's research commands: ``fcoslab compare`` (runs with confidence intervals and paired
tests) and ``fcoslab ablate`` (a grid of variants times seeds, trained resumably, then summarised)."""

from __future__ import annotations

from pathlib import Path

from ..files import write_json


def _cmd_compare(args) -> None:
    from ..evaluation.compare import compare_runs, comparison_table

    report = compare_runs(args.runs, args.ann, args.images, n=args.bootstrap, seed=args.seed, device=args.device)
    print(comparison_table(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.out), report)
        print(f"written to {args.out}")


def _cmd_ablate(args) -> None:
    from ..engine.ablate import run_ablation, summary_markdown

    summary = run_ablation(args.config, args.vary, args.seeds, args.out, args.set, launcher=args.launcher,
                           cluster=args.cluster, n=args.bootstrap, progress=not args.quiet)
    print(summary_markdown(summary))
    print(f"summary in {Path(args.out) / 'summary.md'} and summary.json")


def add_research_commands(sub) -> None:
    p = sub.add_parser("compare", help="runs on the same images: AP with bootstrap confidence intervals, and "
                                       "paired differences against the first run with p-values")
    p.add_argument("runs", nargs="+", help="run folders or checkpoints; the first is the baseline")
    p.add_argument("--ann", help="annotation file (default: the first run's validation set)")
    p.add_argument("--images", help="image folder for --ann")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resamples (default 0)")
    p.add_argument("--out", help="also write the report as JSON")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("ablate", help="train a grid of config variants x seeds (resumable) and summarise it")
    p.add_argument("--config", help="preset name or JSON file (default: shapes; not with --vary config=...)")
    p.add_argument("--vary", nargs="+", required=True, metavar="KEY=A,B", help="a key and its values; several "
                   "keys give their product; config=A,B varies the preset itself (names or JSON files)")
    p.add_argument("--seeds", type=int, default=3, help="runs per variant, train.seed 0..N-1 (default 3)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides common to every run")
    p.add_argument("--out", required=True, help="folder of the ablation (a run folder per variant and seed)")
    p.add_argument("--launcher", default="local", choices=["local", "submitit"],
                   help="local: one run after another here; submitit: a job per run (SLURM)")
    p.add_argument("--cluster", help="submitit cluster: slurm, local or debug (default: what submitit finds)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the images for the summary")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_ablate)


__all__ = ["add_research_commands"]
