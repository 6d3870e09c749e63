"""StyleGAN2 building blocks. Parameter and buffer names follow rosinality/stylegan2-pytorch so its
checkpoints load strictly; the arithmetic is plain PyTorch (no compiled ops) and exports to ONNX."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def blur_kernel_2d(taps: tuple[int, ...], gain: float = 1.0) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D kernel (outer product, sums to `gain`)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """leaky_relu(x + bias) * sqrt(2): the activation every StyleGAN2 layer uses."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), LRELU_SLOPE) * LRELU_GAIN


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, then filter each channel with `kernel` (FIR, correlation of
    the flipped kernel, as the reference op). Written with reshape/pad/conv so it exports with a
    dynamic batch."""
    _, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(-1, channels, height, 1, width, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(-1, channels, height * up, width * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].expand(channels, 1, -1, -1)
    return F.conv2d(x, weight, groups=channels)


REDUCED_DTYPES = (torch.float16, torch.bfloat16)  # weights in these take the reduced form


class LayerEdit(NamedTuple):
    """A lightweight domain's change of one layer's style (nada_train.domains): style * scale + shift.
    Each [in_channel] (one domain for the whole batch) or [batch, in_channel] (a domain per item);
    None leaves that part alone."""

    scale: torch.Tensor | None = None
    shift: torch.Tensor | None = None

    def apply(self, style: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            style = style * self.scale
        if self.shift is not None:
            style = style + self.shift
        return style


class Blur(nn.Module):
    def __init__(self, taps: tuple[int, ...], pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling with a blur filter (the ToRGB skip path)."""

    def __init__(self, taps: tuple[int, ...]):
        super().__init__()
        self.register_buffer("kernel", blur_kernel_2d(taps, gain=4.0))
        p = len(taps) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class PixelNorm(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(torch.mean(z * z, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored at N(0, 1/lr_mul), scaled at run time."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by a style, then demodulated.

    Equivalent forms, chosen per call (as NVIDIA's fused_modconv):
    - unfused (default): scale activations by the style, convolve with the shared weight, scale the
      output by the per-sample demodulation coefficients. Exports to ONNX with a dynamic batch.
    - fused=True: one grouped convolution with per-sample weights (groups = batch). Often faster for
      training on GPUs; cannot export with a dynamic batch. Tested equal to the unfused form.
    - reduced: the unfused form with fp16/bf16 weights (an inference copy's), the style and the
      demodulation kept in fp32. Taken whenever the weights are fp16 or bf16.
    """

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        if upsample:
            p = (len(blur_taps) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def extra_repr(self) -> str:
        return f"{self.in_channel}, {self.out_channel}, k={self.kernel_size}, upsample={self.upsample}"

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, fused: bool = False, edit: LayerEdit | None = None
    ) -> torch.Tensor:
        """edit: a lightweight domain's change of this layer's style (None: the layer as trained)."""
        assert x.ndim == 4 and x.shape[1] == self.in_channel, (tuple(x.shape), self.in_channel)
        style = self.modulation(w)  # [batch, in_channel]
        if edit is not None:
            style = edit.apply(style)
        weight = self.weight[0] * self.scale  # [out, in, k, k]
        reduced = weight.dtype in REDUCED_DTYPES
        if fused:
            if reduced:
                raise ValueError("the fused (grouped) form is fp32 only; an fp16/bf16 copy renders unfused")
            return self._forward_grouped(x, style, weight)
        if reduced:
            return self._forward_reduced(x, style, weight)
        x = x * style[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (w[o,i,k] * s[b,i])^2 = (s^2) @ (sum_k w^2)^T
            dcoefs = torch.rsqrt(style.square() @ weight.square().sum((2, 3)).t() + 1e-8)
            out = out * dcoefs[:, :, None, None]
        return out

    def _forward_reduced(self, x: torch.Tensor, style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Activations and weights in fp16/bf16, the style and demodulation in fp32 (the inference
        copy's mixed precision). The style enters divided by its largest magnitude and that factor
        leaves with the demodulation, so fp16 sums cannot overflow (NVIDIA's fp16 layers do the same)."""
        x = x.to(weight.dtype)  # random noise arrives in fp32
        peak = style.abs().amax(1, keepdim=True).clamp_min(1e-8)  # [batch, 1]
        out_scale = peak
        if self.demodulate:
            out_scale = peak * torch.rsqrt(style.square() @ weight.float().square().sum((2, 3)).t() + 1e-8)
        x = x * (style / peak).to(x.dtype)[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        return out * out_scale.to(out.dtype)[:, :, None, None]

    def _forward_grouped(self, x: torch.Tensor, style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        w = weight[None] * style[:, None, :, None, None]  # [batch, out, in, k, k]
        if self.demodulate:
            w = w * torch.rsqrt(w.square().sum((2, 3, 4)) + 1e-8)[:, :, None, None, None]
        k = self.kernel_size
        x = x.reshape(1, batch * self.in_channel, height, width)
        if self.upsample:
            w = w.transpose(1, 2).reshape(batch * self.in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, w, stride=2, groups=batch)
            out = self.blur(out.reshape(batch, self.out_channel, out.shape[2], out.shape[3]))
            return out
        out = F.conv2d(
            x, w.reshape(batch * self.out_channel, self.in_channel, k, k), padding=self.padding, groups=batch
        )
        return out.reshape(batch, self.out_channel, height, width)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv -> per-pixel noise -> biased leaky ReLU (rosinality's `activate.bias`), then,
    with a clamp (NVIDIA's conv_clamp), the activations limited to +-clamp."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        style_dim: int,
        upsample: bool = False,
        blur_taps=(1, 3, 3, 1),
        clamp: float | None = None,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, 3, style_dim, upsample=upsample, blur_taps=blur_taps
        )
        self.noise = NoiseInjection()
        self.activate = _BiasLeakyReLU(out_channel)
        self.clamp = clamp

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        noise: torch.Tensor | None,
        fused: bool = False,
        edit: LayerEdit | None = None,
    ) -> torch.Tensor:
        out = self.activate(self.noise(self.conv(x, w, fused, edit), noise))
        return out if self.clamp is None else out.clamp(-self.clamp, self.clamp)


class _BiasLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(x, self.bias)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), added to the upsampled RGB of the layer below."""

    def __init__(
        self,
        in_channel: int,
        style_dim: int,
        upsample: bool = True,
        blur_taps=(1, 3, 3, 1),
        clamp: float | None = None,
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_taps)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        skip: torch.Tensor | None = None,
        fused: bool = False,
        edit: LayerEdit | None = None,
    ) -> torch.Tensor:
        # the inference copy keeps the RGB sum in fp32
        out = self.conv(x, w, fused, edit).to(self.bias.dtype) + self.bias
        if self.clamp is not None:  # this layer's own output, before the skip is added (NVIDIA's order)
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        x = self.input.expand(like.shape[0], -1, -1, -1)
        # a constant stored channels_last (an inference copy's) starts the activations channels_last:
        # every conv after it follows
        stored_channels_last = not self.input.is_contiguous() and self.input.is_contiguous(
            memory_format=torch.channels_last
        )
        return x.contiguous(memory_format=torch.channels_last) if stored_channels_last else x
