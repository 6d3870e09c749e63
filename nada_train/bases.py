"""Built-in bases: generators that ship inside a package, with what it takes to adapt and judge them.

A package registers one under the entry point group `nada.bases` (in its pyproject.toml:
`[project.entry-points."nada.bases"] NAME = "package.module:function"`, the function returning a
BuiltinBase). nada-train adapts the default one when no --generator is given, reads its defaults for
the target, and runs its evaluation after training. The built-in world (package nada_world) is one;
nothing here knows it by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from nada_core.errors import FieldError

ENTRY_POINT_GROUP = "nada.bases"
BUILTIN_PREFIX = "builtin:"  # --generator builtin:NAME names a registered base


@dataclass(frozen=True)
class BuiltinBase:
    """name:         what --generator builtin:NAME calls it.
    generator:    its checkpoint (a file nada_train.checkpoints loads).
    clip:         --clip specs used when the user names none (a weights file with its open_clip
                  config beside it, a pretrained tag, ...).
    templates:    prompt templates for text directions, "{}" standing for the text (None: the 79
                  ImageNet templates, as the reference).
    default_target: the target when the user names none.
    options_for:  (source, target) -> TrainOptions fields that differ from TrainOptions' defaults for
                  this base and target; raises NadaError for texts the base cannot judge.
    evaluate:     (run directory, device) -> metrics, written to RUN/metrics.json; None: no judge.
    encoder:      an encoder file for its generator (nada.load_encoder("builtin:NAME"),
                  nada-edit --encoder builtin:NAME); None: none ships.
    """

    name: str
    generator: Path
    clip: tuple[str, ...]
    default_target: str
    options_for: Callable[[str, str], dict] = field(default=lambda source, target: {})
    templates: tuple[str, ...] | None = None
    evaluate: Callable[[Path, str], dict] | None = None
    description: str = ""
    encoder: Path | None = None

    def owns(self, generator: str | Path | None) -> bool:
        """Whether `generator` (a checkpoint path as given to nada-train) is this base's checkpoint."""
        if generator is None or str(generator).startswith(("random:", BUILTIN_PREFIX)):
            return False
        try:
            return Path(generator).resolve() == self.generator.resolve()
        except OSError:
            return False


def builtin_bases() -> dict[str, BuiltinBase]:
    """Every registered base that is installed with its checkpoint, by name."""
    found = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        base = ep.load()()
        if not isinstance(base, BuiltinBase):
            raise TypeError(
                f"entry point {ep.name} = {ep.value} of group {ENTRY_POINT_GROUP} returned "
                f"{type(base).__name__}, not BuiltinBase"
            )
        if base.generator.is_file():
            found[base.name] = base
    return found


def default_base() -> BuiltinBase:
    """The base nada-train adapts when no --generator is given: the first registered, by name."""
    bases = builtin_bases()
    if not bases:
        raise FieldError(
            "{generator} is required: no built-in base is installed (pip install the package that ships one, "
            "e.g. nada's nada_world)"
        )
    return next(iter(bases.values()))


def named_base(spec: str) -> BuiltinBase:
    """The base --generator builtin:NAME names."""
    name = spec[len(BUILTIN_PREFIX) :]
    bases = builtin_bases()
    if name not in bases:
        raise FieldError(
            f"{{generator}} {spec}: no built-in base '{name}'; installed: {', '.join(bases) or 'none'}"
        )
    return bases[name]


def base_owning(generator: str | Path | None) -> BuiltinBase | None:
    """The built-in base whose checkpoint `generator` is, if any."""
    for base in builtin_bases().values():
        if base.owns(generator):
            return base
    return None
