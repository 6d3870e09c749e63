"""The 79 ImageNet prompt templates StyleGAN-NADA averages its text embeddings over.

They are OpenAI's 80 CLIP ImageNet templates (shipped by open_clip) less "a photo of many {}.",
which the reference drops.
"""

from __future__ import annotations

from nada_train.clip.compat import import_open_clip


def imagenet_templates() -> list[str]:
    import_open_clip()
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    texts = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [t for t in texts if t != "a photo of many {}."]


def compose(text: str, templates: list[str]) -> list[str]:
    return [t.format(text) for t in templates]
