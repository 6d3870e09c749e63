"""ONNX export with a dynamic batch axis, refused unless it passes the parity check."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from nada_core.errors import NadaError
from nada_core.fileio import atomic_path
from nada_export.graphs import GRAPHS, export_spec
from nada_export.parity import Parity, check_parity, parity_batches, parity_limit
from nada_train.generator import StyleGenerator

OPSET = 18


def export_graph(generator: StyleGenerator, kind: str, path: Path, max_batch: int) -> None:
    """Write kind ('mapping' or 'synthesis') to `path` (temporary name, then rename)."""
    _, input_names, output_names = GRAPHS[kind]
    module, inputs, dynamic = export_spec(generator, kind, max_batch)
    with atomic_path(path) as tmp, warnings.catch_warnings():
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
            verbose=False,
        )


def onnx_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
    ]
    return ort.InferenceSession(str(path), opts, providers=providers)


def export_verified(generator: StyleGenerator, kind: str, path: Path, max_batch: int) -> Parity:
    """Export, then check against PyTorch at batch 1, 3 and max; refuse (delete, raise) on failure."""
    export_graph(generator, kind, path, max_batch)
    session = onnx_session(path)
    parity = check_parity(generator, kind, lambda feed: session.run(None, feed)[0], parity_batches(max_batch))
    if not parity.passed:
        path.unlink(missing_ok=True)
        raise NadaError(
            f"exported {kind} model does not match PyTorch ({parity.describe()}; {parity_limit(kind)}); "
            "nothing written"
        )
    return parity
