"""The screenshots of docs/app.md and the README, taken as a person uses the page: nada-app on the
built-in world, driven in headless Chromium (Debian's chromium, Playwright).

    python docs/recipes/app_screenshots.py                 # writes docs/app-*.png (about 5 minutes, 2 cores)
    python docs/recipes/app_screenshots.py --iterations 50 # quicker, a less finished domain
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

DOCS = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", default="", help="blank: the world's default for pixel")
    ap.add_argument("--port", type=int, default=7899)
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or sys.exit("needs Debian's chromium: apt-get install chromium")
    work = Path(tempfile.mkdtemp(prefix="nada-app-shots-"))
    app = subprocess.Popen(
        [sys.executable, "-c", "from nada_app.cli import main_entry; main_entry()", "--port", str(args.port),
         "--runs", str(work / "runs")],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    print(app.stdout.readline().strip(), flush=True)
    photo = work / "photo.png"  # a picture the generator never drew: a fresh render of the world's scenes
    import torch

    from nada_world.train_encoder import renders_of

    Image.fromarray(renders_of(torch.randn(1, 64, generator=torch.Generator().manual_seed(5)))[0][0]).save(
        photo
    )
    t0 = time.monotonic()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(f"http://127.0.0.1:{args.port}/")
            page.locator("#target textarea").fill("pixel")
            if args.iterations:
                page.locator("#iterations input").fill(str(args.iterations))
            page.locator("#start").click()
            page.wait_for_selector("#progress [data-status=running]", timeout=120_000)
            page.wait_for_function(
                "Number(document.querySelector('#progress [data-status]').dataset.step) > 0.4 * "
                "Number(document.querySelector('#progress [data-status]').dataset.iterations)",
                timeout=900_000,
            )
            page.screenshot(path=args.out / "app-train.png", full_page=True)
            page.wait_for_selector("#progress [data-status=finished]", timeout=900_000)
            print(f"trained in {time.monotonic() - t0:.0f} s", flush=True)
            page.get_by_role("tab", name="Runs").click()
            page.locator("#runs").get_by_label("pixel").check()
            page.locator("#show").click()
            page.wait_for_selector("#side img", timeout=120_000)
            time.sleep(1)
            page.screenshot(path=args.out / "app-runs.png")
            page.get_by_role("tab", name="Your photo").click()
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            page.locator("#photo-runs").get_by_label("pixel").check()
            page.locator("#draw").click()
            page.wait_for_function("document.querySelector('#photo-info').innerText.includes('PSNR')")
            page.wait_for_selector("#photo-out img", timeout=60_000)
            time.sleep(1)  # the image's own load after its element
            page.screenshot(path=args.out / "app-photo.png")
            page.get_by_role("tab", name="Serve").click()
            page.locator("#serve-runs").get_by_label("pixel").check()
            page.locator("#export").click()
            page.wait_for_function(
                "document.querySelector('#serve-info').innerText.includes('ready')", timeout=600_000
            )
            page.locator("#fetch").click()
            page.wait_for_function(
                "document.querySelector('#latency').innerText.includes('ms')", timeout=120_000
            )
            page.screenshot(path=args.out / "app-serve.png")
            print(page.inner_text("#serve-info"), "|", page.inner_text("#latency"))
            browser.close()
    finally:
        app.terminate()
        app.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
