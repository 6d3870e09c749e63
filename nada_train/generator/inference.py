"""The generator as inference runs it fastest: a frozen copy with the synthesis convolutions in fp16 or
bf16 and channels_last activations, the parts where rounding matters kept in fp32 (the mapping and
truncation, each layer's style and demodulation, the RGB sum), and the gate that refuses such a copy
when its images drift from fp32's."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from nada_core.errors import FieldError
from nada_core.seeds import z_batch
from nada_train.generator.layers import ModulatedConv2d, ToRGB
from nada_train.generator.network import Generator, StyleGenerator
from nada_train.images import psnr, to_uint8

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_PSNR_DB = 40.0  # a reduced-precision image against fp32's: rounding moves single pixels by several
# levels, so the gate is the image's PSNR, not its worst pixel
GATE_SEEDS = range(16)  # the seeds every reduced-precision path is checked on
NOISE_MODES = ("const", "random", "none")  # the checkpoint's stored noise, fresh noise, no noise


def inference_copy(
    generator: StyleGenerator, precision: str = "fp32", channels_last: bool = False
) -> StyleGenerator:
    """A frozen eval copy of `generator` (on its device) at `precision`; inputs (z, ws) and images stay
    fp32, so it drops in wherever the generator renders."""
    if precision not in DTYPES:
        raise FieldError(f"{{precision}} {precision}: choose fp32, fp16 or bf16")
    g = copy.deepcopy(generator).eval().requires_grad_(False)
    if precision == "fp32" and not channels_last:
        return g
    if not isinstance(g, Generator):
        raise FieldError(
            f"{{precision}} {precision}: reduced precision and channels_last are built for StyleGAN2 bases; "
            "render this StyleGAN3 base at fp32"
        )
    g.to(DTYPES[precision])
    g.style.float()
    g.w_avg.data = g.w_avg.data.float()
    for m in g.modules():
        if isinstance(m, ModulatedConv2d):
            m.modulation.float()  # its fp16/bf16 weight alone makes it take the reduced form
        elif isinstance(m, ToRGB):
            m.bias.data = m.bias.data.float()
    if channels_last:  # a channels_last constant input makes every activation after it channels_last
        g.input.input.data = g.input.input.data.contiguous(memory_format=torch.channels_last)
    return g


@dataclass
class Gate:
    """A reduced-precision path's images against fp32's on the gate seeds."""

    precision: str
    psnr_db: float
    max_level_difference: int

    @property
    def passed(self) -> bool:
        return self.psnr_db >= MIN_PSNR_DB

    def describe(self) -> str:
        return (
            f"{self.precision}: PSNR {self.psnr_db:.1f} dB against fp32 on seeds 0-{len(GATE_SEEDS) - 1} "
            f"(limit {MIN_PSNR_DB:.0f} dB), largest pixel difference {self.max_level_difference} levels"
        )


def render(
    generator: StyleGenerator, seeds: list[int], truncation: float, noise: str = "const", batch: int = 8
) -> np.ndarray:
    """uint8 images [N, H, W, 3] of these seeds (NVlabs' z per seed): nada-generate's path."""
    return render_z(
        generator, torch.from_numpy(z_batch(seeds, generator.config.z_dim)), truncation, noise, batch
    )


def render_z(
    generator: StyleGenerator, z_all: torch.Tensor, truncation: float, noise: str, batch: int = 8
) -> np.ndarray:
    """uint8 images [N, H, W, 3] of latents z [N, z_dim], `batch` at a time; noise: const, random or none."""
    check_noise(noise)
    device = next(generator.parameters()).device
    out = []
    with torch.no_grad():
        for z in z_all.split(batch):
            out.append(to_uint8(generator(z.to(device), truncation=truncation, noise_mode=noise)).cpu())
    return torch.cat(out).numpy()


def check_noise(noise: str) -> None:
    if noise not in NOISE_MODES:
        raise FieldError(f"{{noise}} {noise}: choose {', '.join(NOISE_MODES[:-1])} or {NOISE_MODES[-1]}")


def check_render_precision(precision: str) -> None:
    if precision not in ("auto", *DTYPES):
        raise FieldError(f"{{precision}} {precision}: choose auto, fp32, fp16 or bf16")


def precision_gate(reference: StyleGenerator, fast: StyleGenerator, precision: str) -> Gate:
    """The worst-seed PSNR of `fast`'s images against `reference`'s (fp32) and the largest pixel difference."""
    want, got = (render(g, list(GATE_SEEDS), 1.0) for g in (reference, fast))
    worst = min(psnr(g, w, 255.0) for g, w in zip(got, want))
    return Gate(precision, worst, int(np.abs(got.astype(int) - want.astype(int)).max()))


def fastest_copy(
    generator: StyleGenerator, precision: str = "auto", on_gpu: bool | None = None
) -> tuple[StyleGenerator, str]:
    """The copy nada-generate renders with, and a line saying what it is. auto: on a GPU fp16 with
    channels_last where it passes the gate (else fp32), on the CPU fp32 (its reduced-precision
    convolutions are slower than fp32's). A precision asked for by name must pass the gate.
    on_gpu: choose as for a GPU (True) or the CPU (False); default: by the generator's device."""
    check_render_precision(precision)
    if on_gpu is None:
        on_gpu = next(generator.parameters()).device.type == "cuda"
    stylegan2 = isinstance(generator, Generator)
    if precision == "auto":
        if not (on_gpu and stylegan2):
            return inference_copy(generator, "fp32", channels_last=on_gpu and stylegan2), "fp32"
        fast = inference_copy(generator, "fp16", channels_last=True)
        gate = precision_gate(generator, fast, "fp16")
        if gate.passed:
            return fast, gate.describe()
        return inference_copy(
            generator, "fp32", channels_last=True
        ), f"fp32 (fp16 refused: {gate.describe()})"
    fast = inference_copy(generator, precision, channels_last=on_gpu and stylegan2)
    if precision == "fp32":
        return fast, "fp32"
    gate = precision_gate(generator, fast, precision)
    if not gate.passed:
        raise FieldError(
            f"{{precision}} {precision}: its images drift too far from fp32's ({gate.describe()}); render at "
            "fp32 or with {precision} auto"
        )
    return fast, gate.describe()
