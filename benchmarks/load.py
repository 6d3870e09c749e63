"""Load on nada-serve as an operator would send it: N clients x M requests of batch 1 over gRPC, a
share of them bad (NaN in z, z of half the width, FP64 instead of FP32, a batch over the maximum,
an unknown model), optionally a fault mid-run (kill -9 one model's python-backend process, or the
tritonserver itself). Reports good requests answered/failed (before, during and after the fault),
bad ones refused/accepted, p50/p99 latency, requests/s, the recovery time nada-serve logged, and the
server's resident memory (tritonserver and its model processes) before and after.

    python -m benchmarks.load                                   # 16 clients x 1,000 requests, 10% bad
    python -m benchmarks.load --fault kill-model --fault-at 0.5 # and one model process killed half-way
    python -m benchmarks.load --clients 4 --requests 50 --fault kill-server

It exports the built-in base (and runs/default, the install's default run, when present) at 64 px into a
temporary repository, unless --repository names one nada-export wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import machine, machine_line, markdown_table
from nada_core.fileio import write_json

BAD_KINDS = ("nan", "shape", "dtype", "batch", "model")
EVENT = re.compile(r"nada-serve: \S+ \S+ (\S+): (.*); (reloaded|restarted on the same ports) in ([\d.]+) s")


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def server_pids(serve_pid: int) -> list[int]:
    """tritonserver under nada-serve, and its python-backend processes."""
    out = subprocess.run(
        ["pgrep", "-P", str(serve_pid), "-f", "bin/tritonserver"], capture_output=True, text=True
    ).stdout.split()
    pids = [int(p) for p in out]
    for p in list(pids):
        pids += [
            int(c)
            for c in subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout.split()
        ]
    return pids


class Server:
    """nada-serve as a subprocess on 127.0.0.1 (on free ports, or the three given); its log lines kept
    with their times. Returns once nada-serve says it is ready."""

    def __init__(self, repository: Path, ports: tuple[int, int, int] = (0, 0, 0)):
        grpc, http, metrics = map(str, ports)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from nada_serve.cli.serve import main_entry; sys.argv[0]='nada-serve'; "
                "main_entry()",
                str(repository),
                "--grpc-port",
                grpc,
                "--http-port",
                http,
                "--metrics-port",
                metrics,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready:"):
            raise SystemExit(f"nada-serve did not start: {ready}{self.proc.stderr.read()}")
        self.url = ready.split()[2]
        self.events: list[tuple[float, str]] = []
        threading.Thread(
            target=lambda: [
                self.events.append((time.monotonic(), line.strip())) for line in self.proc.stderr
            ],
            daemon=True,
        ).start()

    def tritonserver_pid(self) -> int:
        return server_pids(self.proc.pid)[0]

    def wait_event(self, pattern: re.Pattern, after: float, timeout: float) -> tuple[float, re.Match] | None:
        """The first log line matching `pattern` logged at or after `after` (monotonic), waiting up to
        `timeout` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            for t, line in list(self.events):
                if t >= after and (m := pattern.search(line)):
                    return t, m
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (a killed nada-serve would leave its tritonserver behind), then SIGKILL after 60 s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def make_repository(folder: Path, max_batch: int) -> tuple[Path, dict]:
    from nada_export.pipeline import export
    from nada_train.bases import default_base

    sources = {"shapes": str(default_base().generator)}
    if (Path("runs/default") / "generator.safetensors").exists():
        sources["pixel"] = "runs/default"
    else:  # the base twice: the load is the same
        sources["shapes2"] = sources["shapes"]
    repo = folder / "repo"
    export(list(sources.values()), repo, names=list(sources), max_batch=max_batch, progress=False)
    return repo, sources


def read_manifest(repo: Path) -> tuple[list[str], int, int]:
    manifest = json.loads((repo / "manifest.json").read_text())
    models = manifest["models"]
    first = next(iter(models.values()))
    return list(models), int(first["z_dim"]), int(manifest["max_batch"])


def request_arrays(
    kind: str, rng: np.random.Generator, z_dim: int, max_batch: int
) -> tuple[np.ndarray, np.ndarray]:
    batch = max_batch + 1 if kind == "batch" else 1
    z = rng.standard_normal((batch, z_dim // 2 if kind == "shape" else z_dim)).astype(
        np.float64 if kind == "dtype" else np.float32
    )
    if kind == "nan":
        z[0, 0] = np.nan
    return z, np.full((batch, 1), 0.7, np.float32)


def run_load(
    url: str,
    models: list[str],
    z_dim: int,
    max_batch: int,
    clients: int,
    requests: int,
    bad_share: float,
    fault=None,
    fault_at: float = 0.5,
    seed: int = 0,
) -> list[dict]:
    """Each client sends `requests` requests one after another; returns one record per request."""
    import tritonclient.grpc as grpcclient

    records: list[dict] = []
    lock, sent, fault_done = threading.Lock(), [0], threading.Event()
    total = clients * requests

    def client(c: int):
        rng = np.random.default_rng(seed * 1000 + c)
        conn = grpcclient.InferenceServerClient(url)
        for i in range(requests):
            bad = rng.random() < bad_share
            kind = BAD_KINDS[(c + i) % len(BAD_KINDS)] if bad else "good"
            model = "no_such_model" if kind == "model" else models[(c + i) % len(models)]
            z, t = request_arrays(kind, rng, z_dim, max_batch)
            zin = grpcclient.InferInput("z", list(z.shape), "FP64" if z.dtype == np.float64 else "FP32")
            zin.set_data_from_numpy(z)
            tin = grpcclient.InferInput("truncation", list(t.shape), "FP32")
            tin.set_data_from_numpy(t)
            t0 = time.monotonic()
            try:
                image = conn.infer(model, [zin, tin], client_timeout=60).as_numpy("image")
                ok, error = image is not None and image.shape[0] == z.shape[0], ""
            except Exception as e:  # noqa: BLE001 - every failure is a result here
                ok, error = False, str(e).splitlines()[0][:200]
            rec = {
                "client": c,
                "kind": kind,
                "model": model,
                "start": t0,
                "seconds": time.monotonic() - t0,
                "ok": ok,
                "error": error,
            }
            with lock:
                records.append(rec)
                sent[0] += 1
                due = fault is not None and not fault_done.is_set() and sent[0] >= fault_at * total
                if due:
                    fault_done.set()
            if due:
                fault()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return records


def summarise(records: list[dict], wall: float, fault_time: float | None, back_time: float | None) -> dict:
    good = [r for r in records if r["kind"] == "good"]
    bad = [r for r in records if r["kind"] != "good"]
    lat = np.array([r["seconds"] for r in good if r["ok"]]) * 1000
    out = {
        "requests": len(records),
        "good": len(good),
        "good_answered": sum(r["ok"] for r in good),
        "good_failed": sum(not r["ok"] for r in good),
        "bad": len(bad),
        "bad_refused": sum(not r["ok"] for r in bad),
        "bad_accepted": sum(r["ok"] for r in bad),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "requests_per_s": len(records) / wall,
        "wall_s": wall,
    }
    out["bad_refused_by_kind"] = {k: sum(not r["ok"] for r in bad if r["kind"] == k) for k in BAD_KINDS}
    out["bad_by_kind"] = {k: sum(1 for r in bad if r["kind"] == k) for k in BAD_KINDS}
    if fault_time is not None:
        end = back_time if back_time is not None else float("inf")
        out["good_failed_before_fault"] = sum(not r["ok"] for r in good if r["start"] < fault_time)
        out["good_failed_until_recovered"] = sum(not r["ok"] for r in good if fault_time <= r["start"] < end)
        out["good_after_recovery"] = sum(1 for r in good if r["start"] >= end)
        out["good_failed_after_recovery"] = sum(not r["ok"] for r in good if r["start"] >= end)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--repository", type=Path, help="a repository nada-export wrote (default: the built-in base at 64 px)"
    )
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=1000, help="requests per client")
    ap.add_argument(
        "--bad", type=float, default=0.1, help="share of bad requests, spread over: " + ", ".join(BAD_KINDS)
    )
    ap.add_argument("--fault", choices=["none", "kill-model", "kill-server"], default="none")
    ap.add_argument("--fault-at", type=float, default=0.5, help="when, as a share of the requests sent")
    ap.add_argument(
        "--fault-model", help="whose process kill-model kills (default: the first generator's synthesis)"
    )
    ap.add_argument("--max-batch", type=int, default=4, help="of the repository made when none is given")
    ap.add_argument("--json", default="benchmarks/out/load.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nada-load-") as tmp:
        repo = args.repository
        if repo is None:
            repo, sources = make_repository(Path(tmp), args.max_batch)
            print(f"repository: {', '.join(f'{k} ({v})' for k, v in sources.items())}", flush=True)
        models, z_dim, max_batch = read_manifest(repo)
        server = Server(repo)
        try:
            run_load(server.url, models, z_dim, max_batch, 2, 5, 0.0)  # warm-up
            rss_before = rss_bytes(server_pids(server.proc.pid))
            fault_time: list[float] = []

            def fault():
                from nada_serve.supervisor import stub_processes

                fault_time.append(time.monotonic())
                tritonserver = server.tritonserver_pid()
                if args.fault == "kill-server":
                    signal_pid = tritonserver
                else:
                    target = args.fault_model or f"{models[0]}_synthesis"
                    signal_pid = next(
                        s.pid for s in stub_processes(tritonserver).values() if s.model == target
                    )
                print(
                    f"  fault: kill -9 {'tritonserver' if args.fault == 'kill-server' else target} (pid "
                    f"{signal_pid})",
                    flush=True,
                )
                os.kill(signal_pid, signal.SIGKILL)
                # the client that struck waits for nada-serve's word that it recovered (the others go on
                # sending meanwhile), so requests after the recovery are always measured
                server.wait_event(EVENT, fault_time[0], 60)

            t0 = time.monotonic()
            records = run_load(
                server.url,
                models,
                z_dim,
                max_batch,
                args.clients,
                args.requests,
                args.bad,
                fault if args.fault != "none" else None,
                args.fault_at,
            )
            wall = time.monotonic() - t0
            rss_after = rss_bytes(server_pids(server.proc.pid))
            recovered = server.wait_event(EVENT, fault_time[0], 0) if fault_time else None
        finally:
            status = server.stop()
    back_time = recovered[0] if recovered else None
    summary = summarise(records, wall, fault_time[0] if fault_time else None, back_time)
    summary.update(
        clients=args.clients,
        requests_per_client=args.requests,
        bad_share=args.bad,
        fault=args.fault,
        rss_before_mib=rss_before / 2**20,
        rss_after_mib=rss_after / 2**20,
        rss_growth=(rss_after - rss_before) / rss_before if rss_before else float("nan"),
        recovery_s=float(recovered[1].group(4)) if recovered else None,
        detected_and_recovered_s=(back_time - fault_time[0]) if recovered else None,
        nada_serve_exit_status=status,
        machine=machine(),
    )
    print(f"\nnada-serve load, {machine_line(summary['machine'])}; models {', '.join(models)}\n")
    cols = [
        ("clients", "clients"),
        ("requests", "requests"),
        ("good_answered", "good answered"),
        ("good_failed", "good failed"),
        ("bad_refused", "bad refused"),
        ("bad_accepted", "bad accepted"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("requests_per_s", "req/s"),
        ("rss_before_mib", "RSS before MiB"),
        ("rss_after_mib", "RSS after MiB"),
    ]
    print(markdown_table([summary], cols))
    if args.fault != "none":
        print(
            "\n"
            f"fault {args.fault}: recovered in {summary['recovery_s']} s by nada-serve's log "
            f"({summary['detected_and_recovered_s']} s from the kill to the log line); good requests failed "
            f"until then: {summary.get('good_failed_until_recovered')}, after: "
            f"{summary.get('good_failed_after_recovery')} of {summary.get('good_after_recovery')}"
        )
    write_json(args.json, summary)
    print(f"JSON: {args.json}")
    return summary


if __name__ == "__main__":
    main()
