"""A real browser: JupyterLab on 127.0.0.1, Debian's chromium driven by Playwright, notebook 05 run from
the Run menu, the viewer checked to render and to redraw when its slider moves. `.ci/run` installs
chromium and playwright; elsewhere the test is skipped when they are missing (marker: browser)."""

import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI must install it: see .ci/run)")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, shapes_dir):
    from fcoslab.config import load_config
    from fcoslab.notebooks import NOTEBOOK_DIR, inject_parameters
    from fcoslab.train import train
    import nbformat

    run = tmp_path / "run"
    train(load_config("shapes", tiny_overrides(shapes_dir)), run, progress=False)
    work = tmp_path / "lab"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK_DIR / "05_prediction_demo.ipynb", as_version=4)
    inject_parameters(nb, {"RUN_DIR": str(run), "N_SHOW": 2, "SCORE": 0.0})
    nbformat.write(nb, work / "05_prediction_demo.ipynb")
    token, port = secrets.token_hex(16), _free_port()
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", f"--ServerApp.root_dir={work}", "--allow-root"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"), cwd=work)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
    yield url, token
    proc.terminate()
    proc.wait(timeout=20)


def test_viewer_in_jupyterlab(lab, tmp_path):
    _need(Path(CHROMIUM).exists(), "Debian's chromium is not installed (apt-get install chromium)")
    _need(importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install playwright)")
    from playwright import sync_api

    url, token = lab
    shots = ROOT / "outputs" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/05_prediction_demo.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook", timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-mod-idle", timeout=90_000)
        image = page.locator(".widget-image").first
        accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")  # "Select Kernel", when it asks

        def run_all():
            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item .lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        page.wait_for_timeout(3000)  # the kernel dialog, if any, comes up within a moment of loading
        if accept.count() and accept.first.is_visible():
            accept.first.click()
        run_all()
        deadline = time.time() + 240
        while not (image.count() and image.is_visible()):
            if accept.count() and accept.first.is_visible():  # a late dialog swallowed the run: run again
                accept.first.click()
                page.wait_for_timeout(1000)
                run_all()
            if time.time() > deadline:
                page.screenshot(path=str(shots / "viewer_failure.png"), full_page=True)
                pytest.fail("the viewer did not appear within 240 s (screenshot: outputs/browser/viewer_failure.png)")
            page.wait_for_timeout(500)
        page.wait_for_function("() => { const i = document.querySelector('.widget-image');"
                               " return i && i.naturalWidth > 0; }", timeout=60_000)
        image.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "viewer_before.png"))
        before = image.get_attribute("src")
        handle = page.locator(".widget-slider .noUi-handle").first
        handle.click()
        handle.press("ArrowRight")
        page.wait_for_function("(old) => document.querySelector('.widget-image').getAttribute('src') !== old",
                               arg=before, timeout=60_000)
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "viewer_after.png"))
        assert image.get_attribute("src") != before
        text = page.locator(".jp-Notebook").inner_text()
        assert "Traceback" not in text, text[-2000:]  # warnings on stderr are allowed, errors are not
        browser.close()
    assert (shots / "viewer_after.png").stat().st_size > 10_000
