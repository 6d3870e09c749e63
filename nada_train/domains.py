"""Lightweight domains: a domain as a few numbers per synthesis layer instead of a whole network.

Every StyleGAN2 convolution scales its input channels by a style computed from w, then demodulates.
A domain here changes those styles only, and the base stays as it is:
- channels: HyperDomainNet's domain modulation, a multiplier (1 + d) per input channel of each
  modulated convolution. Scaling a convolution's weights per input channel is scaling its style per
  channel, so it is the style times (1 + d).
- styles: StyleDomain's StyleSpace directions, an offset added to each layer's style.
`full` (the paper's) trains the whole synthesis network and is not a Domain.

One Domain holds both parts (scale d and shift o per layer, zeros where a parametrization has none), so
domains of either kind blend (linear in d and o) and share one served model. The trainer renders the
base with a domain's edits (Generator.synthesis(edits=)); nada-generate and a single exported model
render the base with the edits folded into each layer's style affine (bake); the multi-domain model
gathers each item's edits from a table (DomainTable).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nada_core.errors import FieldError, NadaError
from nada_train.generator import Generator, StyleGenerator
from nada_train.generator.layers import LayerEdit
from nada_train.tensor_files import read_safetensors, write_safetensors

PARAMETRIZATIONS = ("full", "channels", "styles")
LIGHTWEIGHT = ("channels", "styles")
DOMAIN_FORMAT = "nada-domain/1"
RUN_DOMAIN = "domain.safetensors"  # a lightweight run's parameters (a full run: generator.safetensors)


def check_lightweight_base(generator: StyleGenerator, parametrization: str) -> Generator:
    """The base a lightweight domain can change: a StyleGAN2 generator (refused in one line otherwise)."""
    if not isinstance(generator, Generator):
        raise FieldError(
            f"{{parametrization}} {parametrization}: lightweight domains are built for StyleGAN2 bases; train "
            "this StyleGAN3 base with {parametrization} full"
        )
    return generator


@dataclass
class Domain:
    """A lightweight domain of one base: per modulated layer (by module name), the style's multiplier
    minus one (`scale`, HyperDomainNet's d) and its offset (`shift`); layers a domain does not move hold
    zeros. base_sha256 names the base it was trained on (None: a random base)."""

    scale: dict[str, torch.Tensor]
    shift: dict[str, torch.Tensor]
    parametrization: str
    base_sha256: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def zeros(
        cls, base: Generator, parametrization: str = "channels", base_sha256: str | None = None
    ) -> Domain:
        widths = base.modulated_layers()
        zero = {n: torch.zeros(c) for n, c in widths.items()}
        return cls(dict(zero), {n: t.clone() for n, t in zero.items()}, parametrization, base_sha256)

    @property
    def layers(self) -> list[str]:
        return list(self.scale)

    def parameters_count(self) -> int:
        """The numbers this domain's parametrization trains (a channels domain: its scales)."""
        part = self.shift if self.parametrization == "styles" else self.scale
        return sum(t.numel() for t in part.values())

    def edits(self) -> dict[str, LayerEdit]:
        """What Generator.synthesis(edits=) takes: style * (1 + d) + o per layer."""
        return {n: LayerEdit(1 + self.scale[n], self.shift[n]) for n in self.layers}

    def to(self, device: torch.device | str) -> Domain:
        move = (
            {n: t.to(device) for n, t in self.scale.items()},
            {n: t.to(device) for n, t in self.shift.items()},
        )
        return Domain(*move, self.parametrization, self.base_sha256, dict(self.meta))


def check_one_base(domains: Sequence[Domain], field: str, verb: str) -> None:
    """Domains mixed or stacked must move the same layers at the same widths: domains of one base."""
    first = domains[0]
    for d in domains[1:]:
        if set(d.layers) != set(first.layers) or any(
            d.scale[n].shape != first.scale[n].shape for n in first.layers
        ):
            raise FieldError(f"{{{field}}}: the domains have different layers; {verb} domains of one base")


def combine(domains: Sequence[Domain], coefficients: Sequence[float]) -> Domain:
    """sum_k c_k * domain_k, part by part (the base is the zero domain, so its coefficient drops out).
    A coefficient of 0 contributes exactly nothing and one of 1 a domain exactly, so blends at the
    ends equal the domains themselves."""
    check_one_base(domains, "blend", "blend")
    first = domains[0]

    def mixed(part: str) -> dict[str, torch.Tensor]:
        return {
            n: sum((c * getattr(d, part)[n] for d, c in zip(domains, coefficients)), torch.zeros_like(t))
            for n, t in getattr(first, part).items()
        }

    kinds = {d.parametrization for d in domains}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    return Domain(mixed("scale"), mixed("shift"), kind, first.base_sha256)


def bake(generator: Generator, domain: Domain) -> Generator:
    """A copy of `generator` that draws `domain` with no edits at run time: each layer's style affine
    (EqualLinear: style = A w + b) becomes (1 + d) A w + (1 + d) b + o. Exactly the generator where the
    domain is zero."""
    check_lightweight_base(generator, domain.parametrization)
    widths = generator.modulated_layers()
    if set(widths) != set(domain.layers):
        raise FieldError(
            "{domain}: its layers are not this generator's; apply a domain to the base it was trained on"
        )
    baked = copy.deepcopy(generator)
    with torch.no_grad():
        for name in domain.layers:
            affine = baked.get_submodule(name).conv.modulation
            factor = (1 + domain.scale[name]).to(affine.weight)
            affine.weight.mul_(factor[:, None])
            affine.bias.mul_(factor).add_(domain.shift[name].to(affine.bias) / affine.lr_mul)
    return baked


# ---- training ------------------------------------------------------------------------------------
class _LayerDelta(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(width))


class DomainGenerator(nn.Module):
    """G_train of a lightweight run: the frozen base (held, not owned: it is not among this module's
    parameters or state) drawn with a trained domain. Its modules mirror the base's layer names
    (conv1, convs.3, to_rgbs.0, ...), each holding that layer's `delta`, so layer selection's names
    pick a domain's parameters as they pick a full generator's layers."""

    def __init__(self, base: StyleGenerator, parametrization: str):
        super().__init__()
        if parametrization not in LIGHTWEIGHT:
            raise FieldError(f"{{parametrization}} {parametrization}: choose {', '.join(LIGHTWEIGHT)}")
        base = check_lightweight_base(base, parametrization)
        self._base = (base,)  # a tuple hides it from nn.Module: the base is never trained or saved here
        self.parametrization = parametrization
        for name, width in base.modulated_layers().items():
            parent = self
            *path, leaf = name.split(".")
            for part in path:
                if part not in parent._modules:
                    parent.add_module(part, nn.Module())
                parent = parent._modules[part]
            parent.add_module(leaf, _LayerDelta(width))

    @property
    def base(self) -> Generator:
        return self._base[0]

    def layer_names(self) -> list[str]:
        return list(self.base.modulated_layers())

    def domain(self) -> Domain:
        """The trained domain as data (detached copies on the CPU)."""
        d = Domain.zeros(self.base, self.parametrization)
        part = d.shift if self.parametrization == "styles" else d.scale
        for name in self.layer_names():
            part[name] = self.get_submodule(name).delta.detach().cpu().clone()
        return d

    def load_domain(self, domain: Domain) -> None:
        part = domain.shift if self.parametrization == "styles" else domain.scale
        with torch.no_grad():
            for name in self.layer_names():
                delta = self.get_submodule(name).delta
                delta.copy_(part[name].to(delta))

    def edits(self) -> dict[str, LayerEdit]:
        """The edits that draw this domain, differentiable in its deltas."""
        edits = {}
        for name in self.layer_names():
            delta = self.get_submodule(name).delta
            edits[name] = (
                LayerEdit(scale=1 + delta) if self.parametrization == "channels" else LayerEdit(shift=delta)
            )
        return edits

    # ---- the generator's interface, as the trainer uses G_train -------------------------------
    config = property(lambda self: self.base.config)
    n_latent = property(lambda self: self.base.n_latent)
    w_avg_known = property(lambda self: self.base.w_avg_known)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", fused: bool = False) -> torch.Tensor:
        return self.base.synthesis(ws, noise_mode, fused, edits=self.edits())

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.base.mapping(z)

    def truncate(self, w: torch.Tensor, truncation) -> torch.Tensor:
        return self.base.truncate(w, truncation)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        return self.base.broadcast(w)

    def layers_of_code(self, code: int, include_torgb: bool = False) -> list[str]:
        return self.base.layers_of_code(code, include_torgb)

    def layer_set(self, name: str) -> list[str]:
        """The base's set, less what holds no style (the constant input)."""
        return [n for n in self.base.layer_set(name) if n in self.base.modulated_layers()]

    def torgb_names(self) -> list[str]:
        return self.base.torgb_names()


# ---- files ---------------------------------------------------------------------------------------
def save_domain(
    domain: Domain, path: str | Path, config: dict, extra_metadata: dict[str, str] | None = None
) -> None:
    """A domain's trained part only (a channels domain: its scales), with its parametrization, the
    base's sha256 and config; written under a temporary name and renamed when complete."""
    part = "shift" if domain.parametrization == "styles" else "scale"
    tensors = {f"{part}.{n}": t.detach().contiguous().cpu() for n, t in getattr(domain, part).items()}
    meta = {
        "format": DOMAIN_FORMAT,
        "parametrization": domain.parametrization,
        "base_sha256": domain.base_sha256 or "",
        "nada_config": json.dumps(config),
        **(extra_metadata or {}),
    }
    write_safetensors(tensors, path, meta)


def load_domain(path: str | Path) -> tuple[Domain, dict]:
    """A domain file -> (Domain, the base's config as a dict)."""
    meta, tensors = read_safetensors(path, "domain")
    if meta.get("format") != DOMAIN_FORMAT or meta.get("parametrization") not in LIGHTWEIGHT:
        raise NadaError(f"domain '{path}': not a nada domain file (format {meta.get('format')!r})")
    part = "shift" if meta["parametrization"] == "styles" else "scale"
    trained = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(part + ".")}
    zeros = {n: torch.zeros_like(t) for n, t in trained.items()}
    scale, shift = (zeros, trained) if part == "shift" else (trained, zeros)
    domain = Domain(scale, shift, meta["parametrization"], meta.get("base_sha256") or None, meta)
    return domain, json.loads(meta["nada_config"])


# ---- many domains in one forward pass ------------------------------------------------------------
class DomainTable(nn.Module):
    """Domains of one base stacked: the edits of item i come from domain index[i], gathered from one
    table per part ([n_domains, every layer's channels]) in one lookup, then split by layer."""

    def __init__(self, domains: Sequence[Domain]):
        super().__init__()
        check_one_base(domains, "domains", "serve")
        layers = domains[0].layers
        self.layers = layers
        self.widths = [domains[0].scale[n].numel() for n in layers]
        self.register_buffer(
            "scale", torch.stack([torch.cat([1 + d.scale[n] for n in layers]) for d in domains])
        )
        self.register_buffer("shift", torch.stack([torch.cat([d.shift[n] for n in layers]) for d in domains]))

    def edits(self, index: torch.Tensor) -> dict[str, LayerEdit]:
        """index: [batch] integers in 0..len-1 -> per-layer edits of [batch, channels]."""
        scale = torch.index_select(self.scale, 0, index).split(self.widths, dim=1)
        shift = torch.index_select(self.shift, 0, index).split(self.widths, dim=1)
        return {n: LayerEdit(s, o) for n, s, o in zip(self.layers, scale, shift)}
