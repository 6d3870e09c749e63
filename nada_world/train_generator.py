"""Train the world's StyleGAN2 (the project's own Generator class, 64 px) on "photo" renders only.

    python -m nada_world.train_generator --minutes 16 --finetune-minutes 12 --threads 1 --out g.safetensors
    python -m nada_world.train_generator --continue-from g.safetensors --finetune-minutes 24 --out g2.safetensors

Stage 1: a small encoder turns a scene's factors (one-hot shape and colour, position, size, angle,
photo nuisances) into w, and the synthesis network learns to draw the photo render from w.
Stage 2: the mapping network learns z -> that w for the scene z stands for (scene_of_z), by
regression in w space.
Stage 3 (and --continue-from): mapping and synthesis learn together from z, with a linear read-out
of the factors from w that keeps the codes separable by shape and colour.
Every loss on images weights the object 5x (object_weighted_l1). Every other style stays out of the
generator's domain. On a GPU, --pool keeps renders on the device so that the GPU does not wait for
the renderers; --adversarial adds a patch critic beside the L1 (tried; see README).
The shipped weights: the two commands above (the first ran with an earlier, wider slice of positions
and sizes and a stage 3 without the read-out), then --continue-from for 14 more minutes (seed 5);
then 0.1 minute more on a CPU (batch 16, lr 1e-3) and
    --continue-from ... --finetune-minutes 2.5 --batch 128 --lr 1e-3 --seed 7 --device cuda --workers 5
on an H100 shared with three CLIP trainings (scripts/gpu_session.sh; judge shape 0.56, colour 0.91);
then on an H100
    --continue-from ... --finetune-minutes 4 --batch 256 --pool 16384 --lr 1e-3 --seed 21 --device cuda --workers 4
beside two --adversarial runs (scripts/gpu_generator.sh; 3,526 steps; shape 0.74, colour 0.95) and
    --continue-from ... --finetune-minutes 3 --batch 256 --pool 16384 --lr 1e-3 --seed 31 --device cuda --workers 12
alone (5,453 steps). The judge's agreement with the intended scene is recorded in the file (shape
0.89, colour 0.97) and the last command's arguments beside it ("made_by").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer

from nada_train.checkpoints import save_safetensors
from nada_train.generator import Generator
from nada_world.data import DevicePool, Pool, from_scenes, render_stream, worker_rng
from nada_world.evaluate import judge_accuracy
from nada_world.models import (
    GENERATOR_WEIGHTS,
    JUDGE_WEIGHTS,
    N_FACTOR_FEATURES,
    Z_DIM,
    FactorEncoder,
    factor_features,
    generator_config,
    load_judge,
    scene_of_z,
)
from nada_world.render import COLOURS, SHAPES, Scene, signed_distance
from nada_world.script import (
    TimeBudget,
    minutes_option,
    run_script,
    script_app,
    set_lr,
    set_up,
    threads_option,
)


def generator_scenes(n: int, rng: np.random.Generator) -> list[Scene]:
    """Scenes of the generator's domain, drawn as the latents would draw them."""
    return scene_of_z(torch.from_numpy(rng.standard_normal((n, Z_DIM), dtype=np.float32)))


def object_weight(scenes: list[Scene]) -> torch.Tensor:
    """[N, 1, H, W]: 5 on the object and a 3-px rim, 1 elsewhere. The backdrop fills most of the
    image, and plain L1 let the network learn the backdrop and leave the object a blob."""
    near = np.stack([signed_distance(s) < 3 for s in scenes])
    return 1 + 4 * torch.from_numpy(near).float()[:, None]


def object_weighted_l1(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 weighted per pixel by object_weight, normalised by the total weight."""
    return ((out - target).abs() * weight).sum() / (weight.sum() * out.shape[1])


class LatentRenders(torch.utils.data.IterableDataset):
    """Endless batches of latents with what they stand for: the render of scene_of_z(z), shape and
    colour labels, factor features and the object weight, made in DataLoader workers."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def __iter__(self):
        rng = worker_rng(self.seed)
        while True:
            z = torch.from_numpy(rng.standard_normal((self.n, Z_DIM), dtype=np.float32))
            scenes = scene_of_z(z)
            b = from_scenes(scenes, rng)
            yield {
                "z": z,
                "images": b.images,
                "shape": b.shape,
                "colour": b.colour,
                "features": factor_features(scenes),
                "weight": object_weight(scenes),
            }


def stage1(g: Generator, enc: FactorEncoder, minutes: float, batch: int, lr: float, seed: int) -> None:
    pool = Pool(8192, seed=seed, refresh=0.1, scenes=generator_scenes)
    params = [p for n, p in g.named_parameters() if not n.startswith("style.")] + list(enc.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(0.0, 0.99))
    budget = TimeBudget(minutes)
    while budget.running():
        set_lr([opt], lr * (1.0 if budget.fraction < 0.7 else 0.2))
        b = pool.draw(batch)
        w = enc(factor_features(b.scenes))
        out = g.synthesis(g.broadcast(w))
        loss = object_weighted_l1(out, b.images, object_weight(b.scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if budget.step() % 50 == 0:
            print(f"stage1 step {budget.steps} {budget.elapsed:6.0f}s L1 {loss.item():.4f}", flush=True)


def stage2(g: Generator, enc: FactorEncoder, minutes: float, lr: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(g.style.parameters(), lr=lr)
    budget = TimeBudget(minutes)
    enc.requires_grad_(False)
    while budget.running():
        z = torch.randn(512, Z_DIM, generator=gen)
        with torch.no_grad():
            target = enc(factor_features(scene_of_z(z)))
        loss = F.mse_loss(g.mapping(z), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if budget.step() % 200 == 0:
            print(f"stage2 step {budget.steps} {budget.elapsed:6.0f}s MSE {loss.item():.5f}", flush=True)


class PatchCritic(torch.nn.Module):
    """The discriminator of stage 3's adversarial term: a logit per 8x8-px patch, render or sample.
    L1 alone settles on the mean where the network is unsure, which is a blur; the critic tells a
    blurred edge from a drawn one."""

    def __init__(self, width: int = 64):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, 2 * width, 4 * width):  # 64 -> 32 -> 16 -> 8 px
            layers += [torch.nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.2)]
            c_in = c_out
        self.net = torch.nn.Sequential(*layers, torch.nn.Conv2d(c_in, 1, 3, padding=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, 64, 64] in [-1, 1] -> logits [N, 1, 8, 8]."""
        return self.net(images)


def critic_loss(critic: PatchCritic, real: torch.Tensor, fake: torch.Tensor, r1_gamma: float) -> torch.Tensor:
    """Non-saturating logistic loss with the R1 penalty on renders (gamma/2 E|grad D(real)|^2),
    which keeps the critic from sharpening without bound."""
    real = real.detach().requires_grad_(True)
    d_real = critic(real)
    (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    r1 = grad.square().sum((1, 2, 3)).mean()
    return F.softplus(critic(fake.detach())).mean() + F.softplus(-d_real).mean() + 0.5 * r1_gamma * r1


def finetune(
    g: Generator,
    minutes: float,
    batch: int,
    lr: float,
    seed: int,
    workers: int = 0,
    pool: int = 0,
    adversarial: float = 0.0,
) -> None:
    """Stage 3 (also: continue a saved generator): mapping and synthesis learn together to draw
    scene_of_z(z) from z, so the mapping's codes land where synthesis draws sharply.
    pool > 0 keeps that many renders on the generator's device and swaps an eighth of a batch in
    each step, so an accelerator is not held to the renderers' pace. adversarial > 0 adds a
    PatchCritic's non-saturating loss with that weight next to the L1."""
    device = next(g.parameters()).device
    renders = render_stream(LatentRenders(max(1, batch // 8) if pool else batch, seed), workers)
    gen = torch.Generator(device).manual_seed(seed)
    source = DevicePool(renders, pool, device) if pool else None
    g.requires_grad_(True)
    # a linear read-out of the factors from w keeps the mapping's codes separable by shape and colour
    # (it must learn argmax), so synthesis is never asked to draw an average of shapes
    head = torch.nn.Linear(Z_DIM, N_FACTOR_FEATURES).to(device)
    opt = torch.optim.Adam([*g.parameters(), *head.parameters()], lr=lr, betas=(0.0, 0.99))
    critic = PatchCritic().to(device) if adversarial else None
    opt_critic = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.0, 0.99)) if critic else None
    budget = TimeBudget(minutes)
    while budget.running():
        f = budget.fraction
        set_lr([opt, opt_critic], lr * (1.0 if f < 0.6 else 0.3 if f < 0.85 else 0.1))
        if source:
            source.refresh()
            b = source.draw(batch, gen)
        else:
            b = {k: v.to(device, non_blocking=True) for k, v in next(renders).items()}
        w = g.mapping(b["z"])
        pred, n_cat = head(w), len(SHAPES) + len(COLOURS)
        aux = (
            F.cross_entropy(pred[:, : len(SHAPES)], b["shape"])
            + F.cross_entropy(pred[:, len(SHAPES) : n_cat], b["colour"])
            + F.mse_loss(pred[:, n_cat:], b["features"][:, n_cat:])
        )
        out = g.synthesis(g.broadcast(w))
        loss = object_weighted_l1(out, b["images"], b["weight"]) + 0.1 * aux
        if critic:
            d_loss = critic_loss(critic, b["images"], out, r1_gamma=0.1)
            opt_critic.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_critic.step()
            critic.requires_grad_(False)
            loss = loss + adversarial * F.softplus(-critic(out)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if critic:
            critic.requires_grad_(True)
        if budget.step() % 50 == 0:
            extra = f" critic {d_loss.item():.3f}" if critic else ""
            print(
                f"finetune step {budget.steps} {budget.elapsed:6.0f}s loss {loss.item():.4f} factors "
                f"{aux.item():.3f}{extra}",
                flush=True,
            )
    print(f"finetune: {budget.steps} steps of {batch} in {budget.elapsed:.0f} s", flush=True)


@torch.no_grad()
def content_agreement(g: Generator, n: int = 512, seed: int = 123) -> dict[str, float]:
    """The judge on samples, compared with the scene each latent stands for."""
    judge = load_judge(JUDGE_WEIGHTS)
    z = torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))
    device = next(g.parameters()).device
    images = torch.cat([g(x.to(device)).cpu() for x in z.split(128)])
    truth = from_scenes(scene_of_z(z))
    acc = judge_accuracy(judge, images, truth.style, truth.shape, truth.colour)
    acc["l1_to_render"] = float((images - truth.images).abs().mean())
    return acc


app = script_app(__doc__)


@app.command(help=__doc__)
def main(
    minutes: float = minutes_option(25, "Stage 1 (stage 2 takes a tenth of it)."),
    batch: int = typer.Option(32),
    lr: float = typer.Option(2e-3),
    seed: int = typer.Option(2),
    threads: int = threads_option(),
    finetune_minutes: float = typer.Option(0, help="Stage 3: synthesis on the mapping's own codes."),
    continue_from: Path | None = typer.Option(
        None, help="Skip stages 1-2: fine-tune this saved generator (stage 3)."
    ),
    device: str = typer.Option("cpu", help="Stage 3 / --continue-from only."),
    workers: int = typer.Option(0, help="Render processes for stage 3 (0: render in this one)."),
    pool: int = typer.Option(0, help="Stage 3: renders kept on --device (0: each batch fresh)."),
    adversarial: float = typer.Option(
        0.0, help="Stage 3: weight of a patch critic's loss beside the L1 (0: regression only)."
    ),
    out: Path = typer.Option(GENERATOR_WEIGHTS, help="Weights file to write."),
) -> None:
    made_by = {k: str(v) for k, v in locals().items() if k not in ("out", "threads", "workers")}
    set_up(threads, seed)
    if continue_from:
        from nada_train.checkpoints import load_generator

        g = load_generator(continue_from, "cpu").generator.train()
    else:
        g = Generator(generator_config())
        enc = FactorEncoder()
        print(f"generator {sum(p.numel() for p in g.parameters()) / 1e6:.2f} M parameters", flush=True)
        stage1(g, enc, minutes, batch, lr, seed)
        stage2(g, enc, max(1.0, minutes / 10), 1e-3, seed)
    if finetune_minutes or continue_from:
        finetune(g.to(device), finetune_minutes or minutes, batch, lr, seed + 1, workers, pool, adversarial)
    g = g.cpu()
    g.set_w_avg(None)
    g.eval()
    save_safetensors(g, out)  # first: nothing after this may lose the training
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)", flush=True)
    report = content_agreement(g) if JUDGE_WEIGHTS.exists() else {}
    print("judge on 512 samples vs the intended scene:", json.dumps(report), flush=True)
    save_safetensors(g, out, {"world_report": json.dumps(report), "made_by": json.dumps(made_by)})


if __name__ == "__main__":
    run_script(app, "nada_world.train_generator")
