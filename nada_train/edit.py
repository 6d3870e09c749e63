"""Your own images in every domain: each image is inverted into the base's W+, by an encoder trained for
that base (nada_train.encoders: pSp, e4e, ReStyle) or by projection (nada_train.projection: any base),
then its codes are drawn by the base (the reconstruction) and by each run adapted from that base.
An inversion belongs to one base, so runs of different bases are refused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nada_core.errors import FieldError
from nada_train.checkpoints import LoadedGenerator, load_generator
from nada_train.generator import StyleGenerator
from nada_train.images import psnr, to_uint8
from nada_train.projection import project, target_tensor


@dataclass
class Edited:
    """One image: `input` at the generator's size, its `reconstruction` by the base, its image in
    each run's domain (by run name), its W+ code [n_latent, w_dim] and the reconstruction's PSNR."""

    name: str
    input: np.ndarray
    reconstruction: np.ndarray
    domains: dict[str, np.ndarray]
    ws: np.ndarray
    psnr_db: float
    inverted_by: str = ""  # the encoder, or the projection's distance


def one_base(
    runs: Sequence[LoadedGenerator], names: Sequence[str], loaded: LoadedGenerator | None = None
) -> LoadedGenerator:
    """The base every run was adapted from, loaded and checked against the runs' record of it.
    loaded: a generator already in memory (an encoder's decoder) used as the base when it is the one
    the runs record, instead of reading the file again."""
    if not runs:
        raise FieldError("{runs}: give at least one run directory to draw the images in")
    bases = {}
    for run, name in zip(runs, names):
        if run.base is None:
            raise FieldError(f"{{runs}} '{name}': not a nada-train run directory (no base recorded)")
        bases.setdefault(run.base["sha256"], []).append((name, run.base))
    if len(bases) > 1:
        listed = "; ".join(
            f"{', '.join(n for n, _ in group)} from {group[0][1]['path']}" for group in bases.values()
        )
        raise FieldError(
            f"{{runs}}: adapted from different bases ({listed}); an inversion belongs to one base"
        )
    record = next(iter(bases.values()))[0][1]
    if loaded is not None and loaded.sha256 == record["sha256"]:
        return loaded
    base = load_generator(record["path"], runs[0].device)
    if base.sha256 != record["sha256"]:
        raise FieldError(
            f"{{runs}}: the base '{record['path']}' has changed since the runs were trained (sha256 "
            f"{base.sha256[:12]}, the runs record {record['sha256'][:12]})"
        )
    return base


@contextlib.contextmanager
def noise_of(generator: StyleGenerator, noise: dict[str, torch.Tensor]) -> Iterator[None]:
    """`generator` drawing with these noise maps (a projection's) in place of its stored ones, for the
    duration; nothing to swap for a generator without noise inputs."""
    if not noise:
        yield
        return
    stored = dict(generator.noises.named_buffers())
    try:
        for name, value in noise.items():
            setattr(generator.noises, name, value.to(stored[name]))
        yield
    finally:
        for name, buffer in stored.items():
            setattr(generator.noises, name, buffer)


def edit(
    images: Sequence[np.ndarray],
    runs: Sequence[str | Path | LoadedGenerator],
    *,
    names: Sequence[str] | None = None,
    base: LoadedGenerator | None = None,
    encoder=None,
    encoder_steps: int | None = None,
    **projection,
) -> list[Edited]:
    """Each uint8 image [H, W, 3] (resized to the base's size) in every run's domain (named after the
    run's folder). runs: run directories (or loaded runs) of one base; base: that base as one_base
    gives it, when the caller has it already. encoder: a LoadedEncoder (nada_train.encoders) whose
    decoder is that base: images are encoded (ReStyle: encoder_steps refinements, default 5);
    without one they are projected one at a time (projection: nada_train.projection options: steps,
    space, ...), each finding its own noise maps."""
    loaded = [r if isinstance(r, LoadedGenerator) else load_generator(r) for r in runs]
    run_names = [Path(r.source).name for r in loaded]
    base = base or one_base(loaded, run_names, encoder.generator if encoder is not None else None)
    if encoder is not None:
        check_encoder_base(encoder, base)
    size = base.config.image_shape
    names = list(names or [f"image{i}" for i in range(len(images))])
    out = []
    for name, image in zip(names, images):
        resized = to_uint8(target_tensor(image, tuple(size), torch.device("cpu"))).numpy()[0]
        if encoder is not None:
            ws = torch.from_numpy(encoder.encode(image[None], steps=encoder_steps))
            reconstruction = base.synthesize(ws)[0]
            noise, quality = {}, psnr(reconstruction, resized, 255.0)
            steps = encoder.default_steps if encoder_steps is None else encoder_steps
            how = f"{encoder.kind} encoder" + (f", {steps} steps" if encoder.iterative else "")
        else:
            found = project(base, resized, **projection)
            ws, reconstruction, noise, quality = found.ws, found.images[0], found.noise, found.psnr_db[0]
            how = f"projected by {found.distance}"
        domains = {}
        for run_name, run in zip(run_names, loaded):
            with noise_of(run.generator, noise):
                domains[run_name] = run.synthesize(ws)[0]
        out.append(Edited(name, resized, reconstruction, domains, ws[0].cpu().numpy(), quality, how))
    return out


def check_encoder_base(encoder, base: LoadedGenerator) -> None:
    """The runs must be adapted from the encoder's own decoder (nada-train --generator ENCODER.pt)."""
    if encoder.generator.sha256 != base.sha256:
        raise FieldError(
            f"{{encoder}} '{encoder.path}': its decoder is not the runs' base ({base.source}); train the runs "
            f"with --generator {encoder.path}, or invert by projection without {{encoder}}"
        )
