"""The field's seed convention (NVlabs generate.py): seed -> z. numpy only, so a client that asks a
server for images by seed needs no torch."""

from __future__ import annotations

import re

import numpy as np

from nada_core.errors import FieldError, NadaError


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise FieldError(f"{{seeds}} '{text}': write seeds as 0-3,7 (non-negative integers and ranges)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise FieldError(f"{{seeds}} '{text}': range {part} runs backwards; write {hi}-{lo}")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise FieldError("{seeds} is empty; write e.g. 0-7")
    return seeds


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
    """NVlabs generate.py's convention: RandomState(seed).randn(1, z_dim), float32."""
    if not 0 <= seed < 2**32:
        raise NadaError(f"seed {seed}: must be in 0..2**32-1")
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


def z_batch(seeds: list[int], z_dim: int) -> np.ndarray:
    return np.concatenate([z_from_seed(s, z_dim) for s in seeds], axis=0)
