"""Generator output -> 8-bit pixels and PNG files, and the field's seed convention."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nada_train.errors import NadaError
from nada_train.fileio import atomic_path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8, rounded as torchvision's save_image (which
    rosinality's generate.py uses): floor(((x + 1) / 2) * 255 + 0.5)."""
    x = (images.clamp(-1, 1) + 1) / 2
    x = torch.floor(x * 255 + 0.5).clamp(0, 255)
    return x.permute(0, 2, 3, 1).to(torch.uint8)


def save_png(pixels: np.ndarray | torch.Tensor, path: str | Path) -> None:
    """[H, W, 3] uint8 -> PNG, written atomically."""
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(tmp, format="PNG")


def grid(pixels: np.ndarray | torch.Tensor, rows: int, pad: int = 2) -> np.ndarray:
    """[N, H, W, 3] uint8 -> one [rows*H, cols*W, 3] mosaic, filled row by row, white gaps."""
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.cpu().numpy()
    n, h, w, _ = pixels.shape
    cols = -(-n // rows)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = pixels[i]
    return out


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise NadaError(f"--seeds '{text}': write seeds as 0-3,7 (non-negative integers and ranges)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise NadaError(f"--seeds '{text}': range {part} runs backwards; write {hi}-{lo}")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise NadaError("--seeds is empty; write e.g. 0-7")
    return seeds


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """NVlabs generate.py's convention: RandomState(seed).randn(1, z_dim), float32."""
    if not 0 <= seed < 2**32:
        raise NadaError(f"seed {seed}: must be in 0..2**32-1")
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


def z_batch(seeds: list[int], z_dim: int) -> np.ndarray:
    return np.concatenate([z_from_seed(s, z_dim) for s in seeds], axis=0)


def seed_filename(seed: int) -> str:
    return f"seed{seed:04d}.png"


def write_seed_images(images: np.ndarray, seeds: list[int], out: Path, with_grid: bool = False) -> None:
    """seed0000.png, ... (and grid.png): what nada-generate and nada-client both write."""
    out.mkdir(parents=True, exist_ok=True)
    for seed, img in zip(seeds, images):
        save_png(img, out / seed_filename(seed))
    if with_grid:
        save_png(grid(images, rows=max(1, int(len(images) ** 0.5))), out / "grid.png")
