"""Pictures on disk: 8-bit RGB arrays as PNG files (written atomically), grids of them, the
seedNNNN.png files nada-generate and nada-client both write, and photos read and sized for an
encoder. numpy and pillow only: the client side needs no torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nada_core.errors import FieldError, NadaError
from nada_core.fileio import atomic_path

MIN_SIDE = 16  # pixels: below this an image holds too little to invert


# modes whose conversion to 8-bit RGB would clip or guess (16-bit, 32-bit integer or float pixels)
DEEP_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (greyscale, palette, RGBA and CMYK converted); unreadable,
    high-bit-depth or tiny files refused in one line."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            if opened.mode in DEEP_MODES:
                raise FieldError(
                    f"{{images}} '{path}': {opened.mode} pixels (more than 8 bits a channel) would be clipped; "
                    "save it as 8-bit RGB"
                )
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise FieldError(f"{{images}} '{path}': not an image that can be read ({exc})") from None
    if min(image.size) < MIN_SIDE:
        raise FieldError(
            f"{{images}} '{path}': {image.size[0]} x {image.size[1]} pixels is too small to invert; give "
            f"at least {MIN_SIDE} x {MIN_SIDE}"
        )
    return np.asarray(image)


def read_image(path: str | Path, size: int) -> np.ndarray:
    """An image file as uint8 RGB [size, size, 3]: the centre square, resized with Lanczos."""
    from PIL import ImageOps

    return np.asarray(ImageOps.fit(Image.fromarray(read_rgb(path)), (size, size), Image.LANCZOS))


def encoder_photos(images, side: int) -> np.ndarray:
    """uint8 photos ([N, H, W, 3], one [H, W, 3], or a list of them of any sizes) -> [N, side, side, 3]
    by PIL's bilinear resize, as the pSp family's own transforms do: the step that an encoder's
    encode() and a client of a served encoder share."""
    if isinstance(images, (list, tuple)):
        items = [np.asarray(i) for i in images]
        bad = next((i for i in items if i.ndim != 3 or i.shape[-1] != 3 or i.dtype != np.uint8), None)
        shape = None if bad is None else [len(items), *bad.shape]
    else:
        items = np.asarray(images)
        items = items[None] if items.ndim == 3 else items
        ok = items.ndim == 4 and items.shape[-1] == 3 and items.dtype == np.uint8
        bad, shape = (None, None) if ok else (items, list(items.shape))
    if bad is not None or not len(items):
        what = f"{bad.dtype} {shape}" if bad is not None else "no images"
        raise NadaError(f"encoder input: expected uint8 images [N, H, W, 3], got {what}")
    return np.stack([np.asarray(Image.fromarray(im).resize((side, side), Image.BILINEAR)) for im in items])


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
