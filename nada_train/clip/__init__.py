"""CLIP models through open_clip: loading by spec, differentiable preprocessing, text directions."""

from nada_train.clip.model import ClipModel, ClipSpec, load_clip, parse_clip_spec, register_model_configs

__all__ = ["ClipModel", "ClipSpec", "load_clip", "parse_clip_spec", "register_model_configs"]
