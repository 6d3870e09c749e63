"""A photo into a generator's latent space by optimisation, for any base (no encoder needed).

The recipe of NVIDIA's projector (stylegan2-ada-pytorch), in W or W+: start every code at w_avg, add
noise to it that fades over the first three quarters of the steps (so the search does not settle in
the first basin), ramp the learning rate up and then down with a cosine, and optimise the
generator's per-layer noise maps too, kept from explaining the image by a penalty on their
autocorrelation at every scale and renormalised after each step. The distance is a perceptual one
(image embeddings; a CLIP here when no LPIPS network is given) plus pixel L2.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from nada_core.errors import FieldError
from nada_train.checkpoints import LoadedGenerator
from nada_train.generator import Generator, StyleGenerator
from nada_train.images import psnr, to_uint8

SPACES = ("w", "w+")


@dataclass
class ProjectionOptions:
    """steps: optimisation steps (NVIDIA's default is 1000); space: w (one code for every layer, as
    NVIDIA's) or w+ (one per layer: closer reconstructions, edits less faithful to the base);
    lr: the peak learning rate; code_noise: the starting noise on the codes, in units of the spread
    of w; noise_weight: the noise maps' autocorrelation penalty; pixel_weight: the pixel L2 term's
    weight beside the perceptual distance; w_avg_samples: codes drawn to measure w's spread."""

    steps: int = 1000
    space: str = "w+"
    lr: float = 0.1
    code_noise: float = 0.05
    noise_weight: float = 1e5
    pixel_weight: float = 1.0
    w_avg_samples: int = 10_000
    seed: int = 0

    def validate(self) -> None:
        if self.space not in SPACES:
            raise FieldError(f"{{space}} {self.space}: choose w or w+")
        if self.steps < 1:
            raise FieldError(f"{{steps}} {self.steps}: must be at least 1")
        if self.lr <= 0:
            raise FieldError(f"{{lr}} {self.lr}: must be positive")


@dataclass
class Projection:
    """ws: the W+ codes found [N, n_latent, w_dim]; noise: the noise maps found with them (StyleGAN2;
    the images need them: a render with the generator's stored noise differs in the fine detail);
    images: the renders, uint8 [N, H, W, 3]; losses: the total loss at each step; psnr_db: each
    render's PSNR against its target; distance: what measured the perceptual distance."""

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]
    images: np.ndarray
    losses: list[float] = field(default_factory=list)
    psnr_db: list[float] = field(default_factory=list)
    distance: str = ""


def learning_rate(t: float, peak: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """NVIDIA's schedule at progress t in [0, 1): a linear ramp up over the first 5% and a cosine ramp
    down over the last 25%."""
    down = min(1.0, (1.0 - t) / rampdown)
    down = 0.5 - 0.5 * math.cos(down * math.pi)
    return peak * down * min(1.0, t / rampup)


def noise_penalty(maps: list[torch.Tensor]) -> torch.Tensor:
    """How much the noise maps carry structure: the squared autocorrelation at a one-pixel shift, in
    both directions, summed over every scale down to 8 x 8 (each map halved until then)."""
    total = maps[0].new_zeros(())
    for v in maps:
        v = v[None, None] if v.ndim == 2 else v
        while True:
            total = (
                total
                + (v * torch.roll(v, 1, dims=3)).mean() ** 2
                + (v * torch.roll(v, 1, dims=2)).mean() ** 2
            )
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total


def target_tensor(images: np.ndarray, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] (or one [H, W, 3]) -> [N, 3, h, w] in [-1, 1] at the generator's size."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise FieldError(
            f"{{images}}: want uint8 RGB images [N, H, W, 3], got {images.dtype} {list(images.shape)}"
        )
    x = torch.as_tensor(np.array(images, copy=not images.flags.writeable))  # torch wants writable memory
    x = x.permute(0, 3, 1, 2).float().to(device) / 127.5 - 1
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="area")
    return x


def project(
    generator: StyleGenerator | LoadedGenerator,
    images: np.ndarray,
    *,
    perceptual: Callable[[torch.Tensor], torch.Tensor] | None = None,
    perceptual_name: str = "",
    lpips=None,
    callback: Callable[[int, float], None] | None = None,
    **options,
) -> Projection:
    """Project uint8 images [N, H, W, 3] into `generator`'s W or W+ space (the generator is left as it
    was; the images are resized to its size). options: ProjectionOptions' fields (steps, space, ...).
    perceptual: images in [-1, 1] -> L2-normalised embeddings (a CLIP's encode_images); without one
    the distance is pixel L2 alone. lpips: a nada_train.perceptual.LPIPS, the distance NVIDIA's
    projector uses (taken over `perceptual`). callback(step, loss) after each step."""
    known = {f.name for f in fields(ProjectionOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise FieldError(
            f"{{{unknown[0]}}}: not an option of a projection; the options are {', '.join(sorted(known))}"
        )
    opts = ProjectionOptions(**options)
    if isinstance(generator, LoadedGenerator):
        generator = generator.generator
    opts.validate()
    device = next(generator.parameters()).device
    g = copy.deepcopy(generator).eval().requires_grad_(False)
    c = g.config
    target = target_tensor(images, tuple(c.image_shape), device)
    n = target.shape[0]

    rng = torch.Generator().manual_seed(opts.seed)
    with torch.no_grad():
        w = g.mapping(torch.randn(opts.w_avg_samples, c.z_dim, generator=rng).to(device))
        w_avg = w.mean(0)
        w_std = float(((w - w_avg).square().sum() / opts.w_avg_samples).sqrt())
        target_embedding = perceptual(target) if perceptual is not None and lpips is None else None
    if lpips is not None:
        lpips = lpips.to(device)

        def distance(synth: torch.Tensor) -> torch.Tensor:
            return lpips.distance(synth, target)

    elif perceptual is not None:

        def distance(synth: torch.Tensor) -> torch.Tensor:
            return 1 - (perceptual(synth) * target_embedding).sum(-1)

    else:
        distance = None
    codes = 1 if opts.space == "w" else g.n_latent
    w_opt = w_avg.expand(n, codes, -1).clone().requires_grad_(True)

    noise_maps: list[torch.Tensor] = []
    if isinstance(g, Generator):  # StyleGAN2's per-layer noise, optimised too (StyleGAN3 has none)
        for name, buffer in g.noises.named_buffers():
            fresh = torch.randn(buffer.shape, generator=rng).to(device).requires_grad_(True)
            setattr(g.noises, name, fresh)
            noise_maps.append(fresh)
    optimizer = torch.optim.Adam([w_opt, *noise_maps], betas=(0.9, 0.999), lr=opts.lr)

    losses = []
    for step in range(opts.steps):
        t = step / opts.steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(t, opts.lr)
        fade = w_std * opts.code_noise * max(0.0, 1.0 - t / 0.75) ** 2
        ws = w_opt + torch.randn(w_opt.shape, generator=rng).to(device) * fade
        synth = g.synthesis(ws.expand(n, g.n_latent, -1), noise_mode="const")
        loss = opts.pixel_weight * (synth - target).square().mean((1, 2, 3)).sum()
        if distance is not None:
            loss = loss + distance(synth).sum()
        if noise_maps:
            loss = loss + opts.noise_weight * noise_penalty(noise_maps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the noise maps back to zero mean, unit variance
            for v in noise_maps:
                v -= v.mean()
                v *= v.square().mean().rsqrt()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step + 1, losses[-1])

    with torch.no_grad():
        found = w_opt.detach().expand(n, g.n_latent, -1).clone()
        rendered = to_uint8(g.synthesis(found, noise_mode="const")).cpu().numpy()
    wanted = to_uint8(target).cpu().numpy()
    return Projection(
        found,
        {name: v.detach().clone() for name, v in g.noises.named_buffers()} if noise_maps else {},
        rendered,
        losses,
        [psnr(r, t, 255.0) for r, t in zip(rendered, wanted)],
        "LPIPS (VGG16) and pixel L2"
        if lpips is not None
        else perceptual_name or ("pixel L2 only" if perceptual is None else "a perceptual model"),
    )
