"""Domains as data: runs of one base mixed linearly (cross-domain interpolation) and applied with a
strength (0 = the base, 1 = the domain, beyond 1 = exaggerated).

Written over the base and the runs as coefficients that sum to one: the result is
c_base * base + sum_k c_k * run_k, where a lightweight run contributes its domain (edits of the base's
styles, nada_train.domains) and a full run its whole network. A coefficient of 0 adds exactly nothing
and one of 1 exactly its term, so strength 0 is the base and strength 1 (or a mix at its ends) a run,
bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

from nada_core.errors import FieldError
from nada_train.checkpoints import LoadedGenerator, load_generator, load_run_base
from nada_train.domains import bake, combine

RunLike = str | Path | LoadedGenerator


def _loaded(item: RunLike) -> LoadedGenerator:
    if isinstance(item, LoadedGenerator):
        return item
    if hasattr(item, "generator") and hasattr(item, "manifest"):  # a nada_train.runs.Run
        return item.generator
    return load_generator(item, "cpu")


def base_sha(item: LoadedGenerator) -> str | None:
    """The sha256 of the base `item` was trained from (itself when it is no run)."""
    return item.base.get("sha256") if item.base else item.sha256


def parse_blend(spec: str) -> tuple[str, float]:
    """'RUN:WEIGHT' -> (RUN, WEIGHT); refused in one line otherwise."""
    path, sep, weight = spec.rpartition(":")
    try:
        value = float(weight)
    except ValueError:
        value = math.nan
    if not sep or not path or not math.isfinite(value):
        raise FieldError(f"{{blend}} '{spec}': write RUN:WEIGHT, e.g. runs/neon:0.5")
    return path, value


def blend(run: RunLike, mix: Sequence[tuple[RunLike, float]] = (), strength: float = 1.0) -> LoadedGenerator:
    """`run`'s domain mixed with others ((run, weight) pairs: (1 - sum of weights) of `run`, weight
    of each other), then applied to the base with `strength`. Every item must be a run of one base,
    or that base itself (its domain is the base: weight towards it fades the others)."""
    if not math.isfinite(strength):
        raise FieldError(f"{{strength}} {strength}: give a number (0 = the base, 1 = the domain)")
    items = [_loaded(run)] + [_loaded(r) for r, _ in mix]
    weights = [float(w) for _, w in mix]
    first = items[0]
    if first.base is None and not mix:  # a base itself: there is no domain to scale
        return first
    shas = {base_sha(i) for i in items}
    if len(shas) > 1:
        raise FieldError("{blend}: the runs were trained from different bases; blend runs of one base")
    base = _base_of(items)
    coefficients = [strength * (1 - sum(weights))] + [strength * w for w in weights]
    c_base = 1 - strength
    full = [(i, c) for i, c in zip(items, coefficients) if i.domain is None and i.base is not None]
    light = [(i, c) for i, c in zip(items, coefficients) if i.domain is not None]
    # the base's own coefficient gathers every term that draws the base's weights (lightweight runs,
    # the base named as an item), so a blend of lightweight domains keeps the base's weights exactly
    c_base += sum(c for i, c in zip(items, coefficients) if i.base is None or i.domain is not None)
    network = base.generator
    if full:
        network = copy.deepcopy(base.generator)
        terms = [(base.generator, c_base)] + [(i.generator, c) for i, c in full]
        states = [(g.state_dict(), c) for g, c in terms]
        mixed = {
            k: sum((c * s[k] for s, c in states[1:]), c_base * v) if v.is_floating_point() else v
            for k, v in states[0][0].items()
        }
        network.load_state_dict(mixed)
        network.set_w_avg(base.generator.w_avg)
    domain = None
    if light:
        domain = combine([i.domain for i, _ in light], [c for _, c in light])
        domain.base_sha256 = base.sha256
        network = bake(network, domain)
    words = " + ".join(f"{c:g} {Path(i.source).name}" for i, c in [*full, *light] if c)
    return LoadedGenerator(
        network,
        f"blend: {words or 'the base'}",
        "blend",
        None,
        base=first.base,
        domain=domain if not full else None,
    )


def _base_of(items: list[LoadedGenerator]) -> LoadedGenerator:
    """The base of the runs: an item that is the base itself, else loaded as the first run's manifest names it."""
    for i in items:
        if i.base is None:
            return i
    base = load_run_base(items[0].source, items[0].base)
    if not base.generator.w_avg_known:  # truncation's centre, which a full blend copies
        base.generator.set_w_avg(None)
    return base
