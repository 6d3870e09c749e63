"""One served model for many lightweight domains against one model per domain (issue 25).

    python -m benchmarks.domains                     # 256 px: 1, 8 and 64 domains in one model; 8 models
    python -m benchmarks.domains --size 64 --domains 1 8 --separate 8 --requests 5

Each configuration is exported (ONNX, python backend) into a repository of its own and served by
nada-serve on 127.0.0.1; then, one at a time: the resident memory of tritonserver and its model
processes after a first request, the time from start to ready (every model loaded), and for a batch
of 8 images the latency (p50 over --requests) when the 8 are in 8 domains and when they are in one;
and the throughput of --clients clients sending mixed batches at once. The 8 separate models get the
8 images of 8 domains as 8 requests of 1 sent at once (one per model), the only way they can.

The domains are random edits of a random config-f base (styles offsets and channel multipliers of
about the size a trained run reaches): what a forward pass costs does not depend on what they learned.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from benchmarks.common import machine, machine_line, markdown_table
from benchmarks.inference import time_calls
from benchmarks.load import Server, rss_bytes, server_pids
from nada_core.fileio import write_json
from nada_export.pipeline import export
from nada_serve.client import GeneratorClient
from nada_train.checkpoints import LoadedGenerator, load_generator, random_generator, save_safetensors
from nada_train.domains import Domain, bake

BATCH = 8
SEEDS = list(range(BATCH))


def random_domains(base: LoadedGenerator, n: int, seed: int = 0) -> list[LoadedGenerator]:
    """n domains of `base`, alternately styles and channels, each a LoadedGenerator as a run's loads."""
    rng = torch.Generator().manual_seed(seed)
    made = []
    for i in range(n):
        form = ("styles", "channels")[i % 2]
        domain = Domain.zeros(base.generator, form)
        part = domain.shift if form == "styles" else domain.scale
        for name, t in part.items():
            part[name] = 0.1 * torch.randn(t.shape, generator=rng)
        domain.base_sha256 = base.sha256
        record = {"path": base.source, "sha256": base.sha256, "kind": base.kind}
        made.append(
            LoadedGenerator(bake(base.generator, domain), f"domain-{i}", "run", None, record, domain=domain)
        )
    return made


def served(repository: Path) -> tuple[Server, float]:
    t0 = time.monotonic()
    server = Server(repository)
    return server, time.monotonic() - t0


def p50_of(call, requests: int) -> float:
    """Seconds, after one warm-up request."""
    return time_calls(call, BATCH, warmup=1, requests=requests, min_seconds=0)["p50_ms"] / 1000


def throughput(call, clients: int, requests: int) -> float:
    """Images per second while `clients` threads each send `requests` batches of BATCH."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: [call() for _ in range(requests)], range(clients)))
    return clients * requests * BATCH / (time.perf_counter() - t0)


@contextmanager
def one_model_calls(url: str, n: int):
    """A batch of 8 in 8 domains (item i in domain i % n) and 8 in one: one request each."""
    mixed = [i % n for i in range(BATCH)]
    with GeneratorClient(url, "many") as client:
        yield (
            (lambda: client.generate(SEEDS, 0.7, domain=mixed)),
            (lambda: client.generate(SEEDS, 0.7, domain=0)),
        )


@contextmanager
def separate_models_calls(url: str, n: int):
    """Item i in model i % n: one request of one image per item, all at once; 8 in one: one request."""
    with ExitStack() as stack:
        clients = [stack.enter_context(GeneratorClient(url, f"d{i}")) for i in range(n)]
        pool = stack.enter_context(ThreadPoolExecutor(BATCH))
        yield (
            lambda: list(pool.map(lambda i: clients[i % n].generate([i], 0.7), range(BATCH))),
            lambda: clients[0].generate(SEEDS, 0.7),
        )


def measure(served_as: str, domains, folder: Path, requests: int, clients: int, one_model: bool) -> dict:
    n = len(domains)
    repo = folder / f"{'one' if one_model else 'separate'}-{n}"
    t0 = time.monotonic()
    names = [f"d{i}" for i in range(n)]
    export(domains, repo, names=names, domains="many" if one_model else None, max_batch=BATCH, progress=False)
    export_s = time.monotonic() - t0
    server, ready_s = served(repo)
    try:
        with (one_model_calls if one_model else separate_models_calls)(server.url, n) as (mixed, one):
            mixed()
            rss = rss_bytes(server_pids(server.proc.pid))
            p50_mixed, p50_one = p50_of(mixed, requests), p50_of(one, requests)
            images_per_s = throughput(mixed, clients, requests)
    finally:
        server.stop()
    return {
        "served": served_as,
        "domains": n,
        "models": 1 if one_model else n,
        "export_s": export_s,
        "ready_s": ready_s,
        "rss_mib": rss / 2**20,
        "p50_mixed_s": p50_mixed,
        "p50_one_domain_s": p50_one,
        "images_per_s": images_per_s,
    }


COLUMNS = [
    ("served", "served as"),
    ("export_s", "export s"),
    ("ready_s", "start to ready s"),
    ("rss_mib", "RSS MiB"),
    ("x_rss_of_one", "x RSS of 1 domain"),
    ("p50_mixed_s", f"p50 s, {BATCH} images in {BATCH} domains"),
    ("p50_one_domain_s", f"p50 s, {BATCH} in one domain"),
    ("x_mixed_of_one", "x mixed / one"),
    ("images_per_s", "images/s, mixed"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="config-f base of this many px (random weights)")
    ap.add_argument("--domains", type=int, nargs="+", default=[1, 8, 64], help="domains in the one model")
    ap.add_argument("--separate", type=int, default=8, help="domains served as that many models (0: none)")
    ap.add_argument("--requests", type=int, default=10, help="timed requests per latency, and per client")
    ap.add_argument("--clients", type=int, default=4, help="clients at once for the throughput")
    ap.add_argument("--json", default="benchmarks/out/domains.json")
    args = ap.parse_args()
    info = machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nada-bench-domains-") as tmp:
        folder = Path(tmp)
        ckpt = folder / "base.safetensors"
        save_safetensors(random_generator(args.size), ckpt)
        base = load_generator(ckpt, "cpu")
        pool = random_domains(base, max([*args.domains, args.separate]))
        for n in args.domains:
            served_as = f"one model, {n} domain{'s' * (n > 1)}"
            rows.append(measure(served_as, pool[:n], folder, args.requests, args.clients, one_model=True))
            print(f"  {rows[-1]['served']}: {rows[-1]['p50_mixed_s']:.3f} s", flush=True)
        if args.separate:
            served_as = f"{args.separate} models, one domain each"
            rows.append(measure(served_as, pool[: args.separate], folder, args.requests, args.clients, False))
            print(f"  {rows[-1]['served']}: {rows[-1]['p50_mixed_s']:.3f} s", flush=True)
    one = next((r for r in rows if r["domains"] == 1 and r["models"] == 1), None)
    for r in rows:
        r["x_mixed_of_one"] = r["p50_mixed_s"] / r["p50_one_domain_s"]
        if one:
            r["x_rss_of_one"] = r["rss_mib"] / one["rss_mib"]
    write_json(args.json, {"machine": info, "size": args.size, "batch": BATCH, "records": rows})
    print(f"\nMany domains served, {args.size} px config-f (random weights), ONNX, on {machine_line(info)}\n")
    print(markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
