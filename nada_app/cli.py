"""nada-app: the web page, on 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

import typer

from nada_core.cli import run_app, typer_app

app = typer_app(
    "A local web page for the whole loop: type a target and watch a run train (its progress and sample grid "
    "update as it goes; stop and resume it; several queue and run one at a time), compare finished runs with "
    "the same seeds in every domain, draw your own photo in every domain, export runs to Triton and fetch "
    "images from it over gRPC with the latency measured. Each page sees and stops only its own trainings."
)


@app.command()
def main(
    port: int = typer.Option(7860, help="Port of the page."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on; anything but a loopback address lets other machines train here.",
    ),
    runs: Path = typer.Option(
        Path("runs/app"), help="Folder of the page's runs (one directory per training)."
    ),
    base: str = typer.Option("builtin:world", help="The base generator the page proposes."),
    clip: str = typer.Option("", help="The CLIP the page proposes (blank: the base's own, else ViT-B-32)."),
    shape_predictor: Path = typer.Option(
        None,
        help="dlib's 68-landmark model, to align faces before inverting them (the photo tab's checkbox).",
    ),
) -> None:
    from nada_app.jobs import TrainingQueue
    from nada_app.page import CSS, build_page
    from nada_serve.server import is_loopback
    from nada_train.alignment import check_face_detection

    if shape_predictor is not None:  # the photo tab's checkbox would fail at the first photo
        check_face_detection(shape_predictor)

    if not is_loopback(host):
        print(
            f"nada-app: warning: --host {host} is not a loopback address: every machine that can reach it can "
            "train and export here",
            file=sys.stderr,
        )

    def on_sigterm(signum, frame):  # a service manager's stop: the same clean exit as Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    queue = TrainingQueue(runs)
    # what lasts only while the page does (the served repository, photo grids): removed on the way out
    with tempfile.TemporaryDirectory(prefix="nada-app-") as work:
        page = build_page(queue, Path(work), base, clip, shape_predictor)
        try:
            page.queue(default_concurrency_limit=4).launch(
                server_name=host,
                server_port=port,
                show_error=True,
                quiet=True,
                css=CSS,
                prevent_thread_lock=True,
            )
            print(f"nada-app: ready on http://{host}:{port} (runs in {runs})", flush=True)
            page.block_thread()  # returns on Ctrl-C or SIGTERM: it catches the KeyboardInterrupt itself
        except KeyboardInterrupt:  # one that came while the page was starting
            pass
        finally:
            queue.close()
            page.serving.stop()
            page.close(verbose=False)
    print("nada-app: stopped", flush=True)


def main_entry() -> None:
    run_app(app, "nada-app", {"shape_predictor": "--shape-predictor"})
