"""Training speed: seconds per iteration and per adaptation, split by phase.

    python -m benchmarks.training --size 256 --clip ViT-B-32:random --iterations 4
    python -m benchmarks.training --quick          # 64 px, finishes in about a minute on 2 CPU cores
    python -m benchmarks.training --size 64 --layers auto --targets 1 8   # one run of 1 target vs 8 targets
    python -m benchmarks.training --size 64 --compare --iterations 20     # fp32/bf16 x eager/compiled
    python -m benchmarks.training --size 64 --batching-bound              # can stepping targets batched pay here?
    python -m benchmarks.training --size 256 --layers all --parametrization full channels styles

Random weights (generator and CLIP) are fine here: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from benchmarks.common import machine, machine_line, markdown_table
from nada_core.fileio import write_json
from nada_train.checkpoints import random_generator, save_safetensors
from nada_train.clip import parse_clip_spec
from nada_train.devices import resolve_device
from nada_train.factory import build
from nada_train.generator.inference import render
from nada_train.images import psnr
from nada_train.options import TrainOptions
from nada_train.run_dir import RunDir

PHASES = ["layer_selection", "generator_forward", "clip_forward", "backward", "optimizer"]


def random_checkpoint(folder: str, size: int) -> Path:
    """A random config-f generator of `size` px saved in `folder`: what the runs here adapt."""
    ckpt = Path(folder) / "g.safetensors"
    save_safetensors(random_generator(size), ckpt)
    return ckpt


def measure(
    size: int,
    clips: list[str],
    layers: str,
    iterations: int,
    batch: int,
    device: str,
    precision: str,
    fused: bool,
    parametrization: str = "full",
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint(tmp, size)
        opts = TrainOptions(
            generator=str(ckpt),
            out=str(Path(tmp) / "run"),
            target="sketch",
            clip=[parse_clip_spec(c) for c in clips],
            iterations=iterations + 1,
            batch=batch,
            layers=layers,
            device=device,
            precision=precision,
            fused=fused,
            parametrization=parametrization,
        )
        trainer = build(opts, RunDir(opts.out), resume=False)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        records = [trainer.step() for _ in range(iterations + 1)]
        wall = time.perf_counter() - t0
    timed = records[1:]  # the first step warms up kernels and caches
    row = {
        "size": size,
        "batch": batch,
        "clip": "+".join(clips),
        "layers": layers,
        "precision": precision,
        "fused": fused,
        "parametrization": parametrization,
        "trained_params": sum(p.numel() for p in trainer.params),  # those the layer selection picks from
        "iterations_timed": len(timed),
        "s_per_it": statistics.mean(r["seconds"] for r in timed),
        "wall_s_incl_warmup": wall,
    }
    for p in PHASES:
        row[p] = statistics.mean(r["phases"][p] for r in timed)
    row["min_per_300_it"] = row["s_per_it"] * 300 / 60
    if trainer.device.type == "cuda":
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def measure_apart(**kwargs) -> dict:
    """measure() in a process of its own, so that each row's peak resident memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, **kwargs).result()


def measure_targets(
    size: int, clips: list[str], layers: str, iterations: int, batch: int, device: str, count: int
) -> dict:
    """Wall time of one nada-train run of `count` targets (nada_train.many), loading included."""
    from nada_train.many import train_many

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint(tmp, size)
        plan = [
            TrainOptions(
                generator=str(ckpt),
                out=str(Path(tmp) / "runs" / f"t{i}"),
                target=f"style number {i}",
                clip=[parse_clip_spec(c) for c in clips],
                iterations=iterations,
                batch=batch,
                layers=layers,
                device=device,
                n_sample=4,
                sample_every=iterations,
                save_every=iterations,
            )
            for i in range(count)
        ]
        t0 = time.perf_counter()
        train_many(plan, Path(tmp) / "runs", progress=False)
        wall = time.perf_counter() - t0
    return {
        "size": size,
        "batch": batch,
        "clip": "+".join(clips),
        "layers": layers,
        "targets": count,
        "iterations": iterations,
        "wall_s": wall,
        "s_per_target": wall / count,
    }


# PRECISION:COMPILE of --compare; the first is the reference the others are compared with
VARIANTS = ["fp32:off", "bf16:off", "fp32:inductor", "bf16:inductor"]
NOISE_SEED = 3  # the yardstick: the reference's run from another seed


def compare(
    size: int, clips: list[str], layers: str, iterations: int, batch: int, device: str, variants: list[str]
) -> list[dict]:
    """Each variant trains `iterations` steps from seed 2; its loss curve, chosen layers and final images
    (seeds 0-7, no truncation) against the first variant's. The first variant again from seed 3 is the
    yardstick: what a change of seed alone does. A variant far inside it changes results only by noise."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = random_checkpoint(tmp, size)

        def trainer_for(name: str, **kw):
            opts = TrainOptions(
                generator=str(ckpt),
                out=str(Path(tmp) / name),
                target="sketch",
                clip=[parse_clip_spec(c) for c in clips],
                iterations=iterations,
                batch=batch,
                layers=layers,
                device=device,
                **kw,
            )
            return build(opts, RunDir(opts.out), resume=False)

        warm_trainer = trainer_for("warm-up")
        for _ in range(
            2
        ):  # the process's first steps are slow (thread pools, allocator): not charged to the reference
            warm_trainer.step()
        runs = []
        for precision, compile, seed in [(*v.split(":"), 2) for v in variants] + [
            (*variants[0].split(":"), NOISE_SEED)
        ]:
            trainer = trainer_for(
                f"{precision}-{compile}-{seed}", precision=precision, compile=compile, seed=seed
            )
            records = [trainer.step() for _ in range(iterations)]
            runs.append(
                {
                    "precision": precision,
                    "compile": compile,
                    "seed": seed,
                    "first_step_s": records[0]["seconds"],
                    "s_per_it": statistics.median(r["seconds"] for r in records[1:]),
                    "losses": [r["loss"] for r in records],
                    "layers": [r["layers"] for r in records],
                    "images": render(trainer.g_train, list(range(8)), 1.0),
                }
            )
            print(
                f"  {size}px {precision} compile={compile} seed {seed}: {runs[-1]['s_per_it']:.2f} s/it",
                flush=True,
            )
    ref = runs[0]
    rows = []
    for r in runs:
        dev = [abs(a - b) for a, b in zip(r["losses"], ref["losses"])]
        rows.append(
            {
                "size": size,
                "precision": r["precision"],
                "compile": r["compile"],
                "seed": r["seed"],
                "iterations": iterations,
                "first_step_s": r["first_step_s"],
                "s_per_it": r["s_per_it"],
                "x_speed": ref["s_per_it"] / r["s_per_it"],
                "same_layers": f"{sum(a == b for a, b in zip(r['layers'], ref['layers']))}/{iterations}",
                "final_loss": statistics.mean(r["losses"][-5:]),
                "max_loss_dev": max(dev),
                "mean_loss_dev": statistics.mean(dev),
                "image_psnr_db": min(psnr(a, b, 255.0) for a, b in zip(r["images"], ref["images"])),
                "losses": r["losses"],
            }
        )
    return rows


def batching_bound(size: int, batch: int, targets: int, device: str, repeats: int = 3) -> dict:
    """The most that stepping `targets` trained copies batched could save: `targets` forward+backward
    passes of `batch` images against one pass of targets x batch images through one generator (one
    generator's weights for all: batched distinct copies cannot beat it)."""
    g = random_generator(size).to(device)
    ws = g.broadcast(g.mapping(torch.randn(batch * targets, g.config.z_dim, device=device))).detach()

    def run(n: int, chunks: int) -> float:
        best = float("inf")
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for part in ws[:n].split(n // chunks):
                g.zero_grad(set_to_none=True)
                g.synthesis(part).square().mean().backward()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    run(batch, 1)  # warm-up
    apart, together = run(batch * targets, targets), run(batch * targets, 1)
    return {
        "size": size,
        "batch": batch,
        "targets": targets,
        "apart_s": apart,
        "together_s": together,
        "x_bound": apart / together,
    }


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
    ap.add_argument(
        "--parametrization",
        nargs="+",
        default=["full"],
        help="full, channels and/or styles (nada-train --parametrization): what each step trains",
    )
    ap.add_argument("--quick", action="store_true", help="64 px, 2 timed iterations, layers auto only")
    ap.add_argument(
        "--targets",
        type=int,
        nargs="+",
        help="instead: wall time of one run with this many targets each (--iterations each, loading "
        "included), side by side, e.g. --targets 1 8",
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="instead: fp32/bf16 x eager/compiled (Inductor) side by side, --iterations each: speed, loss "
        "curve, chosen layers and final images against the first variant, with a change of seed as yardstick",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=VARIANTS,
        help=f"PRECISION:COMPILE runs of --compare, the first the reference (default {' '.join(VARIANTS)}; on "
        "a GPU add e.g. bf16:cudagraphs)",
    )
    ap.add_argument(
        "--batching-bound",
        action="store_true",
        help="instead: the most that stepping 8 targets batched could save over stepping them in turn "
        "(generator forward+backward, one batch of 8 x --batch against 8 of --batch)",
    )
    ap.add_argument("--json", default="benchmarks/out/training.json")
    args = ap.parse_args()
    clips = args.clip or ["ViT-B-32:random"]
    if args.quick:
        args.size, args.iterations, args.layers = [64], 2, ["auto"]
    info = machine()
    device = str(resolve_device(args.device))
    if args.batching_bound:
        rows = [batching_bound(size, args.batch, 8, device) for size in args.size]
        write_json(args.json, {"machine": info, "records": rows})
        print(f"\nStepping 8 targets batched, upper bound of the gain, on {machine_line(info)}\n")
        print(
            markdown_table(
                rows,
                [
                    ("size", "px"),
                    ("batch", "batch"),
                    ("targets", "targets"),
                    ("apart_s", "8 apart s"),
                    ("together_s", "batched s"),
                    ("x_bound", "x at most"),
                ],
            )
        )
        return
    if args.compare:
        if args.iterations < 2:
            ap.error(
                "--compare needs --iterations 2 or more (the first step is timed apart: it warms up or "
                "compiles)"
            )
        rows = [
            row
            for size in args.size
            for row in compare(
                size, clips, args.layers[0], args.iterations, args.batch, args.device, args.variants
            )
        ]
        write_json(args.json, {"machine": info, "records": rows})
        print(
            "\n"
            f"Precision and compilation of the training step on {machine_line(info)} (deviations against the "
            f"first row; the first variant from seed {NOISE_SEED}, last row, is the yardstick)\n"
        )
        print(
            markdown_table(
                rows,
                [
                    ("size", "px"),
                    ("precision", "precision"),
                    ("compile", "compile"),
                    ("seed", "seed"),
                    ("first_step_s", "first step s"),
                    ("s_per_it", "s/it"),
                    ("x_speed", "x speed"),
                    ("same_layers", "same layers chosen"),
                    ("final_loss", "loss, last 5"),
                    ("max_loss_dev", "max |loss dev|"),
                    ("mean_loss_dev", "mean |loss dev|"),
                    ("image_psnr_db", "worst image PSNR dB"),
                ],
            )
        )
        return
    if args.targets:
        rows = [
            measure_targets(size, clips, args.layers[0], args.iterations, args.batch, args.device, n)
            for size in args.size
            for n in args.targets
        ]
        for r in rows:
            one = next(o for o in rows if o["size"] == r["size"] and o["targets"] == min(args.targets))
            r["x_wall_of_fewest"] = r["wall_s"] / one["wall_s"]
        write_json(args.json, {"machine": info, "records": rows})
        print(f"\nSeveral targets in one run on {machine_line(info)}\n")
        print(
            markdown_table(
                rows,
                [
                    ("size", "px"),
                    ("clip", "CLIP"),
                    ("layers", "layers"),
                    ("targets", "targets"),
                    ("iterations", "it each"),
                    ("wall_s", "wall s"),
                    ("s_per_target", "s per target"),
                    ("x_wall_of_fewest", f"x wall of {min(args.targets)}"),
                ],
            )
        )
        return
    rows = []
    for size in args.size:
        for layers in args.layers:
            for precision in args.precision:
                for parametrization in args.parametrization:
                    rows.append(
                        measure_apart(
                            size=size,
                            clips=clips,
                            layers=layers,
                            iterations=args.iterations,
                            batch=args.batch,
                            device=args.device,
                            precision=precision,
                            fused=args.fused,
                            parametrization=parametrization,
                        )
                    )
                    print(
                        f"  {size}px layers={layers} {precision} {parametrization}: "
                        f"{rows[-1]['s_per_it']:.2f} s/it",
                        flush=True,
                    )
    write_json(args.json, {"machine": info, "records": rows})
    cols = [
        ("size", "px"),
        ("batch", "batch"),
        ("clip", "CLIP"),
        ("layers", "layers"),
        ("precision", "precision"),
        ("parametrization", "parametrization"),
        ("trained_params", "trained params"),
        ("s_per_it", "s/it"),
        ("min_per_300_it", "min/300 it"),
    ] + [(p, p + " s") for p in PHASES]
    cols.append(("peak_rss_mib", "peak RSS MiB"))
    if any("peak_gpu_gib" in r for r in rows):
        cols.append(("peak_gpu_gib", "peak GPU GiB"))
    print(f"\nTraining speed on {machine_line(info)}\n")
    print(markdown_table(rows, cols))


if __name__ == "__main__":
    main()
