"""nada-serve: run Triton (the binary bundled in nvidia-pytriton) on a model repository, on 127.0.0.1
unless --host says otherwise, and keep it serving (nada_serve.supervisor)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import typer

from nada_core.cli import run_app, typer_app
from nada_serve.server import TritonServer, is_loopback
from nada_serve.supervisor import Supervisor

app = typer_app(
    "Serve a model repository written by nada-export with tritonserver on 127.0.0.1 (or --host).\n\n"
    "Waits until every model is ready, prints the endpoints, then keeps them serving: a model whose "
    "process dies is reloaded (not ready meanwhile), a tritonserver that dies is restarted; each event is "
    "logged with the time it took. Stops cleanly on Ctrl-C or SIGTERM. Exits non-zero with the server's "
    "own error when a model fails to load (or, with --skip-unloadable, serves the rest and names it)."
)


@app.command()
def main(
    repository: Path = typer.Argument(..., help="Model repository (nada-export --repository)."),
    grpc_port: int = typer.Option(8001, help="gRPC port (0 = any free port)."),
    http_port: int = typer.Option(8000, help="HTTP port (0 = any free port)."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (0 = any free port)."),
    timeout: float = typer.Option(300, help="Seconds to wait for every model to load."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Anything but a loopback address lets other machines request images (model "
        "control stays restricted to nada-serve itself).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Echo the server's log."),
    skip_unloadable: bool = typer.Option(
        False,
        "--skip-unloadable",
        help="Serve the rest when tritonserver cannot load some models (and the ensembles that use them), "
        "naming them, instead of refusing to start; the export that changes them brings them back.",
    ),
) -> None:
    server = TritonServer(repository, grpc_port, http_port, metrics_port, host=host)
    if not is_loopback(host):
        print(
            f"nada-serve: warning: --host {host} is not a loopback address: every machine that can reach it "
            "can request images; put it behind a firewall or a gateway that authenticates",
            file=sys.stderr,
            flush=True,
        )
    stop = {"asked": False}

    def on_signal(signum, frame):
        if stop["asked"]:  # a second Ctrl-C or SIGTERM while stopping: the stop already under way finishes
            return
        stop["asked"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        supervisor = Supervisor(server, log=log, start_timeout=timeout, skip_unloadable=skip_unloadable)
        supervisor.start(echo=verbose)
        supervisor.check()  # a model process that died while the server came up is found before anything is printed
        ep = server.endpoints
        models = ", ".join(m["name"] for m in server.models() if m.get("state") == "READY")
        print(f"ready: grpc {ep.grpc}  http {ep.http}  metrics http://{ep.metrics}/metrics", flush=True)
        print(f"models: {models}", flush=True)
        if server.not_loaded:
            print(f"not served: {', '.join(sorted(server.not_loaded))}", flush=True)
        supervisor.watch(threading.Event())  # until Ctrl-C or SIGTERM, or what it cannot mend
    except KeyboardInterrupt:
        code = server.stop()
        print(f"stopped (tritonserver exit status {code})", flush=True)
    finally:  # giving up (or any error) ends the server with nada-serve: no tritonserver left orphaned
        server.stop()


def main_entry() -> None:
    run_app(app, "nada-serve")
