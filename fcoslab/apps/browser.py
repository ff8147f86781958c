"""Notebook 05 in a real JupyterLab, driven in a headless Chromium by Playwright.

    python -m fcoslab.apps.browser RUN_DIR --out docs/figures/viewer_jupyterlab.jpg [--score 0.4]

starts JupyterLab on 127.0.0.1 with notebook 05 parameterised for ``RUN_DIR``, runs it from the Run
menu, waits for the prediction viewer and saves a screenshot of the viewer alone (no dialog, menu or
other cell over it). The browser test drives the same functions. Needs Debian's ``chromium`` and the
``playwright`` package (no browser download: Playwright is pointed at /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

CHROMIUM = "/usr/bin/chromium"
# Flags for a machine without network: no sandbox (root), no background connections or updates.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NOTEBOOK = "05_prediction_demo.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_viewer_notebook(folder: Path, params: dict) -> Path:
    """Notebook 05 with ``params`` injected after its parameters cell, written into ``folder``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from .notebooks import NOTEBOOK_DIR

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK_DIR / NOTEBOOK)), params)
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / NOTEBOOK)
    return folder / NOTEBOOK


@contextlib.contextmanager
def jupyter_lab(root: Path, log: Path) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on a free local port serving ``root``; yields (url, token)."""
    token, port = secrets.token_hex(16), _free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    with open(log, "w") as log_file:
        proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--ServerApp.token={token}",
                                 "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", f"--ServerApp.root_dir={root}",
                                 "--allow-root"], stdout=subprocess.DEVNULL, stderr=log_file, cwd=root)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            else:
                raise RuntimeError("JupyterLab did not start: " + log.read_text()[-2000:])
            yield url, token
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def open_viewer(page, url: str, token: str, failure_shot: Optional[Path] = None, timeout: float = 240) -> None:
    """Open notebook 05, run all its cells and wait until the viewer's image has loaded.

    JupyterLab may ask for a kernel in a dialog, early or late; the dialog is accepted and, when it
    swallowed the run, the cells are run again. Raises TimeoutError (after saving ``failure_shot``).
    """
    page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-mod-idle", timeout=90_000)
    page.add_style_tag(content=".Toastify { display: none !important; }")  # e.g. "get notified about news?"
    image = page.locator(".widget-image").first
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")

    def run_all():
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item .lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    page.wait_for_timeout(3000)  # the kernel dialog, if any, comes up within a moment of loading
    if accept.count() and accept.first.is_visible():
        accept.first.click()
    run_all()
    deadline = time.time() + timeout
    while not (image.count() and image.is_visible()):
        if accept.count() and accept.first.is_visible():  # a late dialog swallowed the run: run again
            accept.first.click()
            page.wait_for_timeout(1000)
            run_all()
        if time.time() > deadline:
            if failure_shot is not None:
                page.screenshot(path=str(failure_shot), full_page=True)
            raise TimeoutError(f"the viewer did not appear within {timeout:.0f} s")
        page.wait_for_timeout(500)
    page.wait_for_function("() => { const i = document.querySelector('.widget-image');"
                           " return i && i.naturalWidth > 0; }", timeout=60_000)
    page.keyboard.press("Escape")  # close any menu or completer left open
    image.scroll_into_view_if_needed()


def viewer_element(page):
    """The output area holding the viewer widget (buttons, sliders, image and table)."""
    return page.locator(".jp-OutputArea-output", has=page.locator(".widget-image")).last


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def screenshot_viewer(run_dir: str, out: Path, score: float = 0.4, work: Optional[Path] = None) -> Path:
    """Save a screenshot of the viewer on ``run_dir``'s validation images at score threshold ``score``."""
    import tempfile

    work = Path(work or tempfile.mkdtemp(prefix="fcoslab-lab-"))
    write_viewer_notebook(work, {"RUN_DIR": str(Path(run_dir).resolve()), "N_SHOW": 2, "SCORE": score})
    out.parent.mkdir(parents=True, exist_ok=True)
    with jupyter_lab(work, work / "lab.log") as (url, token), chromium_page() as page:
        open_viewer(page, url, token, failure_shot=out.with_name(out.stem + "_failure.png"))
        page.wait_for_timeout(500)
        viewer_element(page).screenshot(path=str(out), **({"quality": 90} if out.suffix == ".jpg" else {}))
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcoslab.apps.browser", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder (e.g. runs/shapes after make demo)")
    parser.add_argument("--out", default="docs/figures/viewer_jupyterlab.jpg")
    parser.add_argument("--score", type=float, default=0.4, help="the viewer's score threshold (default 0.4)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():  # a missing tool, not a traceback
        print(f"fcoslab: error: the viewer screenshot needs chromium at {CHROMIUM} (Debian: apt install chromium); "
              f"{args.out} was left as it is", file=sys.stderr)
        return 2
    print(f"wrote {screenshot_viewer(args.run, Path(args.out), args.score)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
