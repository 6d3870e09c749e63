"""StyleGAN3 building blocks (Karras et al. 2021, "Alias-Free Generative Adversarial Networks") in
plain PyTorch: the Fourier-feature input, and the synthesis layer whose nonlinearity runs at a higher
sampling rate between a low-pass upsampling and a low-pass downsampling filter.

Written from the paper's description and the semantics NVIDIA's files carry; every op is a reshape,
pad, slice or (grouped) conv2d, so the layers export to ONNX with a dynamic batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nada_train.generator.layers import EqualLinear
from nada_train.generator.stylegan3_config import AliasFreeLayerSpec

LRELU_SLOPE = 0.2


def pad_or_crop(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """Zero-pad each side by a positive amount, crop it by a negative one."""
    x = F.pad(x, (max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)))
    height, width = x.shape[2], x.shape[3]
    return x[:, :, max(-y0, 0) : height - max(-y1, 0), max(-x0, 0) : width - max(-x1, 0)]


def zero_upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Insert factor-1 zeros after every sample, along both axes."""
    if factor == 1:
        return x
    _, channels, height, width = x.shape
    x = x.reshape(-1, channels, height, 1, width, 1)
    x = F.pad(x, (0, factor - 1, 0, 0, 0, factor - 1))
    return x.reshape(-1, channels, height * factor, width * factor)


def fir(x: torch.Tensor, taps: torch.Tensor | None, gain: float = 1.0, stride: int = 1) -> torch.Tensor:
    """Filter every channel with `taps` (convolution, 'valid'), keeping every stride-th sample.
    1-D taps filter rows then columns (separable, gain split between them); 2-D taps at once."""
    if taps is None:
        return x[:, :, ::stride, ::stride] if stride > 1 else x * gain if gain != 1 else x
    channels = x.shape[1]
    if taps.ndim == 1:
        k = (torch.flip(taps, (0,)) * math.sqrt(gain)).to(x.dtype)
        x = F.conv2d(
            x, k[None, None, None, :].expand(channels, 1, 1, -1), groups=channels, stride=(1, stride)
        )
        return F.conv2d(
            x, k[None, None, :, None].expand(channels, 1, -1, 1), groups=channels, stride=(stride, 1)
        )
    k = (torch.flip(taps, (0, 1)) * gain).to(x.dtype)
    return F.conv2d(x, k[None, None].expand(channels, 1, -1, -1), groups=channels, stride=stride)


def filtered_leaky_relu(
    x: torch.Tensor,
    bias: torch.Tensor,
    up_taps: torch.Tensor | None,
    down_taps: torch.Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """bias; upsample by `up` (zeros, pad, low-pass with gain up^2); leaky ReLU times gain, clamped to
    +-clamp; low-pass and keep every `down`-th sample. The nonlinearity's new frequencies above the
    output's band are filtered out before decimation: the alias-free part of StyleGAN3."""
    x = x + bias.to(x.dtype)[None, :, None, None]
    x = pad_or_crop(zero_upsample(x, up), *padding)
    x = fir(x, up_taps, gain=up**2)
    x = F.leaky_relu(x, slope) * gain if slope != 1 else x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return fir(x, down_taps, stride=down)


class FourierInput(nn.Module):
    """The synthesis input: sinusoids of fixed random frequencies (a disc of radius `bandwidth`) and
    phases, sampled on the input grid, rotated and translated per sample by an affine map of w, then
    mixed by a learned channel matrix. `transform` is the user's inverse transform of the image."""

    def __init__(self, style_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = EqualLinear(style_dim, 4)
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", torch.zeros(channels, 2))
        self.register_buffer("phases", torch.zeros(channels))
        coords = (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) / self.sampling_rate
        self.register_buffer("coords", coords, persistent=False)  # sample positions, image units

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w)  # (cos, sin, tx, ty), normalised to a rotation
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(1)
        zeros, ones = torch.zeros_like(cos), torch.ones_like(cos)
        rotate = torch.stack([cos, -sin, zeros, sin, cos, zeros, zeros, zeros, ones], 1).reshape(-1, 3, 3)
        translate = torch.stack([ones, zeros, -tx, zeros, ones, -ty, zeros, zeros, ones], 1).reshape(-1, 3, 3)
        transform = rotate @ translate @ self.transform  # image rotated, then translated, then the user's
        phases = self.phases + (self.freqs @ transform[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = self.freqs @ transform[:, :2, :2]  # [B, C, 2]
        # frequencies the user's transform pushes out of band fade out
        amplitudes = (
            1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        ).clamp(0, 1)
        fx, fy = freqs[:, None, None, :, 0], freqs[:, None, None, :, 1]  # [B, 1, 1, C]
        x = (
            self.coords[None, None, :, None] * fx
            + self.coords[None, :, None, None] * fy
            + phases[:, None, None, :]
        )
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]  # [B, H, W, C]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class AliasFreeLayer(nn.Module):
    """Modulated conv (weights normalised, styles normalised, demodulated except in ToRGB, scaled by
    the input's tracked magnitude), then the filtered leaky ReLU of `filtered_leaky_relu`.

    The style modulates the input channels and the demodulation scales the output channels, so one
    conv with the shared weight serves the whole batch (equal to NVIDIA's grouped form)."""

    def __init__(self, spec: AliasFreeLayerSpec, style_dim: int, clamp: float | None):
        super().__init__()
        self.spec, self.clamp = spec, clamp
        self.affine = EqualLinear(style_dim, spec.in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(spec.out_channels, spec.in_channels, spec.kernel, spec.kernel))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        if spec.up_taps > 1:
            self.register_buffer("up_filter", torch.zeros(spec.up_taps))
        else:
            self.up_filter = None
        if spec.down_taps > 1:
            self.register_buffer(
                "down_filter",
                torch.zeros((spec.down_taps, spec.down_taps) if spec.radial else (spec.down_taps,)),
            )
        else:
            self.down_filter = None

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"{s.in_channels}->{s.out_channels}, {s.in_size}->{s.out_size} px, kernel {s.kernel}, up {s.up}, "
            f"down {s.down}" + (", torgb" if s.torgb else "")
        )

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.spec
        assert x.shape[1:] == (s.in_channels, s.in_size, s.in_size), (tuple(x.shape), s)
        styles = self.affine(w)
        weight = self.weight
        if s.torgb:
            styles = styles / math.sqrt(s.in_channels * s.kernel**2)
        else:
            # Both normalisations cancel in the demodulation; they keep reduced precision in range.
            # NVIDIA normalises the styles over the whole batch; per sample here keeps each image
            # independent of its batch (the two differ only through the 1e-8 below).
            weight = weight * weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        x = x * (styles * self.magnitude_ema.rsqrt())[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=s.kernel - 1)
        if not s.torgb:
            demod = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # [B, out]
            x = x * demod[:, :, None, None].to(x.dtype)
        gain, slope = (1.0, 1.0) if s.torgb else (math.sqrt(2), LRELU_SLOPE)
        return filtered_leaky_relu(
            x,
            self.bias,
            self.up_filter,
            self.down_filter,
            s.up,
            s.down,
            s.padding,
            gain=gain,
            slope=slope,
            clamp=self.clamp,
        )
