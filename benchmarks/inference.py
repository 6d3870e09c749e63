"""Inference latency and throughput, side by side: PyTorch eager, torch.compile, AOTInductor packages
(nada-export --engine aoti), onnxruntime, Triton over gRPC (python backend on the bundled
tritonserver; triton-shm: images returned through system shared memory), and TensorRT / CUDA graphs
where present.

    python -m benchmarks.inference --quick                 # 64 px, under 5 minutes on 2 CPU cores
    python -m benchmarks.inference --size 256 --batches 1 4 --concurrency 1 4 16
    python -m benchmarks.inference --size 1024 --device cuda --backends eager compiled cudagraph onnxruntime

Every backend runs the same served graph: z, truncation -> mapping -> synthesis -> uint8 image.
Random weights (speed does not depend on them). Reports what perf_analyzer reports: p50/p90/p95/p99
latency per request and images/s, warm-up excluded; plus each backend's share of the compute floor
(multiply-accumulates per image / the matmul rate measured in the same run).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, machine_line, markdown_table
from nada_core.fileio import write_json
from nada_export.graphs import MappingGraph, SynthesisGraph
from nada_export.tensors import IO_NAMES, graph_precision, graph_tensors
from nada_train.checkpoints import load_generator, save_safetensors
from nada_train.devices import resolve_device
from nada_train.generator import Generator
from nada_train.generator.inference import inference_copy

ALL_BACKENDS = ("eager", "compiled", "cudagraph", "aoti", "onnxruntime", "triton", "triton-shm", "tensorrt")


# ---- what the machine can do -----------------------------------------------------------------
def macs_per_image(g: Generator) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    device = next(g.parameters()).device
    flags = [p.requires_grad for p in g.parameters()]
    g.requires_grad_(False)  # the counter's module hooks need tensors without autograd history
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            g.synthesis(g.broadcast(g.mapping(torch.randn(1, g.config.z_dim, device=device))))
    finally:
        for p, f in zip(g.parameters(), flags):
            p.requires_grad_(f)
    return counter.get_total_flops() / 2


def matmul_gflops(
    device: torch.device, dtype=torch.float32, n: int = 2048, repeats: int = 5, trials: int = 5
) -> float:
    """Peak rate of an n^3 matmul: the best of several trials (a shared machine only ever slows it)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- timing ----------------------------------------------------------------------------------
def summarise(latencies: list[float], images: int, wall: float) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "images_per_s": images / wall,
        "requests": len(latencies),
    }


def time_calls(call, batch: int, warmup: int, requests: int, min_seconds: float) -> dict:
    for _ in range(warmup):
        call()
    latencies, t_start = [], time.perf_counter()
    while len(latencies) < requests or time.perf_counter() - t_start < min_seconds:
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
        if len(latencies) >= 10 * requests:
            break
    return summarise(latencies, batch * len(latencies), time.perf_counter() - t_start)


def inputs(g: Generator, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(batch, g.config.z_dim, device=device)
    return z, torch.full((batch, 1), 0.7, device=device)


# ---- backends --------------------------------------------------------------------------------
class Pipeline(torch.nn.Module):
    def __init__(self, g: Generator):
        super().__init__()
        self.mapping, self.synthesis = MappingGraph(g), SynthesisGraph(g)

    def forward(self, z, truncation):
        return self.synthesis(self.mapping(z, truncation))


def torch_backend(g: Generator, kind: str, device: torch.device, precision: str):
    """PyTorch runs the inference copy nada-generate renders with: the synthesis convolutions at
    `precision` (fp32 styles and demodulation), channels_last on a GPU."""
    model = Pipeline(inference_copy(g, precision, channels_last=device.type == "cuda")).eval()

    def run_with(fn):
        def run(z, t):
            with torch.inference_mode():
                return fn(z, t)

        return run

    if kind == "eager":
        return run_with(model)
    if kind == "compiled":
        compiled = torch.compile(
            model, mode="max-autotune-no-cudagraphs" if device.type == "cuda" else "default", dynamic=False
        )
        return run_with(compiled)
    if kind == "cudagraph":
        return None if device.type != "cuda" else cuda_graph_runner(run_with(model))
    raise ValueError(kind)


def cuda_graph_runner(forward):
    """The eager model captured once per batch size into a CUDA graph and replayed: no kernel-launch
    cost per layer, no compile step (the graph-captured path the issue counts when TensorRT is absent)."""
    graphs: dict[int, tuple] = {}

    def run(z, t):
        if z.shape[0] not in graphs:
            static_z, static_t = z.clone(), t.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # cuDNN picks its algorithms outside the capture
                    forward(static_z, static_t)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = forward(static_z, static_t)
            graphs[z.shape[0]] = (graph, static_z, static_t, out)
        graph, static_z, static_t, out = graphs[z.shape[0]]
        static_z.copy_(z)
        static_t.copy_(t)
        graph.replay()
        return out

    return run


def measure_torch(g, kind, device, precision, batches, warmup, requests, min_seconds) -> list[dict]:
    run = torch_backend(g, kind, device, precision)
    if run is None:
        return []
    rows = []
    for b in batches:
        z, t = inputs(g, b, device)
        t0 = time.perf_counter()
        run(z, t)
        sync(device)
        first = time.perf_counter() - t0

        def call():
            run(z, t)
            sync(device)

        row = time_calls(call, b, warmup, requests, min_seconds)
        row.update(backend=kind, batch=b, concurrency=1, first_call_s=first)
        rows.append(row)
        print(
            f"  {kind:12s} batch {b:3d}: p50 {row['p50_ms']:9.1f} ms  {row['images_per_s']:8.2f} img/s",
            flush=True,
        )
    return rows


def measure_aoti(
    g, folder: Path, device: torch.device, batches, warmup, requests, min_seconds, max_batch, precision
) -> list[dict]:
    """The packages nada-export --engine aoti builds (freezing on), run in process."""
    from nada_export.aoti_engine import AotiRunner, build_package

    runners = {}
    for kind in ("mapping", "synthesis"):
        t0 = time.perf_counter()
        build_package(
            g,
            kind,
            folder / f"{kind}.pt2",
            max_batch,
            device.type,
            graph_precision(kind, precision),
        )
        print(f"  (aoti {kind} compiled in {time.perf_counter() - t0:.1f} s)", flush=True)
        runners[kind] = AotiRunner(folder / f"{kind}.pt2", str(device), IO_NAMES[kind][0])
    rows = []
    for b in batches:
        z, t = (x.cpu().numpy() for x in inputs(g, b, "cpu"))
        row = time_calls(
            lambda: runners["synthesis"]({"ws": runners["mapping"]({"z": z, "truncation": t})}),
            b,
            warmup,
            requests,
            min_seconds,
        )
        row.update(backend=f"aoti-{precision}" if precision != "fp32" else "aoti", batch=b, concurrency=1)
        rows.append(row)
        print(
            f"  aoti         batch {b:3d}: p50 {row['p50_ms']:9.1f} ms  {row['images_per_s']:8.2f} img/s",
            flush=True,
        )
    return rows


def export_onnx(g: Generator, folder: Path, max_batch: int) -> dict[str, Path]:
    from nada_export.onnx_export import export_graph

    paths = {k: folder / f"{k}.onnx" for k in ("mapping", "synthesis")}
    for k, p in paths.items():
        export_graph(g, k, p, max_batch)
    return paths


def measure_onnxruntime(g, paths, batches, warmup, requests, min_seconds, threads) -> list[dict]:
    from nada_export.onnx_export import onnx_session

    mapping, synthesis = onnx_session(paths["mapping"], threads), onnx_session(paths["synthesis"], threads)
    rows = []
    for b in batches:
        z, t = (x.cpu().numpy() for x in inputs(g, b, "cpu"))

        def call():
            ws = mapping.run(None, {"z": z, "truncation": t})[0]
            synthesis.run(None, {"ws": ws})

        row = time_calls(call, b, warmup, requests, min_seconds)
        row.update(
            backend="onnxruntime", batch=b, concurrency=1, providers=",".join(synthesis.get_providers())
        )
        rows.append(row)
        print(
            f"  onnxruntime  batch {b:3d}: p50 {row['p50_ms']:9.1f} ms  {row['images_per_s']:8.2f} img/s",
            flush=True,
        )
    return rows


def measure_triton_shm(url: str, z_dim: int, batches, warmup, requests, min_seconds) -> list[dict]:
    """One client, one request in flight, the images written into system shared memory: the same
    request as the 'triton' rows at concurrency 1, less the response's gRPC transfer."""
    from nada_serve.client import GeneratorClient

    rows = []
    with GeneratorClient(url, "bench", shared_memory=True) as client:
        for b in batches:
            z = np.random.randn(b, z_dim).astype(np.float32)
            row = time_calls(lambda: client.generate(z, 0.7), b, warmup, requests, min_seconds)
            row.update(
                backend="triton-shm",
                batch=b,
                concurrency=1,
                request_bytes=b * (z_dim + 1) * 4,
                response_bytes=0,
            )
            rows.append(row)
            print(
                f"  triton-shm   batch {b:3d}: p50 {row['p50_ms']:9.1f} ms  {row['images_per_s']:8.2f} img/s",
                flush=True,
            )
    return rows


def measure_triton(
    g_path: Path,
    folder: Path,
    batches,
    concurrencies,
    warmup,
    requests,
    min_seconds,
    max_batch,
    threads,
    shared_memory: bool = False,
) -> list[dict]:
    import tritonclient.grpc as grpcclient

    from nada_export.pipeline import export
    from nada_export.triton_repo import ServeOptions
    from nada_serve.server import TritonServer

    repo = folder / "repo"
    export(
        [str(g_path)],
        repo,
        names=["bench"],
        max_batch=max_batch,
        serve=ServeOptions(threads=threads, queue_delay_us=2000),
        progress=False,
    )
    rows = []
    with TritonServer(repo) as server:
        url = server.endpoints.grpc
        config = load_generator(g_path, "cpu").generator.config
        z_dim, size = config.z_dim, config.size
        for b in batches:
            for c in concurrencies:
                if b > 1 and c > 1 and b * c > max_batch:
                    continue  # more than one full batch in flight: nothing more to learn
                clients = [grpcclient.InferenceServerClient(url) for _ in range(c)]

                def request(client):
                    z = np.random.randn(b, z_dim).astype(np.float32)
                    a = grpcclient.InferInput("z", [b, z_dim], "FP32")
                    a.set_data_from_numpy(z)
                    t = grpcclient.InferInput("truncation", [b, 1], "FP32")
                    t.set_data_from_numpy(np.full((b, 1), 0.7, np.float32))
                    return client.infer("bench", [a, t]).as_numpy("image")

                for _ in range(warmup):
                    request(clients[0])
                latencies, errors, lock = [], [0], threading.Lock()
                total = max(requests, 2 * c)
                stop_at = time.perf_counter() + 600

                def worker(client):
                    while True:
                        with lock:
                            if len(latencies) >= total or time.perf_counter() > stop_at:
                                return
                        t0 = time.perf_counter()
                        try:
                            request(client)
                        except Exception:
                            with lock:
                                errors[0] += 1
                            continue
                        with lock:
                            latencies.append(time.perf_counter() - t0)

                t_start = time.perf_counter()
                threads_ = [threading.Thread(target=worker, args=(cl,)) for cl in clients]
                for th in threads_:
                    th.start()
                for th in threads_:
                    th.join()
                wall = time.perf_counter() - t_start
                row = summarise(latencies, b * len(latencies), wall)
                row.update(
                    backend="triton",
                    batch=b,
                    concurrency=c,
                    errors=errors[0],
                    request_bytes=b * (z_dim + 1) * 4,
                    response_bytes=b * size**2 * 3,
                )
                rows.append(row)
                print(
                    f"  triton       batch {b:3d} conc {c:3d}: p50 {row['p50_ms']:9.1f} ms  "
                    f"{row['images_per_s']:8.2f} img/s",
                    flush=True,
                )
                for cl in clients:
                    cl.close()
        if shared_memory:
            rows += measure_triton_shm(url, z_dim, batches, warmup, requests, min_seconds)
    return rows


def measure_tensorrt(
    g, folder, paths, batches, warmup, requests, min_seconds, max_batch, precision
) -> list[dict]:
    from nada_export.tensorrt_engine import EngineRunner, build_engine, tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason:
        print(f"  tensorrt     skipped: {reason}")
        return []

    def shapes(graph: str) -> dict[str, tuple[int, ...]]:
        return {t.name: t.dims for t in graph_tensors(g.config, graph)[0]}

    mapping = EngineRunner(build_engine(paths["mapping"], folder / "m.plan", shapes("mapping"), max_batch))
    synthesis = EngineRunner(
        build_engine(paths["synthesis"], folder / "s.plan", shapes("synthesis"), max_batch, precision)
    )
    rows = []
    for b in batches:
        z, t = (x.numpy() for x in inputs(g, b, "cpu"))
        row = time_calls(
            lambda: synthesis({"ws": mapping({"z": z, "truncation": t})}), b, warmup, requests, min_seconds
        )
        row.update(backend=f"tensorrt-{precision}", batch=b, concurrency=1)
        rows.append(row)
    return rows


# ---- report ----------------------------------------------------------------------------------
def add_ratios(rows: list[dict], floor_ms: float, macs: float) -> None:
    eager = {r["batch"]: r for r in rows if r["backend"] == "eager"}
    for r in rows:
        per_image_ms = 1000 / r["images_per_s"] if r["images_per_s"] else math.inf
        r["ms_per_image"] = per_image_ms
        r["floor_share"] = floor_ms / per_image_ms if per_image_ms else 0.0
        base = eager.get(r["batch"]) or eager.get(1)
        r["speedup_vs_eager"] = (r["images_per_s"] / base["images_per_s"]) if base else float("nan")
        r["gmac_per_image"] = macs / 1e9


def transfer_shares(rows: list[dict]) -> dict[int, float]:
    """Per batch: (p50 over gRPC - p50 with shared memory) / p50 over gRPC, at concurrency 1."""
    grpc = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "triton" and r["concurrency"] == 1}
    shm = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "triton-shm"}
    return {b: (grpc[b] - shm[b]) / grpc[b] for b in sorted(grpc.keys() & shm.keys())}


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = sorted(
            (r for r in rows if r["backend"] == backend), key=lambda r: (r["batch"], r["concurrency"])
        )
        pts = [(r["images_per_s"], r["p50_ms"], r) for r in mine]  # joined in order of load
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=backend)
        for x, y, r in pts:
            ax.annotate(
                f"b{r['batch']}" + (f"c{r['concurrency']}" if r["concurrency"] > 1 else ""),
                (x, y),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
    ax.set_xlabel("throughput (images/s)")
    ax.set_ylabel("p50 latency per request (ms)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--size", type=int, default=256, help="generator resolution (config-f widths, random weights)"
    )
    ap.add_argument("--generator", help="benchmark this checkpoint instead of a random config-f generator")
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["eager", "compiled", "onnxruntime", "triton", "tensorrt", "cudagraph"],
        choices=ALL_BACKENDS,
    )
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=20, help="timed requests per point (at least)")
    ap.add_argument(
        "--min-seconds", type=float, default=2.0, help="keep sampling until this much time has passed"
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--dtype",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="precision of the torch and aoti backends' synthesis convolutions (fp32 styles and demodulation)",
    )
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0 = all cores)")
    ap.add_argument(
        "--quick", action="store_true", help="64 px; eager, onnxruntime, triton; batches 1 4; concurrency 1 4"
    )
    ap.add_argument("--json", default="benchmarks/out/inference.json")
    ap.add_argument("--plot", default="benchmarks/out/inference.png")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.backends, args.batches, args.concurrency = (
            64,
            ["eager", "onnxruntime", "triton"],
            [1, 4],
            [1, 4],
        )
        args.requests, args.min_seconds = 6, 1.0
    device = resolve_device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    info = machine()
    # Triton's max_batch_size must let the dynamic batcher merge `concurrency` single-image requests
    max_batch = max(args.batches + args.concurrency)

    with tempfile.TemporaryDirectory(prefix="nada-bench-") as tmp:
        folder = Path(tmp)
        if args.generator:
            g_path = Path(args.generator)
        else:
            from nada_train.checkpoints import random_generator

            g_path = folder / f"random{args.size}.safetensors"
            save_safetensors(random_generator(args.size), g_path)
        g = load_generator(g_path, device).generator.requires_grad_(False)
        macs = macs_per_image(g)
        # the floor at the precision measured: on a GPU a large product (a 2048^3 one is launch-bound there)
        rate = matmul_gflops(device, dtype, n=8192 if device.type == "cuda" else 2048)
        floor_ms = 2 * macs / (rate * 1e9) * 1000
        print(
            f"{g.config.size} px: {macs / 1e9:.1f} GMAC/image; matmul {rate:.0f} GFLOP/s -> floor "
            f"{floor_ms:.1f} ms/image on {machine_line(info)}",
            flush=True,
        )
        rows: list[dict] = []
        for kind in ("eager", "compiled", "cudagraph"):
            if kind in args.backends:
                rows += measure_torch(
                    g, kind, device, args.dtype, args.batches, args.warmup, args.requests, args.min_seconds
                )
        if "aoti" in args.backends:
            rows += measure_aoti(
                load_generator(g_path, "cpu").generator,
                folder,
                device,
                args.batches,
                args.warmup,
                args.requests,
                args.min_seconds,
                max_batch,
                args.dtype,
            )
        needs_onnx = {"onnxruntime", "triton", "triton-shm", "tensorrt"} & set(args.backends)
        if needs_onnx:
            g_cpu = load_generator(g_path, "cpu").generator
            t0 = time.perf_counter()
            paths = export_onnx(g_cpu, folder, max_batch)
            print(f"  (ONNX export {time.perf_counter() - t0:.1f} s)", flush=True)
            if "onnxruntime" in args.backends:
                rows += measure_onnxruntime(
                    g_cpu, paths, args.batches, args.warmup, args.requests, args.min_seconds, args.threads
                )
            if "tensorrt" in args.backends:
                rows += measure_tensorrt(
                    g_cpu,
                    folder,
                    paths,
                    args.batches,
                    args.warmup,
                    args.requests,
                    args.min_seconds,
                    max_batch,
                    "fp16" if args.dtype != "fp32" else "fp32",
                )
            if {"triton", "triton-shm"} & set(args.backends):
                rows += measure_triton(
                    g_path,
                    folder,
                    args.batches,
                    args.concurrency,
                    args.warmup,
                    args.requests,
                    args.min_seconds,
                    max_batch,
                    args.threads,
                    shared_memory="triton-shm" in args.backends,
                )
    for r in rows:
        r.update(resolution=g.config.size, device=str(device), dtype=args.dtype)
        r.setdefault("errors", 0)
    add_ratios(rows, floor_ms, macs)
    write_json(
        args.json,
        {
            "machine": info,
            "gmac_per_image": macs / 1e9,
            "matmul_gflops": rate,
            "floor_ms_per_image": floor_ms,
            "records": rows,
        },
    )
    title = f"nada inference, {g.config.size} px, {machine_line(info)}"
    plot(rows, Path(args.plot), title.replace(", ", "\n", 1))
    cols = [
        ("backend", "backend"),
        ("batch", "batch"),
        ("concurrency", "conc"),
        ("p50_ms", "p50 ms"),
        ("p90_ms", "p90 ms"),
        ("p95_ms", "p95 ms"),
        ("p99_ms", "p99 ms"),
        ("images_per_s", "img/s"),
        ("ms_per_image", "ms/img"),
        ("speedup_vs_eager", "x eager"),
        ("floor_share", "share of floor"),
        ("errors", "errors"),
    ]
    wire = next((r for r in rows if "request_bytes" in r), None)
    print(
        f"\n{title}: {macs / 1e9:.1f} GMAC/image, floor {floor_ms:.1f} ms/image ({rate:.0f} GFLOP/s matmul)"
    )
    if wire:
        print(
            f"gRPC payload per image: request {wire['request_bytes'] // wire['batch']} B (z + truncation, "
            f"FP32), response {wire['response_bytes'] // wire['batch']} B (UINT8 image)"
        )
    for b, share in transfer_shares(rows).items():
        print(
            f"batch {b}: the response's gRPC transfer is {100 * share:.0f}% of the triton p50 (triton vs "
            "triton-shm, concurrency 1)"
        )
    print(f"JSON: {args.json}  plot: {args.plot}\n")
    print(markdown_table(rows, cols))
    return rows


if __name__ == "__main__":
    main()
