"""Batches of rendered scenes with their labels and captions, for the world's training scripts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from nada_world.models import CAPTION_TEMPLATES, caption
from nada_world.render import COLOURS, SHAPES, STYLES, Scene, random_scene, render_batch


@dataclass
class Batch:
    images: torch.Tensor  # [N, 3, 64, 64] in [-1, 1]
    style: torch.Tensor  # [N] int64
    shape: torch.Tensor
    colour: torch.Tensor
    captions: list[str]
    scenes: list[Scene]

    @property
    def combo(self) -> torch.Tensor:
        """One id per (style, shape, colour): equal ids are positives for each other in CLIP training."""
        return (self.style * len(SHAPES) + self.shape) * len(COLOURS) + self.colour


def sample(n: int, rng: np.random.Generator, style: int | None = None) -> Batch:
    scenes = [random_scene(rng, style=style) for _ in range(n)]
    return from_scenes(scenes, rng)


def from_scenes(scenes: list[Scene], rng: np.random.Generator | None = None) -> Batch:
    rng = rng or np.random.default_rng(0)
    images = torch.from_numpy(render_batch(scenes))
    caps = [
        caption(
            STYLES[s.style], COLOURS[s.colour], SHAPES[s.shape], int(rng.integers(len(CAPTION_TEMPLATES)))
        )
        for s in scenes
    ]
    t = lambda key: torch.tensor([getattr(s, key) for s in scenes])  # noqa: E731
    return Batch(images, t("style"), t("shape"), t("colour"), caps, scenes)


class Pool:
    """A pool of renders that is partly refreshed each draw: rendering is the slow part on a CPU."""

    def __init__(
        self,
        size: int,
        seed: int,
        refresh: float = 0.1,
        style: int | None = None,
        scenes: Callable[[int, np.random.Generator], list[Scene]] | None = None,
    ):
        self.rng = np.random.default_rng(seed)
        self.new = (
            (lambda n, rng: [random_scene(rng, style=style) for _ in range(n)]) if scenes is None else scenes
        )
        self.data = self._fresh(size)
        self.refresh = refresh

    def _fresh(self, n: int) -> Batch:
        return from_scenes(self.new(n, self.rng), self.rng)

    def draw(self, n: int) -> Batch:
        size = len(self.data.scenes)
        k = max(1, int(self.refresh * n))
        fresh = self._fresh(k)
        slots = self.rng.choice(size, k, replace=False)
        d = self.data
        for j, slot in enumerate(slots):
            d.images[slot] = fresh.images[j]
            d.style[slot], d.shape[slot], d.colour[slot] = fresh.style[j], fresh.shape[j], fresh.colour[j]
            d.captions[slot], d.scenes[slot] = fresh.captions[j], fresh.scenes[j]
        idx = self.rng.choice(size, n, replace=False)
        return Batch(
            d.images[idx],
            d.style[idx],
            d.shape[idx],
            d.colour[idx],
            [d.captions[i] for i in idx],
            [d.scenes[i] for i in idx],
        )


class DevicePool:
    """Training examples kept on the accelerator (a dict of tensors, one row per example), so that
    it draws batches without waiting for the CPU renderers: each refresh swaps the next chunk of
    `stream` in for the oldest."""

    def __init__(self, stream: Iterator[dict[str, torch.Tensor]], size: int, device: torch.device):
        self.stream, self.device = stream, device
        first = self._chunk()
        self.chunk = len(next(iter(first.values())))
        parts = [first] + [self._chunk() for _ in range(max(1, size // self.chunk) - 1)]
        self.data = {k: torch.cat([p[k] for p in parts]) for k in first}
        self.size = len(self.data[next(iter(first))])
        self.next = 0

    def _chunk(self) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in next(self.stream).items()}

    def refresh(self) -> None:
        s = slice(self.next, self.next + self.chunk)
        for k, v in self._chunk().items():
            self.data[k][s] = v
        self.next = (self.next + self.chunk) % self.size  # the pool is a whole number of chunks

    def draw(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """n different examples at random, under the stream's keys."""
        idx = torch.randperm(self.size, generator=gen, device=self.device)[:n]
        return {k: v[idx] for k, v in self.data.items()}


class RenderedBatches(torch.utils.data.IterableDataset):
    """Endless fresh batches of `n` renders, for a DataLoader whose workers render on the CPU while
    the accelerator trains (each worker its own random stream)."""

    def __init__(self, n: int, seed: int, style: int | None = None):
        self.n, self.seed, self.style = n, seed, style

    def __iter__(self):
        rng = worker_rng(self.seed)
        while True:
            yield sample(self.n, rng, self.style)


def worker_rng(seed: int) -> np.random.Generator:
    """A random stream of its own for each DataLoader worker process."""
    info = torch.utils.data.get_worker_info()
    return np.random.default_rng([seed, info.id if info else 0])


def render_stream(dataset: torch.utils.data.IterableDataset, workers: int):
    """An endless iterator over `dataset`'s items, made by `workers` processes (0: in this one)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=lambda b: b,
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
    )
    return iter(loader)
