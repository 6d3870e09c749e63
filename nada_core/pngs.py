"""Pictures on disk: 8-bit RGB arrays as PNG files (written atomically), grids of them, and the
seedNNNN.png files nada-generate and nada-client both write. numpy and pillow only: the client side
needs no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nada_core.fileio import atomic_path


def save_png(pixels: np.ndarray, path: str | Path) -> None:
    """[H, W, 3] uint8 -> PNG, written atomically."""
    pixels = np.asarray(pixels)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(pixels), "RGB").save(tmp, format="PNG")


def grid(pixels: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
    """[N, H, W, 3] uint8 -> one [rows*H, cols*W, 3] mosaic, filled row by row, white gaps."""
    pixels = np.asarray(pixels)
    n, h, w, _ = pixels.shape
    cols = -(-n // rows)
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = pixels[i]
    return out


def seed_filename(seed: int) -> str:
    return f"seed{seed:04d}.png"


def write_seed_images(images: np.ndarray, seeds: list[int], out: Path, with_grid: bool = False) -> None:
    """seed0000.png, ... (and grid.png): what nada-generate and nada-client both write."""
    out.mkdir(parents=True, exist_ok=True)
    for seed, img in zip(seeds, images):
        save_png(img, out / seed_filename(seed))
    if with_grid:
        save_png(grid(images, rows=max(1, int(len(images) ** 0.5))), out / "grid.png")
