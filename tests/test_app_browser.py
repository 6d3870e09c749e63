"""nada-app as a person uses it, in a real headless Chromium (Debian's chromium, driven by Playwright):
type a target, start a 3-iteration run on a random base, watch the progress and the sample grid appear,
see the run in the gallery; the page's pixels are the run's own sample PNG. A second page neither sees
nor stops the first's training, and a bad input is one line in the page."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from nada_serve.server import free_port
from tests.conftest import wait_for, write_base_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI must run the browser test: install Debian's chromium (install.sh does where apt can)"
            )
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, clip_config_dir):
    folder = tmp_path_factory.mktemp("app")
    base = write_base_checkpoint(folder)
    port = free_port()
    temp = folder / "tmp"  # the app's temporary folders land here, to be seen gone after it stops
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from nada_app.cli import main_entry; main_entry()", "--port", str(port),
         "--runs", str(folder / "runs"), "--base", str(base), "--clip", "nada-test-tiny:random"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )  # fmt: skip
    ready = proc.stdout.readline()
    assert ready.startswith("nada-app: ready on http://127.0.0.1:"), ready + proc.stderr.read()
    assert len([p for p in temp.iterdir() if p.name.startswith("nada-app-")]) == 1  # the page's work folder
    yield f"http://127.0.0.1:{port}/", folder / "runs"
    proc.terminate()  # as a service manager stops it: the same clean exit as Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.splitlines()[-1] == "nada-app: stopped", out + err
    assert not [p.name for p in temp.iterdir() if p.name.startswith("nada-app-")]


def pixels_of_data_uri(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def test_train_watch_and_compare_in_chromium(app, chromium, tmp_path):
    # app first: torn down after the browser has closed its pages, so the page stops at once
    url, runs = app
    t0 = time.monotonic()
    page = chromium.new_page(viewport={"width": 1200, "height": 1400}, device_scale_factor=1)
    page.goto(url)
    page.locator("#target textarea").fill("pencil sketch")
    page.locator("#iterations input").fill("3")
    page.locator("#start").click()
    page.wait_for_selector("#progress [data-status=finished]", timeout=120_000)
    status = page.locator("#progress [data-status]")
    assert (status.get_attribute("data-step"), status.get_attribute("data-iterations")) == ("3", "3")
    assert status.inner_text().startswith("pencil sketch: finished, step 3 of 3, loss ")
    assert page.locator("#progress progress").get_attribute("value") == "3"

    image = page.locator("#sample img")
    wait_for(lambda: image.get_attribute("data-step") == "3", 30, "the last sample grid")
    sample_png = runs / "pencil-sketch" / "samples" / "step-000003.png"
    assert image.get_attribute("data-sample") == str(sample_png)
    want = np.asarray(Image.open(sample_png).convert("RGB"))
    assert np.array_equal(pixels_of_data_uri(image.get_attribute("src")), want)
    # what the browser drew: the grid pixel for pixel (at its own size), and not a blank
    box = image.bounding_box()
    clip = {"x": round(box["x"]), "y": round(box["y"]), "width": want.shape[1], "height": want.shape[0]}
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))
    assert (box["width"], box["height"]) == (want.shape[1], want.shape[0]) and shot.shape == want.shape
    assert np.abs(shot.astype(int) - want).max() <= 2
    assert shot.std() > 10
    assert "pencil sketch: finished" in page.inner_text("#jobs")
    page.reload()  # the same person after a reload: their training is shown again
    page.wait_for_selector("#progress [data-status=finished]", timeout=30_000)
    assert "pencil sketch: finished" in page.inner_text("#jobs")

    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs").get_by_label("pencil-sketch").check()
    page.locator("#seeds textarea").fill("0-2")
    page.locator("#show").click()
    page.wait_for_selector("#side img", timeout=60_000)
    wait_for(lambda: "pencil-sketch" in page.inner_text("#side-labels"), 30, "the gallery's labels")
    assert page.inner_text("#side-labels") == "Rows, top to bottom: base (base.pt), pencil-sketch"
    page.screenshot(path=tmp_path / "gallery.png", full_page=True)
    print(f"browser test: trained, watched and compared in {time.monotonic() - t0:.1f} s")


def test_a_second_page_neither_sees_nor_stops_the_first_and_errors_are_one_line(app, chromium):
    url, _ = app
    first = chromium.new_context().new_page()
    first.goto(url)
    first.locator("#target textarea").fill("neon")
    first.locator("#iterations input").fill("5000")
    first.locator("#start").click()
    first.wait_for_selector("#progress [data-status=running]", timeout=60_000)

    second = chromium.new_context().new_page()
    second.goto(url)
    second.locator("#stop").click()
    toast = second.get_by_text("nothing to stop: start a training first")
    toast.wait_for(timeout=30_000)
    time.sleep(1.5)  # a few of the page's polls
    assert "no training started from this page" in second.inner_text("#progress")
    # no job listed (the element's text may also hold Gradio's own "0.0s" timer while a poll is pending)
    assert second.locator("#jobs li").count() == 0 and "neon" not in second.inner_text("#jobs")
    assert first.locator("#progress [data-status]").get_attribute("data-status") == "running"

    second.locator("#target textarea").fill("   ")
    second.locator("#start").click()
    second.get_by_text("'Target text': type the new domain's text").wait_for(timeout=30_000)
    assert "Traceback" not in second.content()

    first.locator("#stop").click()
    first.wait_for_selector("#progress [data-status=stopped]", timeout=60_000)
