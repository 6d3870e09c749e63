"""nada-train: adapt a StyleGAN2 generator to a new domain described by text (StyleGAN-NADA)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nada_core.cli import run_app, typer_app
from nada_core.errors import NadaError, option_of
from nada_train.bases import base_owning
from nada_train.many import INDEX, Target, parse_targets_file, read_index
from nada_train.options import option_defaults
from nada_train.run_dir import RunDir
from nada_train.runs import Run, adapt
from nada_train.runs import resume as resume_run

D = option_defaults()

app = typer_app(
    "Adapt a pretrained StyleGAN2 generator to a new domain from text alone (StyleGAN-NADA).\n\n"
    "Example: nada-train --generator ffhq.pt --source photo --target 'pencil sketch' --out runs/sketch\n\n"
    "Without --generator: the built-in base (the built-in world: a 64-px generator of shapes trained on "
    "photos "
    "only, with its own small CLIP) is adapted to its default target and judged: OUT/metrics.json.\n\n"
    "Writes OUT/generator.safetensors (a lightweight run: OUT/domain.safetensors), manifest.json, "
    "samples/ (frozen row above adapted row), log.jsonl. "
    "Ctrl-C (or SIGTERM) saves a resumable state; continue with --resume OUT."
)


@app.command()
def main(
    generator: str | None = typer.Option(
        None,
        "--generator",
        "-g",
        help="Base generator: rosinality-format .pt (with 'g_ema'), an NVIDIA .pkl (stylegan2-ada-pytorch or "
        "stylegan3, StyleGAN2 or StyleGAN3 T/R; read as data, its code never run), a nada .safetensors, "
        "builtin:NAME (a built-in base), or random:SIZE (random weights, smoke tests). Default: the built-in "
        "base.",
    ),
    source: str = typer.Option(D["source"], help="Text describing the generator's current domain."),
    target: list[str] = typer.Option(
        [],
        "--target",
        help="Text describing the new domain, e.g. 'pencil sketch'. Default with a built-in base: its default "
        "target. Repeat it to train several targets in one run: --out is then a folder that gets one run "
        "directory per target and index.json.",
    ),
    targets: Path | None = typer.Option(
        None,
        "--targets",
        help="File of targets, one a line, each optionally followed by '| ITERATIONS'; like repeating "
        "--target.",
    ),
    target_images: Path | None = typer.Option(
        None, "--target-images", help="Folder of style images (.png/.jpg) to use instead of --target text."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="New run directory."),
    clip: list[str] = typer.Option(
        [],
        "--clip",
        help=f"open_clip model[:pretrained], repeatable (default {D['clip'][0]}; a built-in base brings its "
        "own). pretrained: a tag (default openai), a local weights file (its open_clip config NAME.json may "
        "lie beside it), or 'random'.",
    ),
    clip_weight: list[float] = typer.Option(
        [], "--clip-weight", help="Weight of each --clip model in the loss (default 1.0 each)."
    ),
    iterations: int | None = typer.Option(
        None,
        help=f"Training iterations (default {D['iterations']}; reference examples: style 200-400, identity "
        "150-200).",
    ),
    batch: int | None = typer.Option(None, help=f"Latents per iteration (default {D['batch']})."),
    lr: float | None = typer.Option(
        None,
        help=f"Learning rate (default {D['lr']}); Adam runs at lr*4/5 with betas (0, 0.99^0.8), as the "
        "reference.",
    ),
    layers: str | None = typer.Option(
        None,
        help="Which layers learn: auto (adaptive selection each step), all, texture or shape (default "
        f"{D['layers']}).",
    ),
    parametrization: str | None = typer.Option(
        None,
        help="What the run trains: full (the whole synthesis network, the paper's), channels (a multiplier per "
        "input channel of each convolution, HyperDomainNet) or styles (an offset of each layer's style, "
        "StyleDomain). channels and styles keep the base frozen and write only their parameters, "
        f"OUT/domain.safetensors, a few KB (default {D['parametrization']}).",
    ),
    auto_layer_k: int | None = typer.Option(
        None, help="W+ codes chosen per step with --layers auto (default 2/3 of them)."
    ),
    auto_layer_iters: int | None = typer.Option(
        None, help=f"SGD steps on the W+ codes when choosing layers (default {D['auto_layer_iters']})."
    ),
    auto_layer_batch: int | None = typer.Option(
        None, help=f"Latents used when choosing layers (default {D['auto_layer_batch']})."
    ),
    train_torgb: bool | None = typer.Option(
        None, "--train-torgb", help="Also train the ToRGB layers (frozen by default)."
    ),
    mixing: float | None = typer.Option(
        None,
        help=f"Style-mixing probability (default {D['mixing']}; 0.9 in the reference's 'improve shape' "
        "preset).",
    ),
    global_weight: float | None = typer.Option(
        None,
        help="Weight of the global CLIP loss (adapted image vs target text) added to the directional loss; "
        f"the reference's lambda_global (default {D['global_weight']}, as the paper; a built-in base may set "
        "its own per target).",
    ),
    anchor_weight: float | None = typer.Option(
        None,
        help="Weight of the layout anchor added to the loss: the squared difference of the frozen and adapted "
        "images averaged down to 16x16 px, which keeps where things are and their colours while CLIP "
        f"changes how they are drawn (default {D['anchor_weight']}: off, as the paper; a built-in base may "
        "set its own per target).",
    ),
    seed: int | None = typer.Option(None, help=f"Random seed of the run (default {D['seed']})."),
    device: str | None = typer.Option(
        None, help=f"auto (CUDA when available), cpu, cuda, cuda:N (default {D['device']})."
    ),
    precision: str | None = typer.Option(None, help=f"fp32 or bf16 (autocast) (default {D['precision']})."),
    tf32: bool | None = typer.Option(
        None, "--tf32/--no-tf32", help="Allow TF32 matmuls on CUDA (default on)."
    ),
    fused: bool | None = typer.Option(
        None, "--fused", help="Grouped-conv modulated convolutions (often faster on GPU)."
    ),
    compile: str | None = typer.Option(
        None,
        "--compile",
        help="off, inductor (torch.compile the step's synthesis and CLIP calls) or cudagraphs (inductor, "
        "then captured in CUDA graphs; CUDA only). The first step compiles: minutes; worth it for long runs "
        f"(default {D['compile']}).",
    ),
    n_sample: int | None = typer.Option(
        None, help=f"Fixed preview latents (seeds 0..n-1) in samples/ (default {D['n_sample']})."
    ),
    sample_truncation: float | None = typer.Option(
        None, help=f"Truncation psi of the preview samples (default {D['sample_truncation']}; 1 = none)."
    ),
    sample_every: int | None = typer.Option(
        None, help=f"Write a sample grid every N iterations (default {D['sample_every']})."
    ),
    save_every: int | None = typer.Option(
        None,
        help="Every N iterations: save a resumable state and keep a numbered snapshot, "
        f"snapshots/generator-NNNNNN.safetensors (default {D['save_every']}).",
    ),
    crop: str | None = typer.Option(
        None,
        help="LEFT,TOP,RIGHT,BOTTOM: the part of the frame that is content (e.g. LSUN cars, 512x384 in "
        "512x512: 0,64,512,448); CLIP, samples, nada-generate and the exported model see only the box.",
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the run in this directory (its settings; --iterations may raise the total).",
    ),
    eval_only: Path | None = typer.Option(
        None,
        "--eval-only",
        help="Recompute metrics.json of a run on a built-in base that judges its runs, then exit.",
    ),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Load a checkpoint that holds arbitrary Python objects. Runs code from the file: only for files "
        "you trust.",
    ),
    samples_video: bool = typer.Option(
        False,
        "--samples-video",
        help="When training ends, also write RUN/samples.mp4: the sample grids in order, as a time-lapse.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    if eval_only is not None:
        print(json.dumps(evaluate_again(eval_only), indent=2))
        return
    settings = dict(
        iterations=iterations,
        batch=batch,
        lr=lr,
        layers=layers,
        parametrization=parametrization,
        auto_layer_k=auto_layer_k,
        auto_layer_iters=auto_layer_iters,
        auto_layer_batch=auto_layer_batch,
        train_torgb=train_torgb,
        mixing=mixing,
        global_weight=global_weight,
        anchor_weight=anchor_weight,
        seed=seed,
        device=device,
        precision=precision,
        tf32=tf32,
        fused=fused,
        compile=compile,
        n_sample=n_sample,
        sample_truncation=sample_truncation,
        sample_every=sample_every,
        save_every=save_every,
        crop=parse_crop(crop) if crop is not None else None,
    )
    settings = {k: v for k, v in settings.items() if v is not None}
    if resume is not None:
        inputs = dict(
            generator=generator,
            target=target or None,
            targets=targets,
            target_images=target_images,
            out=out,
            clip=clip or None,
            clip_weight=clip_weight or None,
            allow_pickle=allow_pickle or None,
            source=None if source == D["source"] else source,
        )
        refused = [
            name
            for name, value in {**inputs, **settings}.items()
            if value is not None and name != "iterations"
        ]
        if refused:
            raise NadaError(
                f"--resume continues a run with the settings it started with; {option_of(refused[0])} cannot "
                "be given with it (only --iterations, a new total)"
            )
        report(resume, resume_run(resume, iterations, progress=not quiet), samples_video)
        return
    wanted = [Target(t) for t in target] + (parse_targets_file(targets) if targets is not None else [])
    several = len(wanted) > 1 or targets is not None
    if several and target_images is not None:
        raise NadaError(
            "--target-images trains one target; give several --target texts, or one run per style folder"
        )
    if several and out is None:
        raise NadaError("--out is required: a new folder for the runs, one per target")
    result = adapt(
        generator,
        None if several or not wanted else wanted[0].text,
        out=out,
        targets=wanted if several else None,
        source=source,
        target_images=target_images,
        clip=clip or None,
        clip_weights=clip_weight or None,
        allow_pickle=allow_pickle,
        progress=not quiet,
        **settings,
    )
    report(out, result, samples_video)


def report(out: Path, result: Run | list[Run], samples_video: bool = False) -> None:
    if samples_video:
        from nada_train.video import timelapse

        for run in result if isinstance(result, list) else [result]:
            print(f"time-lapse of the samples: {timelapse(run.path)}")
    if isinstance(result, list):
        report_many(out)
        return
    weights = result.dir.domain_path if result.dir.domain_path.exists() else result.dir.generator_path
    print(f"done: {weights}  (samples in {result.path}/samples)")
    if result.metrics is not None:
        print_metrics(result.metrics)


def report_many(out: Path) -> None:
    if not (Path(out) / INDEX).exists():  # a rank with no target of its own
        return
    for r in read_index(out)["runs"]:
        done = f"{r['iterations_done']:5d}/{r['iterations']} it"
        line = f"  {r['target']:32s} {r['status']:12s} {done}  {out}/{r['path']}"
        if "metrics" in r:
            line += f"  style {r['metrics']['target_style_rate']:.2f}, content {r['metrics']['content_kept_rate']:.2f}"
        print(line)
    print(f"done: {out}/index.json")


def parse_crop(text: str) -> list[int]:
    try:
        box = [int(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise NadaError(
            f"--crop '{text}': give four integers LEFT,TOP,RIGHT,BOTTOM, e.g. --crop 0,64,512,448"
        )
    return box


def evaluate_again(run_dir: Path) -> dict:
    manifest = RunDir(run_dir).read_manifest("eval_only")
    base = base_owning(manifest["arguments"]["generator"])
    if base is None or base.evaluate is None:
        raise NadaError(
            f"--eval-only '{run_dir}': metrics need a built-in base that judges its runs; this run adapted "
            f"{manifest['arguments']['generator']}"
        )
    if manifest.get("target") is None:
        raise NadaError(f"--eval-only '{run_dir}': image-guided runs have no target to judge")
    return base.evaluate(run_dir, "cpu")


def print_metrics(m: dict) -> None:
    line = f"judge: target_style_rate {m['target_style_rate']:.2f}"
    if "frozen_target_style_rate" in m:
        line += f" (frozen: {m['frozen_target_style_rate']:.2f})"
    line += f", content_kept_rate {m['content_kept_rate']:.2f}"
    if "content_kept_ceiling" in m:  # what drawing each intended scene in the style would keep
        line += f" of a possible {m['content_kept_ceiling']:.2f}"
    if "directional_clip_similarity" in m:
        line += f"; directional CLIP similarity {m['directional_clip_similarity']:.3f}"
    if "clip_target_rate" in m:
        line += f"; the CLIP itself calls {m['clip_target_rate']:.2f} of them {m['target']}"
    print(line)


# library fields whose option has another name
FLAGS = {"clip_weights": "--clip-weight", "base": "--generator"}


def main_entry() -> None:
    run_app(app, "nada-train", FLAGS)
