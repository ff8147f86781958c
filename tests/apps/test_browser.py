"""A real browser: JupyterLab on 127.0.0.1, Debian's chromium driven by Playwright, notebook 05 run from
the Run menu, the viewer checked to render and to redraw when its slider moves. `.ci/run` installs
chromium and playwright; elsewhere the test is skipped when they are missing (marker: browser)."""

import importlib.util
import os
from pathlib import Path

import pytest

from helpers import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI must install it: see .ci/run)")
        pytest.skip(why)


@pytest.fixture
def lab(tmp_path, shapes_dir):
    from fcoslab.apps import browser

    # before the training below: a machine without them skips at once
    _need(Path(browser.CHROMIUM).exists(), "Debian's chromium is not installed (apt-get install chromium)")
    _need(importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install playwright)")
    from fcoslab.config import load_config
    from fcoslab.engine.trainer import train

    run = tmp_path / "run"
    train(load_config("shapes", tiny_overrides(shapes_dir)), run, progress=False)
    work = tmp_path / "lab"
    browser.write_viewer_notebook(work, {"RUN_DIR": str(run), "N_SHOW": 2, "SCORE": 0.0})
    with browser.jupyter_lab(work, tmp_path / "lab.log") as (url, token):
        yield url, token


def test_viewer_in_jupyterlab(lab, tmp_path):
    from fcoslab.apps import browser

    url, token = lab
    shots = ROOT / "outputs" / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with browser.chromium_page() as page:
        try:
            browser.open_viewer(page, url, token, failure_shot=shots / "viewer_failure.png")
        except TimeoutError as e:
            pytest.fail(f"{e} (screenshot: outputs/browser/viewer_failure.png)")
        image = page.locator(".widget-image").first
        page.screenshot(path=str(shots / "viewer_before.png"))
        before = image.get_attribute("src")
        handle = page.locator(".widget-slider .noUi-handle").first
        handle.click()
        handle.press("ArrowRight")
        page.wait_for_function("(old) => document.querySelector('.widget-image').getAttribute('src') !== old",
                               arg=before, timeout=60_000)
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "viewer_after.png"))
        browser.viewer_element(page).screenshot(path=str(shots / "viewer_only.png"))
        assert image.get_attribute("src") != before
        text = page.locator(".jp-Notebook").inner_text()
        assert "Traceback" not in text, text[-2000:]  # warnings on stderr are allowed, errors are not
        assert page.locator(".jp-Dialog").count() == 0  # nothing left over the notebook
    assert (shots / "viewer_after.png").stat().st_size > 10_000
    assert (shots / "viewer_only.png").stat().st_size > 5_000
