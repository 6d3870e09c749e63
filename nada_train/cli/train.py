"""nada-train: adapt a StyleGAN2 generator to a new domain described by text (StyleGAN-NADA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nada_train.cli.common import run_app, typer_app
from nada_train.clip import parse_clip_spec
from nada_train.errors import NadaError
from nada_train.run_dir import RunDir
from nada_train.trainer import TrainOptions, train
from nada_train.world.models import GENERATOR_WEIGHTS
from nada_train.world.run import (DEFAULTS, TARGET_GLOBAL_WEIGHT, check_style, evaluate_run, is_world_generator, world_available,
                                  world_defaults)

app = typer_app(
    "Adapt a pretrained StyleGAN2 generator to a new domain from text alone (StyleGAN-NADA).\n\n"
    "Example: nada-train --generator ffhq.pt --source photo --target 'pencil sketch' --out runs/sketch\n\n"
    "Without --generator: the built-in world (a 64-px generator of shapes trained on photos only, and its own "
    "small CLIP) is adapted photo -> sketch (or --target neon|pixel) and judged: OUT/metrics.json.\n\n"
    "Writes OUT/generator.safetensors, manifest.json, samples/ (frozen row above adapted row), log.jsonl. "
    "Ctrl-C saves a resumable state; continue with --resume OUT."
)


@app.command()
def main(
    generator: Optional[str] = typer.Option(None, "--generator", "-g", help="Base generator: rosinality-format .pt (with 'g_ema'), a nada .safetensors, or random:SIZE (random weights, smoke tests). Default: the built-in world."),
    source: str = typer.Option("photo", help="Text describing the generator's current domain."),
    target: Optional[str] = typer.Option(None, help="Text describing the new domain, e.g. 'pencil sketch'."),
    target_images: Optional[Path] = typer.Option(None, "--target-images", help="Folder of style images (.png/.jpg) to use instead of --target text."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="New run directory."),
    clip: list[str] = typer.Option([], "--clip", help="open_clip model[:pretrained], repeatable (default ViT-B-32; 'world' with the built-in generator). pretrained: a tag (default openai), a local weights file, or 'random'."),
    clip_weight: list[float] = typer.Option([], "--clip-weight", help="Weight of each --clip model in the loss (default 1.0 each)."),
    iterations: Optional[int] = typer.Option(None, help="Training iterations (default 300; reference examples: style 200-400, identity 150-200)."),
    batch: Optional[int] = typer.Option(None, help="Latents per iteration (default 2)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate (default 0.002; 0.01 in the built-in world); Adam runs at lr*4/5 with betas (0, 0.99^0.8), as the reference."),
    layers: Optional[str] = typer.Option(None, help="Which layers learn: auto (adaptive selection each step; the default), all (the built-in world's default), texture or shape."),
    auto_layer_k: Optional[int] = typer.Option(None, help="W+ codes chosen per step with --layers auto (default 2/3 of them)."),
    auto_layer_iters: int = typer.Option(1, help="SGD steps on the W+ codes when choosing layers."),
    auto_layer_batch: int = typer.Option(8, help="Latents used when choosing layers."),
    train_torgb: bool = typer.Option(False, "--train-torgb", help="Also train the ToRGB layers (frozen by default)."),
    mixing: float = typer.Option(0.0, help="Style-mixing probability (0.9 in the reference's 'improve shape' preset)."),
    global_weight: Optional[float] = typer.Option(None, help="Weight of the global CLIP loss (adapted image vs target text) added to the directional loss; the reference's lambda_global, 0 in the paper (the default). In the built-in world it depends on the target: " + ", ".join(f"{k} {v:g}" for k, v in TARGET_GLOBAL_WEIGHT.items()) + "."),
    seed: int = typer.Option(2, help="Random seed of the run."),
    device: str = typer.Option("auto", help="auto (CUDA when available), cpu, cuda, cuda:N."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast)."),
    tf32: bool = typer.Option(True, "--tf32/--no-tf32", help="Allow TF32 matmuls on CUDA."),
    fused: bool = typer.Option(False, "--fused", help="Grouped-conv modulated convolutions (often faster on GPU)."),
    n_sample: int = typer.Option(8, help="Fixed preview latents (seeds 0..n-1) in samples/."),
    sample_every: int = typer.Option(50, help="Write a sample grid every N iterations."),
    save_every: int = typer.Option(100, help="Save a resumable state every N iterations."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory (its settings; --iterations may raise the total)."),
    eval_only: Optional[Path] = typer.Option(None, "--eval-only", help="Recompute metrics.json of a run on the built-in world, then exit."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Load a checkpoint that holds arbitrary Python objects. Runs code from the file: only for files you trust."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    if eval_only is not None:
        metrics = evaluate_run(eval_only)
        print(json.dumps(metrics, indent=2))
        return
    if resume is not None:
        run = RunDir(resume)
        opts = TrainOptions.from_json(run.read_manifest()["arguments"])
        if iterations is not None:
            opts.iterations = iterations
        path = train(opts, resume=True, progress=not quiet)
    else:
        defaults = {"iterations": 300, "batch": 2, "sample_truncation": 0.7, "lr": 0.002, "layers": "auto", "global_weight": 0.0}
        if generator is None:
            if not world_available():
                raise NadaError("--generator is required (the built-in world's weights are not in this installation)")
            generator = str(GENERATOR_WEIGHTS)
        if is_world_generator(generator):
            clip = clip or ["world"]
            if target_images is None:
                target = target or DEFAULTS["target"]
                check_style(source, "--source")
                defaults.update(world_defaults(target))
            else:
                defaults.update(DEFAULTS)
        clip = clip or ["ViT-B-32"]
        iterations = iterations if iterations is not None else defaults["iterations"]
        batch = batch if batch is not None else defaults["batch"]
        lr = lr if lr is not None else defaults["lr"]
        layers = layers if layers is not None else defaults["layers"]
        global_weight = global_weight if global_weight is not None else defaults["global_weight"]
        if out is None:
            raise NadaError("--out is required: a new directory for the run")
        if clip_weight and len(clip_weight) != len(clip):
            raise NadaError(f"--clip-weight given {len(clip_weight)} times for {len(clip)} --clip models; give one weight per model")
        weights = clip_weight or [1.0] * len(clip)
        # absolute paths: --resume may run from another directory
        generator = str(Path(generator).resolve()) if Path(generator).exists() else generator
        opts = TrainOptions(
            generator=generator, out=str(out.resolve()), source=source, target=target,
            target_images=str(target_images.resolve()) if target_images else None,
            clip=[parse_clip_spec(c, w) for c, w in zip(clip, weights)], iterations=iterations, batch=batch, lr=lr,
            layers=layers, auto_layer_k=auto_layer_k, auto_layer_iters=auto_layer_iters, auto_layer_batch=auto_layer_batch,
            train_torgb=train_torgb, mixing=mixing, global_weight=global_weight, seed=seed, device=device, precision=precision, tf32=tf32, fused=fused,
            n_sample=n_sample, sample_every=sample_every, save_every=save_every, allow_pickle=allow_pickle,
            sample_truncation=defaults["sample_truncation"],
        )
        path = train(opts, progress=not quiet)
    print(f"done: {path}/generator.safetensors  (samples in {path}/samples)")
    if (path / "metrics.json").exists():
        m = json.loads((path / "metrics.json").read_text())
        print(f"judge: target_style_rate {m['target_style_rate']:.2f}, content_kept_rate {m['content_kept_rate']:.2f} "
              f"(frozen: {m['frozen_target_style_rate']:.2f}); directional CLIP similarity {m['directional_clip_similarity']:.3f}; "
              f"the CLIP itself calls {m['clip_target_rate']:.2f} of them {m['target']}")


def main_entry() -> None:
    run_app(app, "nada-train")
