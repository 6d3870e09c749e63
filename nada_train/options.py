"""What a training run is asked to do: TrainOptions (every setting, checked by validate), and how a
caller's choices become one: what the caller gave, else the built-in base's settings for its target,
else TrainOptions' defaults. The library's errors name these fields; the command line maps them to flags."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from nada_core.errors import FieldError
from nada_train.bases import BUILTIN_PREFIX, BuiltinBase, base_owning, default_base, named_base
from nada_train.clip import ClipSpec, parse_clip_spec
from nada_train.compiled import COMPILE_CHOICES
from nada_train.domains import PARAMETRIZATIONS
from nada_train.layer_selection import LAYER_CHOICES

PRECISIONS = ("fp32", "bf16")  # of a training step: fp32, or bf16 autocast


@dataclass
class TrainOptions:
    generator: str
    out: str
    source: str = "photo"
    target: str | None = None
    target_images: str | None = None
    clip: list[ClipSpec] = field(default_factory=lambda: [ClipSpec("ViT-B-32")])
    templates: list[str] | None = None  # prompt templates with "{}"; None: the reference's 79 ImageNet ones
    crop: list[int] | None = None  # (left, top, right, bottom): the part of the frame that is content
    iterations: int = 300
    batch: int = 2
    lr: float = 0.002
    layers: str = "auto"
    # what a run trains: full (the whole synthesis network, the paper's), channels or styles (a
    # lightweight domain of the frozen base: nada_train.domains)
    parametrization: str = "full"
    auto_layer_k: int | None = None
    auto_layer_iters: int = 1
    auto_layer_batch: int = 8
    train_torgb: bool = False
    mixing: float = 0.0
    global_weight: float = 0.0
    # weight of the layout anchor (nada_train.losses.anchor_loss); 0 in the paper
    anchor_weight: float = 0.0
    seed: int = 2
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = True
    fused: bool = False
    # off, inductor or cudagraphs: the step's synthesis and CLIP calls compiled (nada_train.compiled)
    compile: str = "off"
    n_sample: int = 8
    sample_truncation: float = 0.7
    sample_every: int = 50
    save_every: int = 100  # a resumable state and a numbered snapshot every N iterations
    allow_pickle: bool = False

    def to_json(self) -> dict:
        return asdict(self)  # nested ClipSpecs become dicts too

    @classmethod
    def from_json(cls, d: dict) -> TrainOptions:
        d = dict(d)
        d["clip"] = [ClipSpec(**c) for c in d["clip"]]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> None:
        if self.target_images is None:
            if self.target is None or not self.target.strip():
                raise FieldError(
                    "{target} is empty; name the new domain, e.g. {target} 'pencil sketch' (or pass "
                    "{target_images} DIR)"
                )
            if not self.source.strip():
                raise FieldError("{source} is empty; name the generator's domain, e.g. {source} photo")
            if self.source.strip().lower() == self.target.strip().lower():
                raise FieldError(
                    f"{{source}} and {{target}} are both '{self.source}'; the direction between them is zero, "
                    "name a different target"
                )
        if self.parametrization not in PARAMETRIZATIONS:
            raise FieldError(
                f"{{parametrization}} '{self.parametrization}': choose one of {', '.join(PARAMETRIZATIONS)}"
            )
        if self.layers not in LAYER_CHOICES:
            raise FieldError(f"{{layers}} '{self.layers}': choose one of {', '.join(LAYER_CHOICES)}")
        for name, value, low in (
            ("{iterations}", self.iterations, 1),
            ("{batch}", self.batch, 1),
            ("{n_sample}", self.n_sample, 1),
            ("{auto_layer_batch}", self.auto_layer_batch, 1),
            ("{auto_layer_iters}", self.auto_layer_iters, 1),
            ("{sample_every}", self.sample_every, 1),
            ("{save_every}", self.save_every, 1),
        ):
            if value < low:
                raise FieldError(f"{name} {value}: must be at least {low}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FieldError(f"{{lr}} {self.lr}: must be a positive number")
        if not 0 <= self.mixing <= 1:
            raise FieldError(f"{{mixing}} {self.mixing}: a probability, between 0 and 1")
        if not math.isfinite(self.sample_truncation):
            raise FieldError(
                f"{{sample_truncation}} {self.sample_truncation}: must be a number (1 = no truncation, 0.7 is "
                "common)"
            )
        if not (self.global_weight >= 0 and math.isfinite(self.global_weight)):
            raise FieldError(f"{{global_weight}} {self.global_weight}: must be 0 (off) or a positive number")
        if not (self.anchor_weight >= 0 and math.isfinite(self.anchor_weight)):
            raise FieldError(f"{{anchor_weight}} {self.anchor_weight}: must be 0 (off) or a positive number")
        if self.crop is not None and (len(self.crop) != 4 or not all(isinstance(v, int) for v in self.crop)):
            raise FieldError(
                f"{{crop}} {self.crop}: give the box as LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. {{crop}} "
                "0,64,512,448"
            )
        if self.compile not in COMPILE_CHOICES:
            raise FieldError(f"{{compile}} {self.compile}: choose one of {', '.join(COMPILE_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise FieldError(f"{{precision}} {self.precision}: choose fp32 or bf16")


def option_defaults() -> dict:
    """TrainOptions' defaults by field (the one place they are written); CLIP specs as text."""
    out = {}
    for f in fields(TrainOptions):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    out["clip"] = [str(c).removesuffix(":openai") for c in out["clip"]]
    return out


SETTINGS = {f.name for f in fields(TrainOptions)} - {
    "generator",
    "out",
    "source",
    "target",
    "target_images",
    "clip",
    "allow_pickle",
}


def resolve_options(
    generator: str | Path | None,
    out: str | Path | None,
    source: str = "photo",
    target: str | None = None,
    target_images: str | Path | None = None,
    clip: list[str] | None = None,
    clip_weights: list[float] | None = None,
    allow_pickle: bool = False,
    **settings,
) -> TrainOptions:
    """TrainOptions for a new run. generator: a checkpoint, builtin:NAME, random:SIZE, or None for the
    default built-in base; a built-in base brings its CLIP, templates, default target and per-target
    settings, which `settings` (TrainOptions fields such as iterations=, lr=) override."""
    unknown = sorted(set(settings) - SETTINGS)
    if unknown:
        raise FieldError(
            f"{{{unknown[0]}}}: not a training setting; the settings are {', '.join(sorted(SETTINGS))}"
        )
    given = {k: v for k, v in settings.items() if v is not None}
    base: BuiltinBase | None
    if generator is None:
        base = default_base()
    elif str(generator).startswith(BUILTIN_PREFIX):
        base = named_base(str(generator))
    else:
        base = base_owning(generator)
    chosen: dict = {}
    clip = list(clip or [])
    if base is not None:
        generator = str(base.generator)
        if target is None and target_images is None:
            target = base.default_target
        chosen = base.options_for(source, None if target_images else target)
        if not clip:
            clip = list(base.clip)
            chosen["templates"] = list(base.templates) if base.templates else None
    if out is None:
        raise FieldError("{out} is required: a new directory for the run")
    clip = clip or list(option_defaults()["clip"])
    if clip_weights and len(clip_weights) != len(clip):
        raise FieldError(
            f"{{clip_weights}} given {len(clip_weights)} times for {len(clip)} {{clip}} models; give one "
            "weight per model"
        )
    weights = clip_weights or [1.0] * len(clip)
    # absolute paths: a resumed run may start from another directory
    generator = str(Path(generator).resolve()) if Path(generator).exists() else str(generator)
    return TrainOptions(
        generator=generator,
        out=str(Path(out).resolve()),
        source=source,
        target=target,
        target_images=str(Path(target_images).resolve()) if target_images else None,
        clip=[parse_clip_spec(c, w) for c, w in zip(clip, weights)],
        allow_pickle=allow_pickle,
        **{**chosen, **given},
    )
