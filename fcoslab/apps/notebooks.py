"""Support for the numbered notebooks: running them headlessly, and live training output.

    python -m fcoslab.apps.notebooks run --out outputs/notebooks [--run runs/shapes] [--only 01 02]
    python -m fcoslab.apps.notebooks figures [--executed outputs/notebooks] [--out docs/figures]

executes ``notebooks/0*.ipynb`` in order with papermill, in the notebooks' own folder as JupyterLab does
(presets find their data wherever the notebook runs: see :func:`fcoslab.config.project_root`), and writes
the executed notebooks and every figure they produced under ``--out``. They run on one kernel in turn
(:func:`shared_kernel`), each from an empty namespace: a kernel's start and fcoslab's imports (torch,
torchvision) take 8-10 s on a 2-core CPU, once instead of once a notebook.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
from pathlib import Path
from typing import Optional

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def declared_parameters(path: Path) -> set[str]:
    """The names the notebook's cell tagged ``parameters`` assigns (papermill's convention)."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


@contextlib.contextmanager
def shared_kernel(cwd: Path = NOTEBOOK_DIR):
    """A Python kernel, started in ``cwd``, for several :func:`execute_notebook` calls in turn (``kernel=``).

    Each notebook starts from an empty namespace (``%reset -f``, figures closed), as in a fresh kernel: a
    name it uses but does not define is an error. Modules stay imported, which is the point."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(cwd))
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


def _reset_namespace(km, timeout: int = 120) -> None:
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=timeout)
        reply = client.execute_interactive("%reset -f\nimport matplotlib.pyplot\nmatplotlib.pyplot.close('all')\n"
                                           "del matplotlib", timeout=timeout, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the shared kernel could not be reset: {reply['content']}")
    finally:
        client.stop_channels()


def execute_notebook(path: Path, out_dir: Path, params: Optional[dict] = None, timeout: int = 1200,
                     only_known: bool = False, kernel=None) -> Path:
    """Execute one notebook with papermill (``params`` injected after its ``parameters`` cell; with
    ``only_known``, those it does not declare are left out, so one set can be offered to every notebook),
    on a kernel of its own, or on ``kernel`` (from :func:`shared_kernel`) after emptying its namespace.

    Writes ``OUT/NAME.ipynb`` (also when a cell fails, which raises) and ``OUT/figures/NAME_k.png``.
    """
    import nbformat
    import papermill

    params = dict(params or {})
    if only_known:
        params = {k: v for k, v in params.items() if k in declared_parameters(path)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = out_dir / path.name
    if kernel is not None:
        _reset_namespace(kernel)
    papermill.execute_notebook(str(path), str(written), parameters=params, cwd=str(path.parent), km=kernel,
                               kernel_name="python3", progress_bar=False, execution_timeout=timeout)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    k = 0
    for cell in nbformat.read(written, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                (figures / f"{path.stem}_{k}.png").write_bytes(base64.b64decode(data["image/png"]))
                k += 1
    return written


def notebook_paths(only: Optional[list[str]] = None) -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("0*.ipynb"))
    return [p for p in paths if not only or any(p.name.startswith(o) for o in only)]


def train_live(cfg, out: str, resume: bool = False):
    """Train in a notebook: a progress bar and a loss / AP figure redrawn as training goes."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from ..engine.trainer import Trainer

    steps, losses, evals = [], [], []
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 3.2))
    handle = display(fig, display_id=True)
    plt.close(fig)

    def redraw():
        ax_loss.clear()
        ax_loss.plot(steps, losses, lw=0.8)
        ax_loss.set_title("training loss")
        ax_loss.set_xlabel("step")
        ax_ap.clear()
        for key in ("AP", "AP50", "AP75", "voc_mAP50"):
            points = [(e["epoch"], e[key]) for e in evals if e.get(key) is not None]
            if points:
                ax_ap.plot(*zip(*points), marker="o", label=key)
        ax_ap.set_title("validation")
        ax_ap.set_xlabel("epoch")
        ax_ap.legend(fontsize=8)
        handle.update(fig)

    def on_step(record):
        steps.append(record["step"])
        losses.append(record["loss"])
        if record["step"] % 20 == 0:
            redraw()

    def on_eval(record):
        evals.append(record)
        redraw()

    callbacks = dict(on_step=on_step, on_eval=on_eval)
    trainer = Trainer.from_run(out, **callbacks) if resume else Trainer(cfg, out, **callbacks)
    evals.extend(trainer.history)
    history = trainer.run()
    redraw()
    return history


# README figure <- the executed notebooks' figure (notebook, index of its figure in output order)
README_FIGURES = {"samples.jpg": ("01", 0), "dataset_stats.png": ("01", 1), "assignment.png": ("02", 0),
                  "target_maps_p3.png": ("02", 3), "map_curves.png": ("04", 0), "confusion_matrix.png": ("04", 5),
                  "errors.png": ("04", 6), "predictions.jpg": ("05", 0)}


def export_figures(executed: Path, out: Path) -> list[Path]:
    """Copy the README's figures out of ``executed/figures`` (what ``run`` wrote) into ``out``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (number, index) in README_FIGURES.items():
        source = next((executed / "figures").glob(f"{number}_*_{index}.png"), None)
        if source is None:
            raise FileNotFoundError(f"no figure {index} of notebook {number} in {executed / 'figures'}: "
                                    "run `python -m fcoslab.apps.notebooks run` (or make demo) first")
        image = Image.open(source)
        image.convert("RGB").save(out / name, quality=90) if name.endswith(".jpg") else image.save(out / name)
        written.append(out / name)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcoslab.apps.notebooks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the numbered notebooks in order")
    run.add_argument("--out", default="outputs/notebooks")
    run.add_argument("--run", help="an existing run folder for notebooks 04 and 05 (skips training in 03)")
    run.add_argument("--only", nargs="*", help="notebook number prefixes, e.g. 01 02")
    run.add_argument("--timeout", type=int, default=1200)
    figures = sub.add_parser("figures", help="copy the README's figures out of executed notebooks")
    figures.add_argument("--executed", default="outputs/notebooks", help="the --out of `run`")
    figures.add_argument("--out", default="docs/figures")
    args = parser.parse_args(argv)
    if args.command == "figures":
        for path in export_figures(Path(args.executed), Path(args.out)):
            print(f"wrote {path}")
        return 0
    # offered to every notebook; each takes the ones its parameters cell declares
    run_dir = str(Path(args.run).resolve()) if args.run else None  # the notebooks run in their own folder
    params = {"RUN_DIR": run_dir, "RUNS": [run_dir], "RESUME_IF_PRESENT": True} if args.run else {}
    with shared_kernel() as kernel:
        for path in notebook_paths(args.only):
            print(f"running {path.name} ...", flush=True)
            written = execute_notebook(path, Path(args.out), params, args.timeout, only_known=True, kernel=kernel)
            print(f"  wrote {written}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
