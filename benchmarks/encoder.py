"""What turning a photo into W+ costs beside drawing an image: the e4e encoder (IR-SE50, one pass),
ReStyle-e4e (five refinement steps, each an encoder pass and a drawing by the decoder) and the
decoder's synthesis, in PyTorch eager, onnxruntime and AOTInductor packages, at 256 px input; then
NAME_edit (photo -> image in a domain) and NAME (z -> image) served side by side by Triton.

    python -m benchmarks.encoder                           # CPU, 256 px decoder, batches 1 8
    python -m benchmarks.encoder --device cuda --size 1024 # the GPU recipe's rows

Random weights (speed does not depend on them), the authors' checkpoint layout, read back by
nada.load_encoder as a user's file is. Latency per call (p50/p90) and images/s, warm-up excluded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, machine_line, markdown_table
from benchmarks.inference import time_calls
from nada_core.fileio import write_json
from nada_export.graphs import GRAPHS, EncoderSource, example_inputs
from nada_train.checkpoints import random_generator
from nada_train.devices import resolve_device
from nada_train.encoders.heads import StyleEncoder
from nada_train.encoders.loading import LoadedEncoder, load_encoder

ALL_BACKENDS = ("eager", "onnxruntime", "aoti", "triton")
# what is measured: (row name, encoder kind or None for the decoder's synthesis)
SUBJECTS = (("e4e", "e4e"), ("restyle_e4e", "restyle_e4e"), ("synthesis", None))
AUTHORS_TYPES = {"e4e": "Encoder4Editing", "restyle_e4e": "ProgressiveBackboneEncoder"}


def write_encoder_checkpoint(kind: str, size: int, path: Path) -> Path:
    """An encoder file as the authors save one: random encoder and decoder weights."""
    decoder = random_generator(size)
    restyle = kind.startswith("restyle")
    encoder = StyleEncoder(decoder.n_latent, 6 if restyle else 3, pyramid=not restyle, progressive=True)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    opts = {"encoder_type": AUTHORS_TYPES[kind], "start_from_latent_avg": True}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": decoder.w_avg.clone()}, path)
    return path


def graph_of(encoder: LoadedEncoder, subject: str | None) -> tuple[str, object]:
    """(kind, source) of the graph measured: the encoder at its default steps, or its decoder."""
    if subject is None:
        return "synthesis", encoder.generator.generator
    return "encoder", EncoderSource(encoder, encoder.default_steps)


def measure(
    encoders, backends, batches, restyle_batches, device, folder: Path, warmup, requests, min_seconds
) -> list[dict]:
    rows = []
    for name, subject in SUBJECTS:
        sizes = restyle_batches if subject == "restyle_e4e" else batches
        encoder = encoders[subject or "e4e"]
        kind, source = graph_of(encoder, subject)
        module = GRAPHS[kind][0](source).eval()
        input_name = GRAPHS[kind][1][0]
        runners = {}
        if "eager" in backends:
            moved = module.to(device)
            runners["eager"] = lambda x, m=moved: m(torch.from_numpy(x).to(device))
        if "onnxruntime" in backends and device.type == "cpu":
            from nada_export.onnx_export import export_graph, onnx_session

            path = folder / f"{name}.onnx"
            t0 = time.perf_counter()
            export_graph(source, kind, path, max(sizes))
            print(f"  ({name}: ONNX export {time.perf_counter() - t0:.1f} s)", flush=True)
            session = onnx_session(path)
            runners["onnxruntime"] = lambda x, s=session, n=input_name: s.run(None, {n: x})[0]
        if "aoti" in backends and not (subject == "restyle_e4e" and device.type == "cpu"):
            from nada_export.aoti_engine import AotiRunner, build_package

            path = folder / f"{name}.pt2"
            t0 = time.perf_counter()
            build_package(source, kind, path, max(sizes), device.type)
            print(f"  ({name}: AOTInductor compile {time.perf_counter() - t0:.1f} s)", flush=True)
            runner = AotiRunner(path, str(device), [input_name])
            runners["aoti"] = lambda x, r=runner, n=input_name: r({n: x})
        for backend, run in runners.items():
            for b in sizes:
                x = example_inputs(source, kind, b, seed=7)[input_name].numpy()
                with torch.no_grad():
                    row = time_calls(lambda: run(x), b, warmup, requests, min_seconds)  # noqa: B023
                row.update(subject=name, backend=backend, batch=b)
                rows.append(row)
                print(
                    f"  {name:12s} {backend:12s} batch {b:2d}: p50 {row['p50_ms']:9.1f} ms  "
                    f"{row['images_per_s']:7.2f} img/s",
                    flush=True,
                )
        module.cpu()
    return rows


def measure_served(encoder_path: Path, folder: Path, batches, warmup, requests, min_seconds) -> list[dict]:
    """bench_edit (photo -> image: e4e, then the synthesis) beside bench (z -> image), one request in
    flight, through a real tritonserver (python backend, onnxruntime)."""
    from nada_export.pipeline import export
    from nada_serve.client import GeneratorClient
    from nada_serve.server import TritonServer

    repo = folder / "repo"
    t0 = time.perf_counter()
    export(
        [encoder_path], repo, names=["bench"], max_batch=max(batches), encoder=encoder_path, progress=False
    )
    print(f"  (served repository exported in {time.perf_counter() - t0:.1f} s)", flush=True)
    rows = []
    with TritonServer(repo) as server:
        url = server.endpoints.grpc
        with GeneratorClient(url, "bench") as client:
            for b in batches:
                photos = np.random.RandomState(b).randint(0, 256, (b, 256, 256, 3)).astype(np.uint8)
                z = np.random.RandomState(b).randn(b, client.model.z_dim).astype(np.float32)
                for model, call in (
                    ("bench_edit", lambda: client.edit(photos)),
                    ("bench", lambda: client.generate(z, 0.7)),
                ):  # noqa: B023
                    row = time_calls(call, b, warmup, requests, min_seconds)
                    row.update(subject=model, backend="triton", batch=b)
                    rows.append(row)
                    print(
                        f"  {model:12s} triton       batch {b:2d}: p50 {row['p50_ms']:9.1f} ms  "
                        f"{row['images_per_s']:7.2f} img/s",
                        flush=True,
                    )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="the decoder's resolution (config-f widths)")
    ap.add_argument("--backends", nargs="+", default=list(ALL_BACKENDS), choices=ALL_BACKENDS)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument(
        "--restyle-batches",
        type=int,
        nargs="+",
        default=[1],
        help="ReStyle's batches (five encoder passes and five drawings each: 10 s an image on 2 CPU cores)",
    )
    ap.add_argument("--requests", type=int, default=5, help="timed calls per point (at least)")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default="benchmarks/out/encoder.json")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    info = machine()
    print(f"encoders at 256 px input, decoder {args.size} px, on {machine_line(info)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="nada-bench-encoder-") as tmp:
        folder = Path(tmp)
        paths = {k: write_encoder_checkpoint(k, args.size, folder / f"{k}.pt") for k in AUTHORS_TYPES}
        encoders = {k: load_encoder(p) for k, p in paths.items()}
        rows = measure(
            encoders,
            args.backends,
            args.batches,
            args.restyle_batches,
            device,
            folder,
            args.warmup,
            args.requests,
            args.min_seconds,
        )
        if "triton" in args.backends:
            rows += measure_served(
                paths["e4e"], folder, args.batches, args.warmup, args.requests, args.min_seconds
            )
    eager = {(r["subject"], r["batch"]): r["p50_ms"] for r in rows if r["backend"] == "eager"}
    synthesis = {
        r["batch"]: r["p50_ms"] for r in rows if r["subject"] == "synthesis" and r["backend"] == "eager"
    }
    for r in rows:
        r.update(resolution=args.size, device=str(device))
        if (r["subject"], r["batch"]) in eager:
            r["speedup_vs_eager"] = eager[(r["subject"], r["batch"])] / r["p50_ms"]
        if r["batch"] in synthesis and r["backend"] == "eager":
            r["x_synthesis"] = r["p50_ms"] / synthesis[r["batch"]]
    write_json(args.json, {"machine": info, "records": rows})
    cols = [
        ("subject", "graph"),
        ("backend", "backend"),
        ("batch", "batch"),
        ("p50_ms", "p50 ms"),
        ("p90_ms", "p90 ms"),
        ("images_per_s", "img/s"),
        ("speedup_vs_eager", "x eager"),
        ("x_synthesis", "x synthesis (eager)"),
    ]
    print(f"\nencoders at 256 px, decoder {args.size} px, {machine_line(info)}\n")
    print(markdown_table(rows, cols))
    return rows


if __name__ == "__main__":
    main()
