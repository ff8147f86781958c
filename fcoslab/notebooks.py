"""Support for the numbered notebooks: running them headlessly, and live training output.

    python -m fcoslab.notebooks run --out outputs/notebooks [--run runs/shapes] [--only 01 02]
    python -m fcoslab.notebooks figures [--executed outputs/notebooks] [--out docs/figures]

executes ``notebooks/0*.ipynb`` in order with nbclient (cwd = the project root), each with its
``parameters`` cell followed by an injected cell of overrides (papermill style), and writes the
executed notebooks and every figure they produced under ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def use_project_root() -> Path:
    """Make the project root the working directory, where the presets' relative data paths point
    (JupyterLab starts notebooks in notebooks/): the first folder above the working directory that
    holds the project, else the project this fcoslab was imported from."""
    here = Path.cwd()
    for candidate in (here, *here.parents, ROOT):
        if (candidate / "pyproject.toml").exists() and (candidate / "fcoslab").is_dir():
            os.chdir(candidate)
            return candidate
    return here


def parameter_names(nb) -> set[str]:
    """The names the notebook's ``parameters`` cell assigns."""
    import ast

    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        raise ValueError("notebook has no cell tagged 'parameters'")
    tree = ast.parse(cell.source)
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def inject_parameters(nb, params: dict, only_known: bool = False) -> None:
    """Insert a cell assigning ``params`` right after the cell tagged ``parameters`` (papermill's
    convention: the injected cell is tagged ``injected-parameters``). With ``only_known``, parameters the
    notebook does not declare are left out, so one set of parameters can be offered to every notebook."""
    import nbformat

    if only_known:
        params = {k: v for k, v in params.items() if k in parameter_names(nb)}
    if not params:
        return
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("notebook has no cell tagged 'parameters'")
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


def execute_notebook(path: Path, out_dir: Path, params: Optional[dict] = None, timeout: int = 1200,
                     only_known: bool = False) -> Path:
    """Execute one notebook; writes ``OUT/NAME.ipynb`` and ``OUT/figures/NAME_k.png``. Raises on a cell error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, params or {}, only_known)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    k = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                (figures / f"{path.stem}_{k}.png").write_bytes(base64.b64decode(data["image/png"]))
                k += 1
    return out_dir / path.name


def notebook_paths(only: Optional[list[str]] = None) -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("0*.ipynb"))
    return [p for p in paths if not only or any(p.name.startswith(o) for o in only)]


def train_live(cfg, out: str, resume: bool = False):
    """Train in a notebook: a progress bar and a loss / AP figure redrawn as training goes."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    from .train import Trainer

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
        for key in ("AP", "AP50", "AP75"):
            ax_ap.plot([e["epoch"] for e in evals], [e[key] for e in evals], marker="o", label=key)
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
                  "target_maps_p3.png": ("02", 3), "map_curves.png": ("04", 0), "predictions.jpg": ("05", 0)}


def export_figures(executed: Path, out: Path) -> list[Path]:
    """Copy the README's figures out of ``executed/figures`` (what ``run`` wrote) into ``out``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (number, index) in README_FIGURES.items():
        source = next((executed / "figures").glob(f"{number}_*_{index}.png"), None)
        if source is None:
            raise FileNotFoundError(f"no figure {index} of notebook {number} in {executed / 'figures'}: "
                                    "run `python -m fcoslab.notebooks run` (or make demo) first")
        image = Image.open(source)
        image.convert("RGB").save(out / name, quality=90) if name.endswith(".jpg") else image.save(out / name)
        written.append(out / name)
    return written


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcoslab.notebooks")
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
    params = {"RUN_DIR": args.run, "RUNS": [args.run], "RESUME_IF_PRESENT": True} if args.run else {}
    for path in notebook_paths(args.only):
        print(f"running {path.name} ...", flush=True)
        written = execute_notebook(path, Path(args.out), params, args.timeout, only_known=True)
        print(f"  wrote {written}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
