"""The engines nada-export builds, one entry each: the runtime that serves its files, the precisions
it builds, what it needs on this machine, and how it builds a graph and checks it against PyTorch.
export() reads this table; adding an engine is adding an entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nada_core.errors import FieldError, NadaError
from nada_export.graphs import GraphSource
from nada_export.onnx_export import export_verified
from nada_export.parity import Parity, check_parity, parity_batches, parity_limit
from nada_export.tensors import IO_NAMES, graph_precision, graph_tensors
from nada_export.triton_repo import RUNTIMES

# (generator, graph, work path without suffix, max_batch, precision, device) -> (file written, parity)
Build = Callable[[GraphSource, str, Path, int, str, str], tuple[Path, Parity]]


@dataclass(frozen=True)
class Engine:
    name: str
    runtime: str  # a key of triton_repo.RUNTIMES: what serves the files
    files: str  # what it writes, in words (for messages)
    precisions: tuple[str, ...]  # of the synthesis; the mapping is always fp32 (tensors.graph_precision)
    build: Build
    available: Callable[[str], None]  # raises FieldError when it cannot be built here for the device

    @property
    def native(self) -> bool:
        """Triton's own backends serve its files (else only the python backend does)."""
        return RUNTIMES[self.runtime].native_platform is not None

    @property
    def built_for_device(self) -> bool:
        return RUNTIMES[self.runtime].built_for_device


def build_onnx(g: GraphSource, graph: str, stem: Path, max_batch: int, precision: str, device: str):
    path = stem.with_suffix(".onnx")
    return path, export_verified(g, graph, path, max_batch)


def build_tensorrt(g: GraphSource, graph: str, stem: Path, max_batch: int, precision: str, device: str):
    """The verified ONNX graph, then a TensorRT engine from it, checked again."""
    from nada_export.tensorrt_engine import EngineRunner, build_engine, engine_filename

    onnx_path, _ = build_onnx(g, graph, stem, max_batch, precision, device)
    built_at = graph_precision(graph, precision)
    path = stem.with_name(engine_filename(stem.name, built_at))
    shapes = {t.name: t.dims for t in graph_tensors(g.config, graph)[0]}
    build_engine(onnx_path, path, shapes, max_batch, built_at)
    parity = check_parity(g, graph, EngineRunner(path), parity_batches(max_batch), built_at)
    if not parity.passed:
        raise NadaError(
            f"TensorRT {graph} engine does not match PyTorch ({parity.describe()}; "
            f"{parity_limit(graph, built_at)}); nothing written"
        )
    return path, parity


def build_aoti(g: GraphSource, graph: str, stem: Path, max_batch: int, precision: str, device: str):
    """The AOTInductor package for `device`, checked like the ONNX graphs; refused (deleted) on failure."""
    from nada_export.aoti_engine import AotiRunner, build_package

    path = stem.with_suffix(".pt2")
    built_at = graph_precision(graph, precision)
    build_package(g, graph, path, max_batch, device, built_at)
    parity = check_parity(
        g, graph, AotiRunner(path, device, IO_NAMES[graph][0]), parity_batches(max_batch), built_at
    )
    if not parity.passed:
        path.unlink(missing_ok=True)
        raise NadaError(
            f"AOTInductor {graph} package ({device}, {built_at}) does not match PyTorch "
            f"({parity.describe()}; {parity_limit(graph, built_at)}); nothing written"
        )
    return path, parity


def anywhere(device: str) -> None:
    """onnx builds on any machine."""


def tensorrt_here(device: str) -> None:
    from nada_export.tensorrt_engine import import_tensorrt, tensorrt_missing_reason

    import_tensorrt()
    reason = tensorrt_missing_reason()
    if reason:
        raise FieldError(f"{{engine}} trt: {reason}")


def device_here(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise FieldError(
                "{device} cuda: no CUDA GPU is visible to PyTorch here; build with {device} cpu, or on the GPU "
                "machine"
            )


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine("onnx", "onnxruntime", "ONNX graphs", ("fp32",), build_onnx, anywhere),
        Engine("trt", "tensorrt", "TensorRT engines", ("fp32", "fp16"), build_tensorrt, tensorrt_here),
        Engine("aoti", "aoti", ".pt2 packages", ("fp32", "fp16", "bf16"), build_aoti, device_here),
    )
}
PRECISIONS = tuple(dict.fromkeys(p for e in ENGINES.values() for p in e.precisions))  # every engine's


def or_list(words) -> str:
    """'a, b or c'."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def engine_for(name: str, precision: str, backend: str) -> Engine:
    """The engine called `name`, refused in one line (naming the fields) where it cannot build
    `precision` or be served by `backend`."""
    if name not in ENGINES:
        raise FieldError(f"{{engine}} {name}: choose {or_list(ENGINES)}")
    if precision not in PRECISIONS:
        raise FieldError(f"{{precision}} {precision}: choose {or_list(PRECISIONS)}")
    engine = ENGINES[name]
    if precision not in engine.precisions:
        others = [e.name for e in ENGINES.values() if precision in e.precisions]
        raise FieldError(
            f"{{precision}} {precision}: {{engine}} {name} builds {or_list(engine.precisions)}; {precision} is "
            f"built by {{engine}} {or_list(others)}"
        )
    if backend == "native" and not engine.native:
        raise FieldError(
            f"{{engine}} {name} is served by the python backend (Triton's native backends do not load "
            f"{engine.files}); drop {{backend}} native"
        )
    return engine
