"""How well the world's models do: CLIP zero-shot accuracy, judge accuracy, and the adaptation
metrics written to metrics.json."""

from __future__ import annotations

import numpy as np
import torch

from nada_world.models import CAPTION_TEMPLATES, SCORING_BATCH, Judge, caption
from nada_world.render import COLOURS, SHAPES, STYLES, Scene, backdrop_kind


@torch.no_grad()
def combo_text_embeddings(encode_texts) -> torch.Tensor:
    """[n_styles * n_shapes * n_colours, dim]: each combo's caption embedding, mean over templates."""
    rows = []
    for st in STYLES:
        for sh in SHAPES:
            for co in COLOURS:
                e = encode_texts([caption(st, co, sh, t) for t in range(len(CAPTION_TEMPLATES))]).mean(0)
                rows.append(torch.nn.functional.normalize(e, dim=0))
    return torch.stack(rows)


@torch.no_grad()
def zero_shot_predict(
    encode_images, encode_texts, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(style, shape, colour) of the caption with the highest similarity to each image."""
    return zero_shot_of_embeddings(
        torch.cat([encode_images(x) for x in images.split(SCORING_BATCH)]), encode_texts
    )


@torch.no_grad()
def zero_shot_of_embeddings(
    embeddings: torch.Tensor, encode_texts
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """zero_shot_predict from the images' (normalised) CLIP embeddings."""
    pred = (embeddings @ combo_text_embeddings(encode_texts).T).argmax(1).cpu()
    rest = pred % (len(SHAPES) * len(COLOURS))
    return pred // (len(SHAPES) * len(COLOURS)), rest // len(COLOURS), rest % len(COLOURS)


def zero_shot_accuracy(
    encode_images, encode_texts, images: torch.Tensor, style, shape, colour
) -> dict[str, float]:
    """Zero-shot accuracy per factor."""
    return prediction_accuracy(zero_shot_predict(encode_images, encode_texts, images), style, shape, colour)


def prediction_accuracy(predicted, style, shape, colour) -> dict[str, float]:
    """Accuracy per factor of (style, shape, colour) predictions (tensors or arrays), the CLIP's or the judge's."""
    truth = {"style": style, "shape": shape, "colour": colour}
    return {k: float(np.mean(np.asarray(p) == np.asarray(truth[k]))) for k, p in zip(truth, predicted)}


def style_accuracy_by_backdrop(predicted_style, scenes: list[Scene]) -> dict[str, float]:
    """Style accuracy on the dark, usual and light backdrops separately: a model that reads the style
    off the backdrop (dark = neon) passes on the usual ones and fails on the extremes."""
    predicted = np.asarray(predicted_style)
    kinds = np.array([backdrop_kind(s) for s in scenes])
    truth = np.array([s.style for s in scenes])
    return {
        k: float(np.mean(predicted[kinds == k] == truth[kinds == k]))
        for k in ("dark", "usual", "light")
        if np.any(kinds == k)
    }


def judge_accuracy(judge: Judge, images: torch.Tensor, style, shape, colour) -> dict[str, float]:
    pred = judge.predict(images)
    return prediction_accuracy((pred["style"], pred["shape"], pred["colour"]), style, shape, colour)


def adaptation_metrics(
    judge: Judge, frozen: torch.Tensor, adapted: torch.Tensor, target_style: int
) -> dict[str, float]:
    """target_style_rate: share of adapted images judged in the target style; content_kept_rate:
    share whose judged shape and colour equal those judged on the frozen image of the same latent;
    the same two rates for the frozen images (content compared with itself is 1 by definition)."""
    f, a = judge.predict(frozen), judge.predict(adapted)
    same_content = (a["shape"] == f["shape"]) & (a["colour"] == f["colour"])
    return {
        "target_style_rate": float(np.mean(a["style"] == target_style)),
        "content_kept_rate": float(np.mean(same_content)),
        "frozen_target_style_rate": float(np.mean(f["style"] == target_style)),
        "frozen_content_kept_rate": 1.0,
        "adapted_style_counts": {STYLES[i]: int(np.sum(a["style"] == i)) for i in range(len(STYLES))},
        "n_images": int(len(f["style"])),
    }
