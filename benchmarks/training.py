"""Training speed: seconds per iteration and per adaptation, split by phase.

    python -m benchmarks.training --size 256 --clip ViT-B-32:random --iterations 4
    python -m benchmarks.training --quick          # 64 px, finishes in about a minute on 2 CPU cores
    python -m benchmarks.training --size 64 --layers auto --targets 1 8   # one run of 1 target vs 8 targets

Random weights (generator and CLIP) are fine here: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import machine, machine_line, markdown_table
from nada_train.fileio import write_json
from nada_train.checkpoints import random_generator, save_safetensors
from nada_train.clip import parse_clip_spec
from nada_train.run_dir import RunDir
from nada_train.trainer import TrainOptions, build

PHASES = ["layer_selection", "generator_forward", "clip_forward", "backward", "optimizer"]


def measure(size: int, clips: list[str], layers: str, iterations: int, batch: int, device: str, precision: str, fused: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "g.safetensors"
        save_safetensors(random_generator(size), ckpt)
        opts = TrainOptions(generator=str(ckpt), out=str(Path(tmp) / "run"), target="sketch",
                            clip=[parse_clip_spec(c) for c in clips], iterations=iterations + 1, batch=batch,
                            layers=layers, device=device, precision=precision, fused=fused)
        trainer = build(opts, RunDir(opts.out), resume=False)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        records = [trainer.step() for _ in range(iterations + 1)]
        wall = time.perf_counter() - t0
    timed = records[1:]  # the first step warms up kernels and caches
    row = {"size": size, "batch": batch, "clip": "+".join(clips), "layers": layers, "precision": precision,
           "fused": fused, "iterations_timed": len(timed),
           "s_per_it": statistics.mean(r["seconds"] for r in timed),
           "wall_s_incl_warmup": wall}
    for p in PHASES:
        row[p] = statistics.mean(r["phases"][p] for r in timed)
    row["min_per_300_it"] = row["s_per_it"] * 300 / 60
    if trainer.device.type == "cuda":
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def measure_targets(size: int, clips: list[str], layers: str, iterations: int, batch: int, device: str, count: int) -> dict:
    """Wall time of one nada-train run of `count` targets (nada_train.many), loading included."""
    from nada_train.many import train_many

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "g.safetensors"
        save_safetensors(random_generator(size), ckpt)
        plan = [TrainOptions(generator=str(ckpt), out=str(Path(tmp) / "runs" / f"t{i}"), target=f"style number {i}",
                             clip=[parse_clip_spec(c) for c in clips], iterations=iterations, batch=batch, layers=layers,
                             device=device, n_sample=4, sample_every=iterations, save_every=iterations) for i in range(count)]
        t0 = time.perf_counter()
        train_many(plan, Path(tmp) / "runs", progress=False)
        wall = time.perf_counter() - t0
    return {"size": size, "batch": batch, "clip": "+".join(clips), "layers": layers, "targets": count,
            "iterations": iterations, "wall_s": wall, "s_per_target": wall / count}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs="+", default=[256])
    ap.add_argument("--clip", action="append", help="repeatable; default ViT-B-32:random")
    ap.add_argument("--layers", nargs="+", default=["auto", "all"], help="auto and/or all/texture/shape")
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--fused", action="store_true", help="grouped-conv modulated convolutions")
    ap.add_argument("--quick", action="store_true", help="64 px, 2 timed iterations, layers auto only")
    ap.add_argument("--targets", type=int, nargs="+", help="instead: wall time of one run with this many targets each "
                    "(--iterations each, loading included), side by side, e.g. --targets 1 8")
    ap.add_argument("--json", default="benchmarks/out/training.json")
    args = ap.parse_args()
    clips = args.clip or ["ViT-B-32:random"]
    if args.quick:
        args.size, args.iterations, args.layers = [64], 2, ["auto"]
    info = machine()
    if args.targets:
        rows = [measure_targets(size, clips, args.layers[0], args.iterations, args.batch, args.device, n)
                for size in args.size for n in args.targets]
        for r in rows:
            one = next(o for o in rows if o["size"] == r["size"] and o["targets"] == min(args.targets))
            r["x_wall_of_fewest"] = r["wall_s"] / one["wall_s"]
        write_json(args.json, {"machine": info, "records": rows})
        print(f"\nSeveral targets in one run on {machine_line(info)}\n")
        print(markdown_table(rows, [("size", "px"), ("clip", "CLIP"), ("layers", "layers"), ("targets", "targets"),
                                    ("iterations", "it each"), ("wall_s", "wall s"), ("s_per_target", "s per target"),
                                    ("x_wall_of_fewest", f"x wall of {min(args.targets)}")]))
        return
    rows = []
    for size in args.size:
        for layers in args.layers:
            for precision in args.precision:
                rows.append(measure(size, clips, layers, args.iterations, args.batch, args.device, precision, args.fused))
                print(f"  {size}px layers={layers} {precision}: {rows[-1]['s_per_it']:.2f} s/it", flush=True)
    write_json(args.json, {"machine": info, "records": rows})
    cols = [("size", "px"), ("batch", "batch"), ("clip", "CLIP"), ("layers", "layers"), ("precision", "precision"),
            ("s_per_it", "s/it"), ("min_per_300_it", "min/300 it")] + [(p, p + " s") for p in PHASES]
    if any("peak_gpu_gib" in r for r in rows):
        cols.append(("peak_gpu_gib", "peak GPU GiB"))
    print(f"\nTraining speed on {machine_line(info)}\n")
    print(markdown_table(rows, cols))


if __name__ == "__main__":
    main()
