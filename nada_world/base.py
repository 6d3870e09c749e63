"""The built-in world as a base for nada-train (entry point `nada.bases`: world): its generator, its
CLIP and prompt templates, per-target settings, and the judge's evaluation written to metrics.json
after training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from nada_core.errors import FieldError
from nada_core.fileio import sha256_file, write_json
from nada_core.seeds import z_batch
from nada_train.bases import BuiltinBase
from nada_train.checkpoints import load_generator
from nada_train.clip import load_clip
from nada_train.generator.inference import inference_copy
from nada_train.losses import ClipGuide
from nada_train.options import TrainOptions
from nada_world.evaluate import adaptation_metrics, zero_shot_of_embeddings
from nada_world.models import (
    CLIP_WEIGHTS,
    ENCODER_WEIGHTS,
    GENERATOR_WEIGHTS,
    JUDGE_WEIGHTS,
    SCORING_BATCH,
    clip_model_name,
    direction_templates,
    load_judge,
    scene_of_z,
)
from nada_world.render import STYLES, render_batch

DEFAULT_TARGET = "pixel"  # the style whose default run reaches both goals (0.8) with the most margin
# Settings of the world's runs that differ from TrainOptions' defaults: every synthesis layer learns,
# at a higher learning rate, for more iterations, with the global CLIP loss beside the directional
# one. About 2.5 minutes on a 2-core CPU, evaluation included.
RUN_SETTINGS = dict(iterations=600, batch=4, sample_truncation=1.0, lr=0.01, layers="all", global_weight=1.0)
# The global loss and more steps bring the style and cost content; per target style, the setting
# whose lower judge rate was the highest in CPU sweeps (docs/world.md). Other targets: RUN_SETTINGS'.
TARGET_SETTINGS = {
    "sketch": {"global_weight": 0.7},
    "neon": {"global_weight": 0.5},
    "pixel": {"global_weight": 0.4, "iterations": 700},
}
EVAL_SEEDS = 1024  # seeds 0-1023: the rates within about +-0.012 (one standard error)
EVAL_CHUNK = 32  # latents drawn at a time into the images the judge sees


def world() -> BuiltinBase:
    """The entry point: the world as nada-train sees it."""
    return BuiltinBase(
        name="world",
        generator=GENERATOR_WEIGHTS,
        clip=(f"{clip_model_name(CLIP_WEIGHTS)}:{CLIP_WEIGHTS}",) if CLIP_WEIGHTS.exists() else (),
        templates=tuple(direction_templates()),  # its CLIP learnt its own captions, not ImageNet prompts
        default_target=DEFAULT_TARGET,
        options_for=options_for,
        evaluate=(lambda run_dir, device: evaluate_run(run_dir, device=device))
        if JUDGE_WEIGHTS.exists()
        else None,
        description="64-px shapes in photo style, adapted to sketch, neon or pixel and judged",
        encoder=ENCODER_WEIGHTS,
    )


def options_for(source: str, target: str | None) -> dict:
    """RUN_SETTINGS with the target style's own settings; texts must be the world's styles."""
    check_style(source, "source")
    if target is None:  # image-guided: no style to look up
        return dict(RUN_SETTINGS)
    style = STYLES[check_style(target, "target")]
    return {**RUN_SETTINGS, **TARGET_SETTINGS.get(style, {})}


def check_style(name: str, field: str) -> int:
    key = name.strip().lower()
    if key not in STYLES:
        raise FieldError(
            f"{{{field}}} '{name}': the built-in world knows the styles {', '.join(STYLES)}; name one of them"
        )
    return STYLES.index(key)


def images_of_seeds(generator: torch.nn.Module, n: int) -> torch.Tensor:
    """The generator's images [n, 3, H, W] in [-1, 1] of seeds 0..n-1, truncation 1: what the judge sees."""
    # channels_last: a quarter faster on the CPU too; fp32 throughout; chunks of 32, whose activations
    # stay in the CPU's caches: about 30% less time than 64 here, the same images to the bit
    g = inference_copy(generator, "fp32", channels_last=True)
    z = torch.from_numpy(z_batch(list(range(n)), g.config.z_dim)).to(next(g.parameters()).device)
    with torch.no_grad():
        return torch.cat([g(x) for x in z.split(EVAL_CHUNK)])


_FROZEN: dict[tuple[str, int, str], torch.Tensor] = {}  # the last key's images only


def frozen_images(n: int, device: str) -> torch.Tensor:
    """The world generator's own images of seeds 0..n-1, the same for every run judged: drawn once per
    process (each run of nada-train's several targets, or of nada-app's queue, judges against them),
    again when the generator's file changes (its sha256 is in the key)."""
    key = (sha256_file(GENERATOR_WEIGHTS), n, str(device))
    if key not in _FROZEN:  # the generator is built only to draw them
        _FROZEN.clear()
        _FROZEN[key] = images_of_seeds(load_generator(GENERATOR_WEIGHTS, device).generator, n)
    return _FROZEN[key]


def intended_renders(n: int, style: int, z_dim: int) -> torch.Tensor:
    """The renderer's own drawing, in `style`, of the scene each of seeds 0..n-1 stands for ([n, 3, H, W]
    in [-1, 1]): what an adaptation that draws exactly the intended scene in the new style would show."""
    z = torch.from_numpy(z_batch(list(range(n)), z_dim))
    return torch.from_numpy(render_batch([replace(scene, style=style) for scene in scene_of_z(z)]))


_CEILING: dict[tuple, float] = {}


def content_kept_ceiling(judge: torch.nn.Module, frozen: torch.Tensor, target: int, z_dim: int) -> float:
    """Content kept is judged against the frozen generator's images, which the judge does not always
    read as the scene their latent stands for: even the renderer's own drawing of each intended scene
    in the target style keeps only this share (about 0.85), the most an adaptation that draws the
    intended shapes can score. The same for every run of a target: rendered and judged (about 3 s for
    1,024 seeds) once per process, again when the generator's or the judge's file changes."""
    n, device = len(frozen), frozen.device
    key = (sha256_file(GENERATOR_WEIGHTS), sha256_file(JUDGE_WEIGHTS), n, target, str(device))
    if key not in _CEILING:
        intended = intended_renders(n, target, z_dim).to(device)
        _CEILING[key] = adaptation_metrics(judge, frozen, intended, target)["content_kept_rate"]
    return _CEILING[key]


@torch.no_grad()
def evaluate_run(run_dir: str | Path, n: int = EVAL_SEEDS, device: str = "cpu") -> dict:
    """metrics.json for a run on the world generator: the judge on frozen and adapted images of
    seeds 0..n-1 (truncation 1), the directional CLIP similarity of the image steps, and the share of
    images the guiding CLIP itself calls the target style."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise FieldError(f"{{eval_only}} '{run_dir}': no manifest.json; is it a nada-train run directory?")
    manifest = json.loads(manifest_path.read_text())
    if not world().owns(manifest["arguments"]["generator"]):
        raise FieldError(
            f"{{eval_only}} '{run_dir}': metrics need the built-in world generator as base; this run adapted "
            f"{manifest['arguments']['generator']}"
        )
    if manifest.get("target") is None:
        raise FieldError(f"{{eval_only}} '{run_dir}': image-guided runs have no target style to judge")
    target = check_style(manifest["target"], "target")
    frozen = frozen_images(n, device)
    generator = load_generator(run_dir, device).generator
    adapted = images_of_seeds(generator, n)
    judge = load_judge().to(device)
    metrics = adaptation_metrics(judge, frozen, adapted, target)
    metrics["content_kept_ceiling"] = content_kept_ceiling(judge, frozen, target, generator.config.z_dim)
    # the directional similarity under the CLIP and templates the run was guided by
    opts = TrainOptions.from_json(manifest["arguments"])
    guide = ClipGuide([load_clip(s, device) for s in opts.clip])
    guide.set_text_target(manifest["source"], manifest["target"], opts.templates)
    embeddings = [
        tuple(
            torch.cat([m.encode_images(x) for x in images.split(SCORING_BATCH)])
            for images in (frozen, adapted)
        )
        for m in guide.models
    ]  # each image encoded once per model, for both measures below
    metrics["directional_clip_similarity"] = guide.similarity_of_embeddings(embeddings)
    # the guiding CLIP's own zero-shot call (the world's captions): where it says target and the judge
    # does not, the generator found a shortcut in the CLIP
    clip = guide.models[0]
    for key, emb in (("clip_target_rate", embeddings[0][1]), ("frozen_clip_target_rate", embeddings[0][0])):
        style = zero_shot_of_embeddings(emb, clip.encode_texts)[0]
        metrics[key] = float((style == target).float().mean())
    metrics.update(
        target=manifest["target"],
        source=manifest["source"],
        iterations=manifest["iterations_done"],
        seeds=f"0-{n - 1}",
    )
    write_json(run_dir / "metrics.json", metrics)
    return metrics
