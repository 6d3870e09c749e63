"""What each exported graph takes and gives, stated once: names, Triton dtypes and per-item shapes
(the batch axis comes first and is free), and the precision each graph is built at. Torch-free: the
repository writer, the python model and the client read it too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

# graph -> (input names, output names)
IO_NAMES: dict[str, tuple[list[str], list[str]]] = {
    "mapping": (["z", "truncation"], ["ws"]),
    "synthesis": (["ws"], ["image"]),
    "generator": (["z", "truncation"], ["image"]),  # the ensemble: mapping then synthesis
    "encoder": (["photo"], ["ws"]),  # a photo's W+ codes (pSp, e4e, ReStyle)
    "edit": (["photo"], ["image"]),  # the ensemble: encoder then a domain's synthesis
    # many lightweight domains of one base in one model: each item drawn in its own domain (an index)
    "domains": (["ws", "domain"], ["image"]),
    "domains_generator": (["z", "truncation", "domain"], ["image"]),  # mapping then domains
    "domains_edit": (["photo", "domain"], ["image"]),  # encoder then domains
}
IMAGE_GRAPHS = ("synthesis", "domains")  # the built graphs that draw images
# the side of the photos the encoders read (nada_train.encoders.loading.INPUT_SIZE: test_export checks)
PHOTO_SIDE = 256


@dataclass
class TensorSpec:
    name: str
    dtype: str  # Triton's TYPE_* without the prefix
    dims: tuple[int, ...]

    def pbtxt(self) -> str:
        return f'  {{ name: "{self.name}" data_type: TYPE_{self.dtype} dims: [ {", ".join(map(str, self.dims))} ] }}'

    def nbytes(self, batch: int) -> int:
        return batch * math.prod(self.dims) * {"FP32": 4, "FP16": 2, "UINT8": 1, "INT32": 4}[self.dtype]


class Shapes(Protocol):
    """What of a generator's config fixes the tensors (GeneratorConfig and StyleGAN3Config have it)."""

    z_dim: int
    n_latent: int
    style_dim: int
    image_shape: tuple[int, int]


def graph_tensors(config: Shapes, graph: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of `graph` (a key of IO_NAMES) for a generator's config (an encoder's: its
    decoder's)."""
    known = {
        "z": TensorSpec("z", "FP32", (config.z_dim,)),
        "truncation": TensorSpec("truncation", "FP32", (1,)),
        "ws": TensorSpec("ws", "FP32", (config.n_latent, config.style_dim)),
        "image": TensorSpec("image", "UINT8", (*config.image_shape, 3)),
        "photo": TensorSpec("photo", "UINT8", (PHOTO_SIDE, PHOTO_SIDE, 3)),
        "domain": TensorSpec("domain", "INT32", (1,)),
    }
    inputs, outputs = IO_NAMES[graph]
    return [known[n] for n in inputs], [known[n] for n in outputs]


def graph_precision(graph: str, precision: str) -> str:
    """The precision `graph` is built at when an export asks for `precision`: the image graphs at it,
    the mapping and the encoder always at fp32 (their W codes feed every layer; the mapping is a few
    matmuls of the work)."""
    return precision if graph in IMAGE_GRAPHS else "fp32"
