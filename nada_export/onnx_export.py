"""ONNX export with a dynamic batch axis, and the parity check that guards every written model."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nada_export.graphs import MappingGraph, SynthesisGraph, example_inputs
from nada_train.errors import NadaError
from nada_train.fileio import atomic_path
from nada_train.generator import Generator

OPSET = 18
GRAPHS = {
    "mapping": (MappingGraph, ["z", "truncation"], ["ws"]),
    "synthesis": (SynthesisGraph, ["ws"], ["image"]),
}
# Refuse a model whose outputs differ more than this from PyTorch's (fp32).
MAX_WS_ERROR = 1e-3     # mapping output, absolute (w values are O(1))
MAX_PIXEL_ERROR = 1     # fp32 synthesis output, 8-bit levels (implies PSNR >= 48.1 dB)
MIN_PSNR_DB = 40.0      # reduced-precision (fp16/bf16) synthesis: rounding moves single pixels by
                        # several levels, so the gate is the image's PSNR, not its worst pixel


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


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def export_graph(generator: Generator, kind: str, path: Path, max_batch: int) -> None:
    """Write kind ('mapping' or 'synthesis') to `path` (temporary name, then rename)."""
    cls, input_names, output_names = GRAPHS[kind]
    module = cls(generator).eval()
    generator.set_fused(False)  # grouped convs cannot have a dynamic batch
    inputs = example_inputs(generator, kind, batch=2)
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    dynamic = {name: {0: batch} for name in input_names}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs[n] for n in input_names), str(tmp), input_names=input_names,
                          output_names=output_names, dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True,
                          external_data=False, verbose=False)


def onnx_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), opts, providers=providers)


def check_parity(generator: Generator, kind: str, run, batches: list[int], precision: str = "fp32") -> Parity:
    """Compare `run(inputs) -> numpy output` with PyTorch (fp32) on fresh random inputs at each batch
    size. Passes: mapping within MAX_WS_ERROR; synthesis within MAX_PIXEL_ERROR levels at fp32, or
    at MIN_PSNR_DB or more at a reduced precision."""
    cls, input_names, _ = GRAPHS[kind]
    module = cls(generator).eval()
    worst, worst_psnr, t0 = 0.0, math.inf, time.perf_counter()
    for i, b in enumerate(batches):
        inputs = example_inputs(generator, kind, b, seed=1000 + i)
        with torch.no_grad():
            want = module(*(inputs[n] for n in input_names)).numpy()
        got = run({n: inputs[n].numpy() for n in input_names})
        if got.shape != want.shape:
            raise NadaError(f"{kind}: exported model returned shape {got.shape} for batch {b}, PyTorch {want.shape}")
        err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
        peak = 255.0 if kind == "synthesis" else float(np.abs(want).max() or 1.0)
        worst, worst_psnr = max(worst, err), min(worst_psnr, psnr(got, want, peak))
    parity = Parity(kind, batches, worst, worst_psnr, time.perf_counter() - t0)
    if kind == "synthesis":
        parity.passed = worst <= MAX_PIXEL_ERROR if precision == "fp32" else worst_psnr >= MIN_PSNR_DB
    else:
        parity.passed = worst <= MAX_WS_ERROR
    return parity


def parity_limit(kind: str, precision: str = "fp32") -> str:
    if kind == "mapping":
        return f"limit: {MAX_WS_ERROR} for ws"
    return f"limit: {MAX_PIXEL_ERROR} level" if precision == "fp32" else f"limit: PSNR {MIN_PSNR_DB} dB at {precision}"


def parity_batches(max_batch: int) -> list[int]:
    return sorted({1, min(3, max_batch), max_batch})


def export_verified(generator: Generator, kind: str, path: Path, max_batch: int) -> Parity:
    """Export, then check against PyTorch at batch 1, 3 and max; refuse (delete, raise) on failure."""
    export_graph(generator, kind, path, max_batch)
    session = onnx_session(path)
    parity = check_parity(generator, kind, lambda feed: session.run(None, feed)[0], parity_batches(max_batch))
    if not parity.passed:
        path.unlink(missing_ok=True)
        raise NadaError(f"exported {kind} model does not match PyTorch ({parity.describe()}; {parity_limit(kind)}); nothing written")
    return parity
