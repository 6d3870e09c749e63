"""Train the world's encoder: photo renders -> W+ codes of the world's generator, so that the main job
can show a picture it never drew (a fresh render) in the adapted domain.

    python -m nada_world.train_encoder --threads 2 --out nada_world/assets/encoder.safetensors  # 22 min
    python -m nada_world.train_encoder --evaluate builtin:world --run runs/default --figure edit.png

The encoder is e4e's form (the pSp family's IR backbone with squeeze-excitation, the feature
pyramid, w0 plus a delta per code) with a small backbone: stages WORLD_STAGES, codes 64 wide (the
world's w). It reads what every encoder of the family reads, 256x256 photos resized by PIL's
bilinear filter from the 64-px renders, so nada-edit, nada.load_encoder and nada-export --encoder
treat it as they treat the authors' checkpoints. Each step renders the scenes a batch of latents
stands for (scene_of_z) and learns, from the render, the generator's code of that latent (latent
loss) and an image the generator draws like the render (pixel loss, the object weighted 5x as the
generator was trained). --evaluate judges fresh renders (latents no step saw): the judge's shape and
colour kept by the reconstruction, and by a run's adapted image of the same codes; reconstruction
PSNR. The shipped weights: the first command on a 2-core CPU (2,298 steps; recorded in the file with
what it measured on 512 fresh renders: shape and colour kept 0.98, PSNR 30.4 dB).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer

from nada_core.pngs import grid, save_png
from nada_train.checkpoints import load_generator
from nada_train.encoders.heads import StyleEncoder
from nada_train.encoders.loading import encoded, load_encoder, preprocess, save_encoder
from nada_train.images import psnr, to_uint8
from nada_train.projection import target_tensor
from nada_world.models import (
    ENCODER_WEIGHTS,
    GENERATOR_WEIGHTS,
    JUDGE_WEIGHTS,
    Z_DIM,
    load_judge,
    scene_of_z,
)
from nada_world.render import render_batch, signed_distance
from nada_world.script import TimeBudget, cosine, minutes_option, run_script, script_app, set_lr, set_up

WORLD_STAGES = ((8, 8, 1), (8, 16, 1), (16, 32, 2), (32, Z_DIM, 1))
EVAL_SEED = 1_000_003  # latents of the evaluation: a stream no training step draws from
EVAL_RENDERS = 512
OBJECT_WEIGHT = 5.0

app = script_app(__doc__)


def renders_of(z: torch.Tensor) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The photo renders of the scenes z stands for: uint8 [N, 64, 64, 3], the same in [-1, 1]
    [N, 3, 64, 64], and a per-pixel weight (the object OBJECT_WEIGHT, the backdrop 1)."""
    scenes = scene_of_z(z)
    images = torch.from_numpy(render_batch(scenes)).float()
    pixels = to_uint8(images).numpy()
    inside = torch.from_numpy(np.stack([signed_distance(s) < 0 for s in scenes])).float()
    return pixels, images, 1 + (OBJECT_WEIGHT - 1) * inside[:, None]


def training_step(network, generator, latent_avg, z: torch.Tensor, pixel_weight: float) -> dict:
    pixels, target, weight = renders_of(z)
    with torch.no_grad():
        w = generator.mapping(z)
    codes = encoded(network, generator, latent_avg, preprocess(pixels), 1, False, True)
    drawn = generator.synthesis(codes, noise_mode="const")
    latent = F.mse_loss(codes, w[:, None].expand_as(codes))
    pixel = (weight * (drawn - target).abs()).mean()
    loss = latent + pixel_weight * pixel
    return {"loss": loss, "latent": latent.detach(), "pixel": pixel.detach()}


@app.command()
def main(
    out: Path = typer.Option(ENCODER_WEIGHTS, help="Where the encoder is written (safetensors)."),
    minutes: float = minutes_option(22.0),
    batch: int = typer.Option(12, help="Renders per step."),
    lr: float = typer.Option(2e-3, help="Adam's learning rate at the start (cosine decay to 0)."),
    pixel_weight: float = typer.Option(3.0, help="Weight of the pixel loss beside the latent loss."),
    threads: int = typer.Option(0, help="torch threads (0: all cores)."),
    seed: int = typer.Option(0),
    evaluate: Path = typer.Option(None, help="Judge this encoder instead of training one."),
    run: list[Path] = typer.Option([], help="--evaluate: a run of the world generator to judge it in."),
    n: int = typer.Option(EVAL_RENDERS, help="--evaluate: fresh renders judged."),
    figure: Path = typer.Option(
        None, help="--evaluate: also write the first 8 renders, their reconstructions and each run's images."
    ),
) -> None:
    set_up(threads, seed)
    if evaluate is not None:
        report = evaluate_encoder(evaluate, run, n, figure)
        print(json.dumps(report, indent=2))
        return
    generator = load_generator(GENERATOR_WEIGHTS).generator.eval().requires_grad_(False)
    latent_avg = generator.w_avg.detach()[None].expand(generator.n_latent, -1).clone()
    network = StyleEncoder(generator.n_latent, 3, pyramid=True, progressive=True, stages=WORLD_STAGES)
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    budget, rng, log = TimeBudget(minutes), torch.Generator().manual_seed(seed), []
    network.train()
    while budget.running():
        set_lr([opt], lr * cosine(budget.fraction))
        z = torch.randn(batch, Z_DIM, generator=rng)
        losses = training_step(network, generator, latent_avg, z, pixel_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        step = budget.step()
        if step % 50 == 0:
            row = {k: float(v.detach()) for k, v in losses.items()}
            row.update(step=step, seconds=round(budget.elapsed))
            log.append(row)
            print(json.dumps(row), flush=True)
    network.eval()
    made_by = {"minutes": minutes, "batch": batch, "lr": lr, "pixel_weight": pixel_weight, "seed": seed}
    made_by.update(steps=budget.steps, threads=torch.get_num_threads())
    save_encoder(network, "e4e", latent_avg, GENERATOR_WEIGHTS, out)
    report = evaluate_encoder(out, [], EVAL_RENDERS)["reconstruction"]
    meta = {"world_report": json.dumps(report), "made_by": json.dumps(made_by)}
    save_encoder(network, "e4e", latent_avg, GENERATOR_WEIGHTS, out, meta)
    print(f"wrote {out} after {budget.steps} steps ({budget.elapsed:.0f} s): {json.dumps(report)}")


def evaluate_encoder(
    path: Path | str,
    runs: list[Path],
    n: int = EVAL_RENDERS,
    figure: Path | None = None,
    seed: int = EVAL_SEED,
) -> dict:
    """On n fresh renders: the judge's shape and colour of each render kept by its reconstruction
    (and, per run, by the run's image of the same codes), the reconstruction's PSNR, and the run's
    target style rate on them. figure: rows of the first 8 renders, reconstructions, runs' images."""
    from nada_world.base import check_style

    encoder = load_encoder(path)
    judge = load_judge(JUDGE_WEIGHTS)
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))
    pixels, images, _ = renders_of(z)
    ws = torch.from_numpy(encoder.encode(pixels, batch=64))
    seen = judge.predict(images)

    def judged(pictures: np.ndarray) -> tuple[dict, float]:
        """The judge's verdicts on pictures, and the share keeping each render's shape and colour."""
        verdict = judge.predict(target_tensor(pictures, pictures.shape[1:3], torch.device("cpu")))
        kept = (verdict["shape"] == seen["shape"]) & (verdict["colour"] == seen["colour"])
        return verdict, float(kept.mean())

    reconstruction = encoder.generator.synthesize(ws)
    out = {"n": n, "encoder": str(path)}
    out["reconstruction"] = {
        "content_kept_rate": judged(reconstruction)[1],
        "psnr_db": float(np.mean([psnr(a, b, 255.0) for a, b in zip(reconstruction, pixels)])),
    }
    rows = [pixels[:8], reconstruction[:8]]
    for r in runs:
        pictures = load_generator(r).synthesize(ws)
        verdict, kept = judged(pictures)
        style = check_style(json.loads((Path(r) / "manifest.json").read_text())["target"], "target")
        out[r.name] = {
            "content_kept_rate": kept,
            "target_style_rate": float(np.mean(verdict["style"] == style)),
        }
        rows.append(pictures[:8])
    if figure is not None:
        save_png(grid(np.concatenate(rows).repeat(2, 1).repeat(2, 2), len(rows)), figure)
    return out


if __name__ == "__main__":
    run_script(app, "nada_world.train_encoder")
