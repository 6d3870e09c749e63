"""AOTInductor packages (.pt2): the compiled engine that builds wherever PyTorch runs.

torch.export traces a graph with a dynamic batch 1..max_batch, AOTInductor compiles it ahead of
time for one device (C++ on the CPU with the system compiler, Triton kernels on CUDA) into one
package file that loads without Python model code. Parity-checked like every other engine.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from nada_core.fileio import atomic_path
from nada_export.graphs import GraphSource, export_spec
from nada_export.tensors import graph_precision
from nada_train.generator.inference import inference_copy


def build_package(
    generator: GraphSource,
    kind: str,
    path: Path,
    max_batch: int,
    device: str = "cpu",
    precision: str = "fp32",
) -> None:
    """Export kind ('mapping' or 'synthesis') and compile it for `device` into `path` (.pt2), written
    under a temporary name and renamed when complete."""
    # the synthesis at a reduced precision is the inference copy's mixed precision (fp32 styles,
    # demodulation and RGB sum); W+ codes arrive and images leave as the fp32 graph's
    at = graph_precision(kind, precision)
    if kind == "encoder":
        g = generator
    elif kind == "domains":
        g = dataclasses.replace(generator, generator=inference_copy(generator.generator, at))
    else:
        g = inference_copy(generator, at)
    module, inputs, dynamic = export_spec(g, kind, max_batch)
    module, inputs = module.to(device), tuple(t.to(device) for t in inputs)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
        # freezing folds the weights into the compiled code as constants (2x faster on the CPU)
        with tempfile.TemporaryDirectory(prefix="nada-aoti-") as work:
            built = torch._inductor.aoti_compile_and_package(
                program, package_path=str(Path(work) / "model.pt2"), inductor_configs={"freezing": True}
            )
            with atomic_path(path) as tmp:
                shutil.copyfile(built, tmp)


class AotiRunner:
    """A .pt2 package as `run(feed: {name: numpy}) -> numpy`, on the device it was built for."""

    def __init__(self, path: str | Path, device: str = "cpu", input_names: list[str] | None = None):
        self.device = torch.device(device)
        index = (self.device.index or 0) if self.device.type == "cuda" else -1
        self.model = torch._inductor.aoti_load_package(str(path), device_index=index)
        self.input_names = input_names

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        names = self.input_names or list(feed)
        with torch.no_grad():
            out = self.model(
                *[torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device) for n in names]
            )
        return out.cpu().numpy()
