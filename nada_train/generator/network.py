"""The StyleGAN2 generator: mapping network (z -> w) and synthesis network (W+ -> image).

Module names are rosinality's (style, input, conv1, to_rgb1, convs, to_rgbs, noises) so its
checkpoints load with strict=True and adapted generators can be written back in its format.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

import torch
from torch import nn

from nada_train.generator.config import GeneratorConfig
from nada_train.generator.layers import (
    ConstantInput,
    EqualLinear,
    LayerEdit,
    PixelNorm,
    StyledConv,
    ToRGB,
)

NoiseMode = Literal["const", "random", "none"]


class StyleGenerator(nn.Module):
    """What every StyleGAN generator here shares: the mapping network z -> w (rosinality's names:
    style.1 ... style.n_mlp), truncation towards w_avg, W+ broadcasting and mixing, the crop box.
    A subclass builds the synthesis network and says which layers each W+ code drives."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        c = config
        widths = c.mlp_widths
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(widths[i], widths[i + 1], lr_mul=c.lr_mlp, activate=True) for i in range(c.n_mlp)],
        )

    def _register_w_avg(self) -> None:
        # Mean w for truncation: the checkpoint's "latent_avg" when it has one, else computed once.
        self.register_buffer("w_avg", torch.zeros(self.config.style_dim), persistent=False)
        self.w_avg_known = False

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    # ---- mapping -----------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.config.z_dim, tuple(z.shape)
        return self.style(z)

    def set_w_avg(self, w_avg: torch.Tensor | None, n_samples: int = 4096, seed: int = 0) -> None:
        """Use the checkpoint's latent_avg, or the mean of n_samples mapped z (rosinality's mean_latent)."""
        if w_avg is None:
            gen = torch.Generator().manual_seed(seed)
            z = torch.randn(n_samples, self.config.z_dim, generator=gen).to(self.w_avg.device)
            with torch.no_grad():
                w_avg = self.mapping(z).mean(0)
        self.w_avg.copy_(w_avg.reshape(-1).to(self.w_avg))
        self.w_avg_known = True

    def truncate(self, w: torch.Tensor, truncation: float | torch.Tensor) -> torch.Tensor:
        if not self.w_avg_known:
            self.set_w_avg(None)
        if isinstance(truncation, torch.Tensor):
            truncation = truncation.reshape(-1, *([1] * (w.ndim - 1)))
        return self.w_avg + truncation * (w - self.w_avg)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """w [batch, style_dim] -> W+ [batch, n_latent, style_dim]."""
        return w[:, None, :].expand(-1, self.n_latent, -1)

    def mix(self, w1: torch.Tensor, w2: torch.Tensor, inject_index: int | None = None) -> torch.Tensor:
        """Style mixing: codes before inject_index from w1, the rest from w2 (random index if None)."""
        if inject_index is None:
            inject_index = random.randint(1, self.n_latent - 1)
        ws = self.broadcast(w1).clone()
        ws[:, inject_index:] = w2[:, None, :]
        return ws

    def ws(self, z: torch.Tensor, truncation: float | torch.Tensor = 1.0) -> torch.Tensor:
        """z [batch, z_dim] -> W+ codes [batch, n_latent, w_dim]: mapping, truncation towards w_avg
        (psi a number, or one per sample [batch, 1]), the same w for every code. What nada-generate
        renders and what the exported mapping graph computes."""
        w = self.mapping(z)
        if isinstance(truncation, torch.Tensor) or truncation != 1.0:
            w = self.truncate(w, truncation)
        return self.broadcast(w)

    def synthesis(
        self, ws: torch.Tensor, noise_mode: NoiseMode = "const", fused: bool = False
    ) -> torch.Tensor:
        """fused: the grouped form of the modulated convolutions (layers.ModulatedConv2d), where the
        generator has one; the same images."""
        raise NotImplementedError

    def forward(
        self, z: torch.Tensor, truncation: float = 1.0, noise_mode: NoiseMode = "const", fused: bool = False
    ) -> torch.Tensor:
        return self.synthesis(self.ws(z, truncation), noise_mode, fused)

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        """The content box of the frame (the config's crop), or the whole frame."""
        if self.config.crop is None:
            return image
        left, top, right, bottom = self.config.crop
        return image[:, :, top:bottom, left:right]

    def set_crop(self, crop: tuple[int, int, int, int] | None) -> None:
        """Make the output the box (left, top, right, bottom) of the frame (None: the whole frame)."""
        self.config = replace(self.config, crop=None if crop is None else tuple(int(v) for v in crop))

    # ---- which layers learn -------------------------------------------------------------------
    def layers_of_code(self, code: int, include_torgb: bool = False) -> list[str]:
        """Module names modulated by W+ code `code` (0-based)."""
        raise NotImplementedError

    def layer_set(self, name: str) -> list[str]:
        """Module names of a fixed set: all, texture or shape."""
        raise NotImplementedError

    def torgb_names(self) -> list[str]:
        """The ToRGB modules (frozen unless --train-torgb)."""
        raise NotImplementedError


class Generator(StyleGenerator):
    """StyleGAN2 (config-f and its relatives), rosinality's module names."""

    def __init__(self, config: GeneratorConfig):
        super().__init__(config)
        c, taps = config, tuple(config.blur_kernel)
        clamp = c.conv_clamp
        self.input = ConstantInput(c.channel(4))
        self.conv1 = StyledConv(c.channel(4), c.channel(4), c.style_dim, blur_taps=taps, clamp=clamp)
        self.to_rgb1 = ToRGB(c.channel(4), c.style_dim, upsample=False, blur_taps=taps, clamp=clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = c.channel(4)
        for log_res in range(3, c.log_size + 1):
            out_channel = c.channel(2**log_res)
            self.convs.append(
                StyledConv(in_channel, out_channel, c.style_dim, upsample=True, blur_taps=taps, clamp=clamp)
            )
            self.convs.append(StyledConv(out_channel, out_channel, c.style_dim, blur_taps=taps, clamp=clamp))
            self.to_rgbs.append(ToRGB(out_channel, c.style_dim, blur_taps=taps, clamp=clamp))
            in_channel = out_channel
        self.noises = nn.Module()
        for i in range(c.num_noise_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        self._register_w_avg()

    # ---- synthesis ---------------------------------------------------------------------------
    def _noise(self, mode: NoiseMode, like: torch.Tensor) -> list[torch.Tensor | None]:
        stored = [getattr(self.noises, f"noise_{i}") for i in range(self.config.num_noise_layers)]
        if mode == "const":
            return stored
        if mode == "random":
            return [
                torch.randn(like.shape[0], 1, n.shape[2], n.shape[3], device=like.device, dtype=like.dtype)
                for n in stored
            ]
        if mode == "none":
            return [None] * len(stored)
        raise ValueError(f"noise mode must be const, random or none, got {mode!r}")

    def synthesis(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "const",
        fused: bool = False,
        edits: Mapping[str, LayerEdit] | None = None,
    ) -> torch.Tensor:
        """W+ codes [batch, n_latent, style_dim] -> image [batch, 3, H, W] in about [-1, 1] (size x size,
        or the config's crop box). fused: grouped modulated convolutions (training on GPUs). edits: a
        lightweight domain, by layer name (modulated_layers; nada_train.domains)."""
        assert ws.ndim == 3 and ws.shape[1:] == (self.n_latent, self.config.style_dim), tuple(ws.shape)
        edit = (edits or {}).get
        noise = self._noise(noise_mode, ws)
        x = self.input(ws)
        x = self.conv1(x, ws[:, 0], noise[0], fused, edit("conv1"))
        rgb = self.to_rgb1(x, ws[:, 1], fused=fused, edit=edit("to_rgb1"))
        code = 1
        for j, to_rgb in enumerate(self.to_rgbs):
            up, same = 2 * j, 2 * j + 1
            x = self.convs[up](x, ws[:, code], noise[1 + up], fused, edit(f"convs.{up}"))
            x = self.convs[same](x, ws[:, code + 1], noise[1 + same], fused, edit(f"convs.{same}"))
            rgb = to_rgb(x, ws[:, code + 2], rgb, fused, edit(f"to_rgbs.{j}"))
            code += 2
        return self.crop(rgb)

    def modulated_layers(self) -> dict[str, int]:
        """Every layer whose convolution a style modulates, by module name, with its style's width
        (input channels): what a lightweight domain changes."""
        names = ["conv1", "to_rgb1"] + [f"convs.{i}" for i in range(len(self.convs))]
        names += [f"to_rgbs.{j}" for j in range(len(self.to_rgbs))]
        return {n: self.get_submodule(n).conv.in_channel for n in names}

    # ---- which layers a W+ code drives -------------------------------------------------------
    def layers_of_code(self, code: int, include_torgb: bool = False) -> list[str]:
        """Module names modulated by W+ code `code` (0-based). Code 0: conv1; code 1: convs.0 and
        to_rgb1; code c>=2: convs.{c-1}, plus to_rgbs.{(c-3)/2} when c is odd."""
        if not 0 <= code < self.n_latent:
            raise IndexError(f"W+ code {code} out of range 0..{self.n_latent - 1}")
        names = ["conv1"] if code == 0 else []
        if 1 <= code <= len(self.convs):
            names.append(f"convs.{code - 1}")
        if include_torgb:
            if code == 1:
                names.append("to_rgb1")
            elif code >= 3 and code % 2 == 1:
                names.append(f"to_rgbs.{(code - 3) // 2}")
        return names

    def layer_set(self, name: str) -> list[str]:
        """all = constant input, conv1 and every conv (the reference's default); texture = input,
        conv1, convs 2..9; shape = input, conv1, convs 0..1."""
        n = len(self.convs)
        picks = {"all": range(n), "texture": range(2, min(10, n)), "shape": range(0, min(2, n))}
        if name not in picks:
            raise ValueError(f"unknown layer set {name!r}; choose from {', '.join(picks)}")
        return ["input", "conv1"] + [f"convs.{i}" for i in picks[name]]

    def torgb_names(self) -> list[str]:
        return ["to_rgb1"] + [f"to_rgbs.{i}" for i in range(len(self.to_rgbs))]
