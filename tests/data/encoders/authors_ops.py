"""Pure-PyTorch stand-ins for the CUDA ops of the authors' StyleGAN2 copy (make_fixtures.py only)."""

import torch
import torch.nn.functional as F
from torch import nn


def fused_leaky_relu(input, bias, negative_slope=0.2, scale=2**0.5):
    rest = [1] * (input.ndim - bias.ndim - 1)
    return F.leaky_relu(input + bias.view(1, bias.shape[0], *rest), negative_slope=negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel, negative_slope=0.2, scale=2**0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.negative_slope, self.scale = negative_slope, scale

    def forward(self, input):
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)


def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    n, c, h, w = input.shape
    x = input.reshape(n * c, 1, h, w)
    if up > 1:
        z = x.new_zeros(n * c, 1, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    x = F.conv2d(x, torch.flip(kernel, [0, 1])[None, None].to(x))
    x = x[:, :, ::down, ::down]
    return x.reshape(n, c, x.shape[2], x.shape[3])
