"""nada-generate: render images from a generator checkpoint or a nada-train run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from nada_core.cli import run_app, typer_app
from nada_core.errors import FieldError
from nada_core.pngs import write_seed_images
from nada_core.seeds import parse_seeds
from nada_train.blending import blend as blend_runs
from nada_train.blending import parse_blend
from nada_train.checkpoints import load_generator
from nada_train.generator.inference import check_noise, check_render_precision

app = typer_app(
    "Render images from a StyleGAN2 checkpoint or a nada-train run directory.\n\n"
    "Seeds follow NVlabs generate.py: z = numpy.random.RandomState(seed).randn(1, z_dim); files "
    "seed0000.png, ..."
)


@app.command()
def main(
    checkpoint: list[str] = typer.Argument(
        ...,
        help="rosinality .pt, NVIDIA .pkl, nada .safetensors, a run directory, or random:SIZE; several (runs of "
        "one base) with --video.",
    ),
    seeds: str = typer.Option("0-7", help="Seeds, e.g. 0-3,7."),
    truncation: float = typer.Option(1.0, help="Truncation psi (1 = none; 0.7 is common)."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output directory."),
    grid_png: bool = typer.Option(False, "--grid", help="Also write grid.png with all images."),
    noise: str = typer.Option(
        "const", help="Noise inputs: const (the checkpoint's stored noise), random, none."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    precision: str = typer.Option(
        "auto",
        help="auto (on a GPU: fp16 with channels_last if its images pass the gate, PSNR >= 40 dB against fp32 "
        "on seeds 0-15; on the CPU: fp32), fp32, fp16 or bf16.",
    ),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Load a checkpoint holding arbitrary Python objects (runs code from the file).",
    ),
    video: Path = typer.Option(
        None,
        help="Instead of PNGs, a latent walk through the seeds in order (slerp in z; first frame the first "
        "seed's image, last the last's): a .mp4 (H.264) or .gif file.",
    ),
    frames: int = typer.Option(
        24, help="--video: frames from one seed (or, --morph, one domain) to the next."
    ),
    fps: float = typer.Option(24.0, help="--video: frames per second."),
    blend: list[str] = typer.Option(
        [],
        "--blend",
        help="RUN:WEIGHT (repeatable): mix another run of the same base into the domain, e.g. --blend "
        "runs/neon:0.5 draws half of each (cross-domain interpolation).",
    ),
    strength: float = typer.Option(
        1.0,
        help="How strongly the domain (after --blend) is applied to its base: 0 = the base, 1 = the domain, "
        "beyond 1 = exaggerated.",
    ),
    morph: bool = typer.Option(
        False,
        "--morph",
        help="--video with several runs: the seeds' images while the weights blend from each run to the next "
        "(else the runs' walks side by side).",
    ),
) -> None:
    check_noise(noise)  # refused before a large checkpoint is read
    check_render_precision(precision)
    seed_list = parse_seeds(seeds)
    if video is None and len(checkpoint) > 1:
        raise FieldError("{checkpoints}: give one checkpoint for PNGs; several go into one --video")
    if video is not None:
        from nada_train.video import check_video, walk_latents

        if morph and len(checkpoint) < 2:
            raise FieldError("{morph}: give two or more runs of one base to morph between")
        if not morph:
            walk_latents(seed_list, 1, frames)  # refusals before a checkpoint is read
        check_video(video, fps)
    if (blend or strength != 1.0) and len(checkpoint) > 1:
        raise FieldError("{blend}/{strength} apply to one run; give one checkpoint with them")
    mix = [parse_blend(b) for b in blend]  # refused before a checkpoint is read
    loaded = [load_generator(c, "cpu", allow_pickle=allow_pickle) for c in checkpoint]
    if mix or strength != 1.0:
        loaded = [blend_runs(loaded[0], mix, strength)]
    loaded = [g.to(device, precision) for g in loaded]
    if video is not None:
        from nada_train.video import domain_walk, morph_frames, write_video

        made = morph_frames if morph else domain_walk
        clip = made([g.generator for g in loaded], seed_list, frames, truncation, noise)
        write_video(clip, video, fps)
        print(
            f"wrote {len(clip)} frames ({len(clip) / fps:.1f} s at {fps:g} fps) to {video} "
            f"({loaded[0].rendering})"
        )
        return
    loaded = loaded[0]
    images = loaded.generate(seed_list, truncation, noise)
    write_seed_images(images, seed_list, out, grid_png)
    print(f"wrote {len(images)} images to {out} ({loaded.rendering})")


def main_entry() -> None:
    run_app(app, "nada-generate", {"checkpoints": "CHECKPOINT", "blend": "--blend", "strength": "--strength"})
