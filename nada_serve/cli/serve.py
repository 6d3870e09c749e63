"""nada-serve: run Triton (the binary bundled in nvidia-pytriton) on a model repository, on 127.0.0.1."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from nada_serve.server import TritonServer
from nada_train.cli.common import run_app, typer_app

app = typer_app(
    "Serve a model repository written by nada-export with tritonserver on 127.0.0.1.\n\n"
    "Waits until every model is ready, prints the endpoints, stops cleanly on Ctrl-C or SIGTERM. "
    "Exits non-zero with the server's own error when a model fails to load."
)


@app.command()
def main(
    repository: Path = typer.Argument(..., help="Model repository (nada-export --repository)."),
    grpc_port: int = typer.Option(8001, help="gRPC port (0 = any free port)."),
    http_port: int = typer.Option(8000, help="HTTP port (0 = any free port)."),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port (0 = any free port)."),
    timeout: float = typer.Option(300, help="Seconds to wait for every model to load."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Echo the server's log."),
) -> None:
    server = TritonServer(repository, grpc_port, http_port, metrics_port)
    stop = {"asked": False}

    def on_signal(signum, frame):
        stop["asked"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start(timeout=timeout, echo=verbose)
        ep = server.endpoints
        models = ", ".join(m["name"] for m in server.models())
        print(f"ready: grpc {ep.grpc}  http {ep.http}  metrics http://{ep.metrics}/metrics", flush=True)
        print(f"models: {models}", flush=True)
        code = server.process.wait()
        print(f"nada-serve: tritonserver exited with status {code}:\n{server.errors()}", file=sys.stderr)
        sys.exit(code or 1)
    except KeyboardInterrupt:
        code = server.stop()
        print(f"stopped (tritonserver exit status {code})", flush=True)


def main_entry() -> None:
    run_app(app, "nada-serve")
