"""ONNX export with a dynamic batch axis, refused unless it passes the parity check."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import is_dataclass
from pathlib import Path

import torch

from nada_core.cache import cache_dir
from nada_core.errors import NadaError
from nada_core.fileio import atomic_path
from nada_export.graphs import GRAPHS, GraphSource, export_spec
from nada_export.parity import Parity, check_parity, parity_batches, parity_limit

OPSET = 18
TRACES_KEPT = 4  # the graphs this process keeps for reuse (without their weights' data)
_traces: dict[tuple, bytes] = {}  # structure_key -> the ONNX model, its weights' data left out
TRACE_FORMAT = 1  # of the files trace_file names: a change here leaves the old ones unread


def export_graph(generator: GraphSource, kind: str, path: Path, max_batch: int, reuse: bool = True) -> bool:
    """Write kind ('mapping' or 'synthesis') to `path` (temporary name, then rename). Returns whether
    an earlier trace was reused: this process's, or one an earlier process kept in NADA_CACHE.

    Tracing is most of an export's time, and every generator adapted from one base traces to the same
    graph: only the weights differ. So the graph is exported without onnxscript's optimizer (which
    folds weights into unnamed constants; onnxruntime and TensorRT fold them when they load the
    model), every weight stays an initializer named as in the module, and a later export of the same
    structure puts its own weights into the traced graph. export_verified checks either against
    PyTorch all the same."""
    _, input_names, output_names = GRAPHS[kind]
    module, inputs, dynamic = export_spec(generator, kind, max_batch)
    key = structure_key(module, kind, max_batch)
    with atomic_path(path) as tmp:
        trace = _kept_trace(key) if reuse else None
        if trace is not None:
            _save_with_weights(trace, module, tmp)
            return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                optimize=False,
                verbose=False,
            )
        _keep_trace(key, Path(tmp), module)
    return False


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (persistent or not), by the names the ONNX exporter gives them."""
    return {**dict(module.named_buffers()), **dict(module.named_parameters())}


def structure_key(module: torch.nn.Module, kind: str, max_batch: int) -> tuple:
    """What a trace depends on: the modules' types and plain settings (sizes, flags, configs) and
    every tensor's name, shape and dtype; never the weights' values."""
    simple = (bool, int, float, str, tuple, type(None))
    modules = tuple(
        (
            name,
            type(m).__qualname__,
            tuple(
                sorted(
                    (k, repr(v))
                    for k, v in vars(m).items()
                    if not k.startswith("_") and (isinstance(v, simple) or is_dataclass(v))
                )
            ),
        )
        for name, m in module.named_modules()
    )
    tensors = tuple((n, tuple(t.shape), str(t.dtype)) for n, t in module_tensors(module).items())
    return (kind, max_batch, modules, tensors)  # OPSET and torch are this process's throughout


def trace_file(key: tuple) -> Path:
    """Where a trace of this structure is kept between processes (NADA_CACHE/onnx-traces): named by
    the key and by what else shapes the graph (opset, torch, onnx and onnxscript versions)."""
    import onnx

    try:
        import onnxscript

        script = onnxscript.__version__
    except ImportError:
        script = None
    ident = repr((TRACE_FORMAT, OPSET, torch.__version__, onnx.__version__, script, key))
    return cache_dir("onnx-traces") / f"{hashlib.sha256(ident.encode()).hexdigest()[:40]}.onnx"


def _kept_trace(key: tuple) -> bytes | None:
    """This structure's trace: kept in this process, else by an earlier one (a file that does not
    parse is ignored; one that parses but is wrong fails export_verified's check and is traced
    afresh)."""
    if key in _traces:
        return _traces[key]
    import onnx

    try:
        trace = trace_file(key).read_bytes()
        onnx.ModelProto.FromString(trace)
    except Exception:  # none kept, unreadable, or not an ONNX model (protobuf's own DecodeError)
        return None
    _remember(key, trace)
    return trace


def _remember(key: tuple, trace: bytes) -> None:
    _traces[key] = trace
    while len(_traces) > TRACES_KEPT:
        del _traces[next(iter(_traces))]


def _keep_trace(key: tuple, path: Path, module: torch.nn.Module) -> None:
    import onnx

    names = module_tensors(module)
    if any(t.dtype == torch.bfloat16 for t in names.values()):
        return  # numpy holds no bfloat16 to put weights back with
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name in names:
            init.ClearField("raw_data")
    trace = model.SerializeToString()
    _remember(key, trace)
    try:  # for the next process; a cache that cannot be written only costs the next one a trace
        file = trace_file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            Path(tmp).write_bytes(trace)
    except OSError:
        pass


def _save_with_weights(trace: bytes, module: torch.nn.Module, path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(trace)
    tensors = module_tensors(module)
    for init in model.graph.initializer:
        if init.name in tensors:
            init.CopyFrom(numpy_helper.from_array(tensors[init.name].detach().cpu().numpy(), init.name))
    onnx.save(model, str(path))


def onnx_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
    ]
    return ort.InferenceSession(str(path), opts, providers=providers)


def export_verified(generator: GraphSource, kind: str, path: Path, max_batch: int) -> Parity:
    """Export, then check against PyTorch at batch 1, 3 and max; refuse (delete, raise) on failure.
    A reused trace that fails is traced afresh first (a setting the structure key missed)."""

    def check() -> Parity:
        session = onnx_session(path)
        return check_parity(
            generator, kind, lambda feed: session.run(None, feed)[0], parity_batches(max_batch)
        )

    reused = export_graph(generator, kind, path, max_batch)
    parity = check()
    if not parity.passed and reused:
        export_graph(generator, kind, path, max_batch, reuse=False)
        parity = check()
    if not parity.passed:
        path.unlink(missing_ok=True)
        raise NadaError(
            f"exported {kind} model does not match PyTorch ({parity.describe()}; {parity_limit(kind)}); "
            "nothing written"
        )
    return parity
