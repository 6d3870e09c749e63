"""The StyleGAN3 generator (configs T and R): the shared mapping network, a Fourier-feature input and
a stack of alias-free synthesis layers, the last one ToRGB.

W+ code 0 drives the input's transform, code i the i-th layer (layers.{i-1}), the last code the
ToRGB layer: NADA's adaptive selection maps codes to layers one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from nada_train.generator.network import NoiseMode, StyleGenerator
from nada_train.generator.stylegan3_config import StyleGAN3Config
from nada_train.generator.stylegan3_layers import AliasFreeLayer, FourierInput


class StyleGAN3Generator(StyleGenerator):
    def __init__(self, config: StyleGAN3Config):
        super().__init__(config)
        c = config
        self.input = FourierInput(
            c.style_dim, c.input_channels, c.input_size, c.input_sampling_rate, c.input_bandwidth
        )
        self.layers = nn.ModuleList(AliasFreeLayer(spec, c.style_dim, c.conv_clamp) for spec in c.layers[:-1])
        self.to_rgb = AliasFreeLayer(c.layers[-1], c.style_dim, c.conv_clamp)
        self._register_w_avg()

    def synthesis(
        self, ws: torch.Tensor, noise_mode: NoiseMode = "const", fused: bool = False
    ) -> torch.Tensor:
        """W+ codes [batch, n_latent, style_dim] -> image [batch, 3, H, W] in about [-1, 1]. StyleGAN3
        has no noise inputs and no grouped form: noise_mode and fused are accepted for a common interface
        and change nothing."""
        assert ws.ndim == 3 and ws.shape[1:] == (self.n_latent, self.config.style_dim), tuple(ws.shape)
        x = self.input(ws[:, 0])
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i + 1])
        x = self.to_rgb(x, ws[:, -1]) * self.config.output_scale
        return self.crop(x)

    def layers_of_code(self, code: int, include_torgb: bool = False) -> list[str]:
        """Code 0: the input (its transform); code i in 1..len(layers): layers.{i-1}; the last code:
        to_rgb (only with include_torgb)."""
        if not 0 <= code < self.n_latent:
            raise IndexError(f"W+ code {code} out of range 0..{self.n_latent - 1}")
        if code == 0:
            return ["input"]
        if code <= len(self.layers):
            return [f"layers.{code - 1}"]
        return ["to_rgb"] if include_torgb else []

    def layer_set(self, name: str) -> list[str]:
        """all = the input and every layer but ToRGB; shape = the input and the first quarter of the
        layers (the lowest cutoff frequencies: layout and pose); texture = the layers above those."""
        n = len(self.layers)
        low = max(1, n // 4)
        picks = {
            "all": ["input"] + [f"layers.{i}" for i in range(n)],
            "shape": ["input"] + [f"layers.{i}" for i in range(low)],
            "texture": [f"layers.{i}" for i in range(low, n)],
        }
        if name not in picks:
            raise ValueError(f"unknown layer set {name!r}; choose from {', '.join(picks)}")
        return picks[name]

    def torgb_names(self) -> list[str]:
        return ["to_rgb"]
