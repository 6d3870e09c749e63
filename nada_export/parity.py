"""The check that guards every exported model: its outputs against PyTorch's on fresh inputs at
several batch sizes, and the limits a model must meet to be written."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nada_core.errors import NadaError
from nada_core.seeds import z_batch
from nada_export.graphs import GRAPHS, GraphSource, example_inputs
from nada_export.tensors import IMAGE_GRAPHS
from nada_train.generator.inference import GATE_SEEDS, MIN_PSNR_DB
from nada_train.images import psnr

# Refuse a model whose outputs differ more than this from PyTorch's (fp32).
MAX_WS_ERROR = 1e-3  # mapping and encoder output, absolute (w values are O(1))
MAX_PIXEL_ERROR = 1  # fp32 synthesis output, 8-bit levels (implies PSNR >= 48.1 dB)
# reduced-precision (fp16/bf16) synthesis: MIN_PSNR_DB against fp32, every gate seed's image and each batch


@dataclass
class Parity:
    kind: str
    batches: list[int]
    max_abs_error: float
    psnr_db: float
    seconds: float
    passed: bool = field(default=False)

    def describe(self) -> str:
        psnr = "inf" if math.isinf(self.psnr_db) else f"{self.psnr_db:.1f}"
        return f"{self.kind}: batches {self.batches}, max abs error {self.max_abs_error:.3g}, PSNR {psnr} dB"


def check_parity(
    generator: GraphSource, kind: str, run, batches: list[int], precision: str = "fp32"
) -> Parity:
    """Compare `run(inputs) -> numpy output` with PyTorch (fp32) on fresh random inputs at each batch
    size. Passes: mapping and encoder within MAX_WS_ERROR; synthesis within MAX_PIXEL_ERROR levels at fp32, or
    at a reduced precision MIN_PSNR_DB or more on each batch and on each gate seed's image."""
    cls, input_names, _ = GRAPHS[kind]
    module = cls(generator).eval()
    worst, worst_psnr, t0 = 0.0, math.inf, time.perf_counter()
    feeds = [example_inputs(generator, kind, b, seed=1000 + i) for i, b in enumerate(batches)]
    if kind in IMAGE_GRAPHS and precision != "fp32":  # and the gate seeds' images, one at a time
        with torch.no_grad():
            ws = generator.ws(torch.from_numpy(z_batch(list(GATE_SEEDS), generator.config.z_dim)))
        feeds += [{"ws": w[None]} for w in ws]
        if kind == "domains":  # in every domain
            feeds = feeds[: len(batches)] + [
                {"ws": f["ws"], "domain": torch.tensor([[d]], dtype=torch.int32)}
                for f in feeds[len(batches) :]
                for d in range(len(generator.domains))
            ]
    for inputs in feeds:
        b = len(inputs[input_names[0]])
        with torch.no_grad():
            want = module(*(inputs[n] for n in input_names)).numpy()
        got = run({n: inputs[n].numpy() for n in input_names})
        if got.shape != want.shape:
            raise NadaError(
                f"{kind}: exported model returned shape {got.shape} for batch {b}, PyTorch {want.shape}"
            )
        err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
        peak = 255.0 if kind in IMAGE_GRAPHS else float(np.abs(want).max() or 1.0)
        worst, worst_psnr = max(worst, err), min(worst_psnr, psnr(got, want, peak))
    parity = Parity(kind, batches, worst, worst_psnr, time.perf_counter() - t0)
    if kind in IMAGE_GRAPHS:
        parity.passed = worst <= MAX_PIXEL_ERROR if precision == "fp32" else worst_psnr >= MIN_PSNR_DB
    else:
        parity.passed = worst <= MAX_WS_ERROR
    return parity


def parity_limit(kind: str, precision: str = "fp32") -> str:
    if kind not in IMAGE_GRAPHS:  # the mapping's and the encoder's W+ codes
        return f"limit: {MAX_WS_ERROR} for ws"
    return (
        f"limit: {MAX_PIXEL_ERROR} level"
        if precision == "fp32"
        else f"limit: PSNR {MIN_PSNR_DB} dB at {precision}"
    )


def parity_batches(max_batch: int) -> list[int]:
    return sorted({1, min(3, max_batch), max_batch})
