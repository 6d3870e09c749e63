"""A Trainer from TrainOptions: the frozen base and CLIP models loaded (once, shared by targets trained
together), the trained copy made from the base, the text or image target set, a resumed run's state read."""

from __future__ import annotations

import copy

import torch

from nada_core.errors import FieldError
from nada_train.checkpoints import LoadedGenerator, load_generator
from nada_train.clip import load_clip
from nada_train.compiled import check_compile
from nada_train.devices import resolve_device
from nada_train.domains import DomainGenerator
from nada_train.losses import ClipGuide, load_style_images
from nada_train.options import TrainOptions
from nada_train.run_dir import RunDir
from nada_train.trainer import FrozenMemo, Trainer


def build(opts: TrainOptions, run: RunDir, resume: bool) -> Trainer:
    """A Trainer for one target, everything loaded here."""
    opts.validate()
    device = resolve_device(opts.device)
    base = load_base(opts, device)
    return make_trainer(opts, run, resume, device, base, [load_clip(spec, device) for spec in opts.clip])


def load_base(opts: TrainOptions, device: torch.device) -> LoadedGenerator:
    """The frozen base, cropped as asked; CUDA's TF32 switches set; --compile checked against the device."""
    check_compile(opts.compile, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = opts.tf32
        torch.backends.cudnn.allow_tf32 = opts.tf32
    base = load_generator(opts.generator, device, allow_pickle=opts.allow_pickle)
    if base.kind == "run":
        raise FieldError(
            f"{{generator}} '{opts.generator}' is a run directory; adapt its base, or export/generate from it"
        )
    if opts.crop is not None:
        try:
            base.generator.set_crop(opts.crop)
        except ValueError as exc:
            raise FieldError(f"{{crop}} {','.join(map(str, opts.crop))}: {exc}") from None
    return base


def make_trainer(
    opts: TrainOptions,
    run: RunDir,
    resume: bool,
    device: torch.device,
    base: LoadedGenerator,
    clips: list,
    frozen_memo: FrozenMemo | None = None,
) -> Trainer:
    """A Trainer for one target from inputs already loaded (several targets share the base and CLIP
    models); the trained copy starts as a copy of the base, cropped as it is."""
    if resume:
        manifest = run.read_manifest()
        recorded = manifest["base"].get("sha256")
        if recorded and base.sha256 != recorded:
            raise FieldError(
                f"{{resume}}: base checkpoint '{opts.generator}' changed since the run started (sha256 "
                "differs); restore it to resume"
            )
        state = run.load_state()
        if "generator" not in state:
            raise FieldError(
                f"{{resume}} '{run.path}': its resume state was written by an older nada without the weights; "
                f"start a new run from {run.generator_path} instead"
            )
    guide = ClipGuide(clips, frozen_memo, opts.compile)
    if opts.target_images:
        style = load_style_images(opts.target_images)
        z = torch.randn(
            16, base.generator.config.z_dim, generator=torch.Generator().manual_seed(opts.seed)
        ).to(device)
        with torch.no_grad():
            source = base.generator(z)
        guide.set_image_target(source, style.to(device))
    else:
        guide.set_text_target(opts.source, opts.target, opts.templates)
    trainer = Trainer(opts, run, base, trained_copy(base, opts.parametrization), guide, device, frozen_memo)
    if resume:
        try:
            trainer.load_state(state)
        except RuntimeError as exc:  # shapes of another generator
            detail = " ".join(str(exc).split())[:200]
            raise FieldError(
                f"{{resume}} '{run.path}': its saved weights do not fit the base checkpoint ({detail})"
            ) from None
        run.truncate_log(trainer.iteration)
    return trainer


def trained_copy(base: LoadedGenerator, parametrization: str):
    """G_train: a copy of the base's network (full), or a lightweight domain of the base itself, which
    stays frozen and is shared with G_frozen (channels, styles)."""
    if parametrization == "full":
        return copy.deepcopy(base.generator)
    return DomainGenerator(base.generator, parametrization)
