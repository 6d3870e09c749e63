"""Generator output -> 8-bit pixels."""

from __future__ import annotations

import math

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8, rounded as torchvision's save_image (which
    rosinality's generate.py uses): floor(((x + 1) / 2) * 255 + 0.5)."""
    x = (images.clamp(-1, 1) + 1) / 2
    x = torch.floor(x * 255 + 0.5).clamp(0, 255)
    return x.permute(0, 2, 3, 1).to(torch.uint8)


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio of a against b in dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
