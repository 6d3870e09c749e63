"""The two graphs that are exported and served, as modules (their tensors: nada_export.tensors).

mapping:   z, truncation -> ws  (shared by every generator adapted from one base: the trainer never
           changes the mapping network or latent_avg)
synthesis: ws -> image, uint8 RGB ready to encode
encoder:   photo (uint8 RGB, 256x256) -> ws  (one per encoder file; its decoder is the base)
domains:   ws, domain index -> image  (many lightweight domains of one base: each item in its own)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from nada_export.tensors import IO_NAMES, PHOTO_SIDE
from nada_train.domains import Domain, DomainTable
from nada_train.encoders.loading import LoadedEncoder, encoded
from nada_train.generator import StyleGenerator
from nada_train.images import to_uint8


class MappingGraph(nn.Module):
    def __init__(self, generator: StyleGenerator):
        super().__init__()
        self.g = generator
        if not generator.w_avg_known:
            generator.set_w_avg(None)

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> torch.Tensor:
        return self.g.ws(z, truncation)


class SynthesisGraph(nn.Module):
    def __init__(self, generator: StyleGenerator):
        super().__init__()
        self.g = generator

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return to_uint8(self.g.synthesis(ws, noise_mode="const"))


@dataclass
class EncoderSource:
    """What the encoder graph is built from: an encoder and its refinement steps, fixed at export
    (ReStyle's loop is unrolled into the graph)."""

    encoder: LoadedEncoder
    steps: int

    @property
    def config(self):
        """The decoder's config: the W+ codes' shape."""
        return self.encoder.generator.config


class EncoderGraph(nn.Module):
    """uint8 photos [N, 256, 256, 3] -> W+ [N, n_latent, w_dim]: the authors' normalisation, then the
    encoder's codes as LoadedEncoder.encode computes them (after its resize, which the client does)."""

    def __init__(self, source: EncoderSource):
        super().__init__()
        e = source.encoder
        self.network, self.decoder = e.network, e.generator.generator
        self.register_buffer("latent_avg", e.latent_avg)
        self.steps, self.iterative, self.add_latent_avg = source.steps, e.iterative, e.add_latent_avg

    def forward(self, photo: torch.Tensor) -> torch.Tensor:
        x = (photo.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
        return encoded(
            self.network, self.decoder, self.latent_avg, x, self.steps, self.iterative, self.add_latent_avg
        )


@dataclass
class DomainsSource:
    """What the multi-domain graph is built from: the base and its lightweight domains, in index order."""

    generator: StyleGenerator
    domains: list[Domain]
    names: list[str]

    @property
    def config(self):
        return self.generator.config

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator.mapping(z)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        return self.generator.broadcast(w)

    def truncate(self, w: torch.Tensor, truncation) -> torch.Tensor:
        return self.generator.truncate(w, truncation)

    def ws(self, z: torch.Tensor, truncation=1.0) -> torch.Tensor:
        return self.generator.ws(z, truncation)


class DomainsGraph(nn.Module):
    """ws [N, n_latent, w_dim], domain INT32 [N, 1] -> images [N, H, W, 3]: one forward pass in which
    every item's styles are edited by its own domain (gathered from the table, no loop over domains)."""

    def __init__(self, source: DomainsSource):
        super().__init__()
        self.g = source.generator
        self.table = DomainTable(source.domains)

    def forward(self, ws: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        edits = self.table.edits(domain.reshape(-1).to(torch.int64))
        return to_uint8(self.g.synthesis(ws, noise_mode="const", edits=edits))


GraphSource = StyleGenerator | EncoderSource | DomainsSource  # what each kind's graph is built from

# kind -> (graph, input names, output names)
GRAPHS: dict[str, tuple[type[nn.Module], list[str], list[str]]] = {
    kind: (cls, *IO_NAMES[kind])
    for kind, cls in (
        ("mapping", MappingGraph),
        ("synthesis", SynthesisGraph),
        ("encoder", EncoderGraph),
        ("domains", DomainsGraph),
    )
}


def mapping_fingerprint(generator: StyleGenerator) -> str:
    """Identifies a mapping network + latent_avg: generators that share it share one served model."""
    h = hashlib.sha256()
    state = generator.state_dict()
    for key in sorted(k for k in state if k.startswith("style.")):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    if not generator.w_avg_known:
        generator.set_w_avg(None)
    h.update(generator.w_avg.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def example_inputs(generator: GraphSource, kind: str, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh random inputs for export and parity checks."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "encoder":
        shape = (batch, PHOTO_SIDE, PHOTO_SIDE, 3)
        return {"photo": torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)}
    c = generator.config
    if kind == "mapping":
        return {
            "z": torch.randn(batch, c.z_dim, generator=gen),
            "truncation": torch.rand(batch, 1, generator=gen) * 0.5 + 0.5,
        }
    with torch.no_grad():
        w = generator.mapping(torch.randn(batch, c.z_dim, generator=gen))
        ws = generator.broadcast(generator.truncate(w, 0.7)).clone()
        ws += 0.05 * torch.randn(ws.shape, generator=gen)  # distinct codes per layer, as inverted images have
    if kind == "domains":  # every domain in turn, from a random start
        start = int(torch.randint(len(generator.domains), (1,), generator=gen))
        index = (torch.arange(batch) + start) % len(generator.domains)
        return {"ws": ws, "domain": index.to(torch.int32)[:, None]}
    return {"ws": ws}


def export_spec(
    generator: GraphSource, kind: str, max_batch: int
) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict]:
    """What torch.export (for ONNX and for AOTInductor alike) takes for kind's graph: the module,
    example inputs at batch 2, and each input's batch axis free over 1..max_batch. The graphs render
    unfused (grouped convolutions' weights depend on the batch)."""
    cls, input_names, _ = GRAPHS[kind]
    module = cls(generator).eval()
    example = example_inputs(generator, kind, batch=2)
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    return module, tuple(example[n] for n in input_names), {n: {0: batch} for n in input_names}
