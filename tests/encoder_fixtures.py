"""Weights for encoder fixtures, drawn from each tensor's name and shape only, so that the authors'
modules (in a scratch folder: tests/data/encoders/make_fixtures.py) and ours get the same tensors
wherever their names agree; and the photos the fixtures encode."""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch


def named_weights(module: torch.nn.Module, seed: int = 0) -> None:
    """Every tensor of module's state dict from a generator seeded by its name: BN statistics and
    1-D weights near their usual values, convolutions at 1/sqrt(fan_in), equalised (2-D, 5-D)
    weights N(0, 1), biases small, counters 0; filter taps kept as built."""
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if name.endswith("kernel"):  # filter taps: as built
                continue
            if name.endswith("num_batches_tracked"):
                t.zero_()
                continue
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            n = torch.randn(t.shape, generator=g)
            if name.endswith("running_var"):
                value = 0.5 + torch.rand(t.shape, generator=g)
            elif name.endswith("modulation.bias"):
                value = 1 + 0.1 * n
            elif name.endswith((".bias", "running_mean")):
                value = 0.1 * n
            elif name.endswith(".weight") and t.ndim == 1:  # BN scale, PReLU slope, noise strength
                value = 0.5 + 0.1 * n
            elif name.endswith(".weight") and t.ndim == 4:  # a plain conv
                value = n / math.sqrt(t[0].numel())
            else:
                value = n
            t.copy_(value)


def photos(n: int = 2, size: int = 256, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size, 3]: smooth colour fields with a bright disc, never the same twice."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0, 1, (3, 3))
        img = np.stack([a[i] * xx + b[i] * yy + c[i] * xx * yy for i in range(3)], -1)
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] += 0.5
        out.append(np.clip(img / img.max() * 255, 0, 255).astype(np.uint8))
    return np.stack(out)
