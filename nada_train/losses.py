"""CLIP guidance: the directional loss that moves G_train away from G_frozen along a text (or image)
direction in CLIP space, and the global loss that the layer selection uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nada_core.errors import FieldError
from nada_train.clip import ClipModel
from nada_train.clip.templates import compose, imagenet_templates
from nada_train.compiled import compiled

# Step 0: G_train == G_frozen and the image step is zero up to float noise (~1e-7: CLIP's grad and
# no-grad kernels differ). Steps shorter than this floor are divided by the floor, not normalised,
# so step 0 gets a clean gradient along the target direction instead of a normalised noise vector;
# real steps (1e-2 and up) are normalised as usual. The reference nudges the image by 1e-6 instead.
DIRECTION_EPS = 1e-5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def text_embedding(clip: ClipModel, text: str, templates: list[str]) -> torch.Tensor:
    """Per-template normalised embeddings of `text`, [n_templates, dim]."""
    return clip.encode_texts(compose(text, templates))


def text_direction(
    clip: ClipModel, source: str, target: str, templates: list[str] | None = None
) -> torch.Tensor:
    """normalise(mean_i(target_i - source_i)) over the 79 templates, each embedding normalised."""
    templates = templates or imagenet_templates()
    return paired_direction(text_embedding(clip, source, templates), text_embedding(clip, target, templates))


def paired_direction(source_embeddings: torch.Tensor, target_embeddings: torch.Tensor) -> torch.Tensor:
    """normalise(mean_i(target_i - source_i)) of embeddings paired row by row (one per template)."""
    return F.normalize((target_embeddings - source_embeddings).mean(0), dim=-1)


def image_direction(source_embeddings: torch.Tensor, target_embeddings: torch.Tensor) -> torch.Tensor:
    """Image-guided target: normalise(mean target embedding - mean source embedding)."""
    return F.normalize(target_embeddings.mean(0) - source_embeddings.mean(0), dim=-1)


def directional_loss(
    frozen_emb: torch.Tensor, train_emb: torch.Tensor, direction: torch.Tensor
) -> torch.Tensor:
    """mean over the batch of 1 - cos(normalise(train - frozen), direction); embeddings normalised."""
    step = train_emb - frozen_emb
    step = step / step.norm(dim=-1, keepdim=True).clamp_min(DIRECTION_EPS)
    return (1 - step @ direction).mean()


def global_loss(emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """mean of 1 - cos(image embedding, text embedding)."""
    return (1 - emb @ F.normalize(text_emb, dim=-1)).mean()


# the anchor compares images at this size: where things are and their colours, not how they are drawn
ANCHOR_SIZE = 16


def anchor_loss(frozen_images: torch.Tensor, train_images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the frozen and trained images averaged down to ANCHOR_SIZE px.

    Not in the paper: the directional loss constrains only the CLIP step, so a run may move what is
    drawn along with how it is drawn. Averaged over blocks (64 px: 4x4, 1024 px: 64x64) the images keep
    their layout and colours while strokes, edges and textures inside a block stay free to change."""
    assert frozen_images.shape == train_images.shape, (frozen_images.shape, train_images.shape)
    size = min(ANCHOR_SIZE, train_images.shape[-1], train_images.shape[-2])
    return F.mse_loss(F.adaptive_avg_pool2d(train_images, size), F.adaptive_avg_pool2d(frozen_images, size))


STYLE_IMAGE_SIZE = 256


def square_crop(img: Image.Image, size: int = STYLE_IMAGE_SIZE) -> Image.Image:
    """Resize the short side to `size` (bicubic), then crop the centre square: a non-square image
    keeps its proportions, as the reference and CLIP's own preprocessing treat it."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_style_images(folder: str | Path) -> torch.Tensor:
    """Images of the target style as a batch [N, 3, 256, 256] in [-1, 1] (square_crop each; CLIP's
    preprocessing then resizes to its own input)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FieldError(f"{{target_images}} '{folder}': not a directory; pass a folder of .png/.jpg images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FieldError(f"{{target_images}} '{folder}': no .png, .jpg or .jpeg files in it")
    arrays = []
    for p in files:
        try:
            img = square_crop(Image.open(p).convert("RGB"))
        except OSError as exc:
            raise FieldError(
                f"{{target_images}}: cannot read '{p}' ({exc}); remove it or replace it"
            ) from None
        arrays.append(np.asarray(img, dtype=np.float32) / 127.5 - 1)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class ClipGuide:
    """Several CLIP models with weights; their target directions computed once and cached."""

    def __init__(self, models: list[ClipModel], frozen_memo=None, compile: str = "off"):
        """frozen_memo: a trainer.FrozenMemo shared by targets trained together (their frozen images'
        embeddings computed once a step), or None. compile: the training step's image encoders
        compiled (nada_train.compiled)."""
        if not models:
            raise FieldError("no CLIP model given; name one in {clip}, e.g. ViT-B-32")
        self.models, self.frozen_memo = models, frozen_memo
        self.encoders = [compiled(m.encode_images, compile) for m in models]
        self.directions: list[torch.Tensor] = []
        self.target_texts: list[torch.Tensor] = []

    def set_text_target(self, source: str, target: str, templates: list[str] | None = None) -> None:
        """Directions from `source` to `target` text through `templates` (None: the 79 ImageNet ones)."""
        self.directions, self.target_texts = [], []
        templates = list(templates) if templates else imagenet_templates()
        for m in self.models:  # each text through each CLIP once: ViT-B-32's text tower is slow on a CPU
            source_texts, target_texts = (text_embedding(m, text, templates) for text in (source, target))
            self.directions.append(paired_direction(source_texts, target_texts))
            self.target_texts.append(F.normalize(target_texts.mean(0), dim=-1))

    @torch.no_grad()
    def set_image_target(self, source_images: torch.Tensor, style_images: torch.Tensor) -> None:
        self.directions, self.target_texts = [], []
        for m in self.models:
            src = torch.cat([m.encode_images(x[None].to(m.mean.device)) for x in source_images])
            tgt = torch.cat([m.encode_images(x[None].to(m.mean.device)) for x in style_images])
            self.directions.append(image_direction(src, tgt))
            self.target_texts.append(F.normalize(tgt.mean(0), dim=-1))

    def directional(
        self, frozen_images: torch.Tensor, train_images: torch.Tensor, global_weight: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Directional loss per model, plus global_weight x the global loss on the same embeddings
        (the reference's lambda_global; 0 in the paper's training)."""
        total, parts = 0.0, {}
        for m, encode, direction, text in zip(self.models, self.encoders, self.directions, self.target_texts):
            with torch.no_grad():
                frozen_emb = (
                    encode(frozen_images)
                    if self.frozen_memo is None
                    else self.frozen_memo.embedding(m, encode, frozen_images)
                )
            train_emb = encode(train_images)
            loss = directional_loss(frozen_emb, train_emb, direction)
            if global_weight:
                loss = loss + global_weight * global_loss(train_emb, text)
            parts[str(m.spec)] = float(loss.detach())
            total = total + m.spec.weight * loss
        return total, parts

    def global_(self, images: torch.Tensor) -> torch.Tensor:
        return sum(
            m.spec.weight * global_loss(encode(images), t)
            for m, encode, t in zip(self.models, self.encoders, self.target_texts)
        )

    @torch.no_grad()
    def direction_similarity(self, frozen_images: torch.Tensor, train_images: torch.Tensor) -> float:
        """Mean cos(image step, target direction) over models: 1 - directional loss, for reports."""
        return self.similarity_of_embeddings(
            [(m.encode_images(frozen_images), m.encode_images(train_images)) for m in self.models]
        )

    @torch.no_grad()
    def similarity_of_embeddings(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """direction_similarity from each model's (frozen, trained) image embeddings, computed once by
        a caller that needs them too."""
        return float(
            np.mean([1 - float(directional_loss(f, t, d)) for (f, t), d in zip(pairs, self.directions)])
        )
