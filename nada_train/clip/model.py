"""A frozen CLIP model from open_clip, with differentiable preprocessing for generator images.

Specs name a model and where its weights come from:
  ViT-B-32                 open_clip's "openai" weights (local cache, else downloaded)
  ViT-B-32:laion2b_s34b_b79k   another pretrained tag
  ViT-B-32:/path/to/weights.pt a local weights file
  NAME:/path/to/weights.safetensors  a model of your own: its open_clip config NAME.json beside the weights
  ViT-B-32:random          uninitialised weights, for smoke tests and speed benchmarks only
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nada_core.errors import FieldError
from nada_train.clip.compat import import_open_clip

RANDOM_TAG = "random"
DEFAULT_TAG = "openai"


@dataclass(frozen=True)
class ClipSpec:
    name: str
    pretrained: str = DEFAULT_TAG
    weight: float = 1.0

    def __str__(self) -> str:
        return f"{self.name}:{self.pretrained}"


def parse_clip_spec(text: str, weight: float = 1.0) -> ClipSpec:
    text = text.strip()
    if not text:
        raise FieldError("{clip} is empty; name an open_clip model such as ViT-B-32")
    if text.startswith("hf-hub:"):
        return ClipSpec(text, "", weight)
    name, _, pretrained = text.partition(":")
    return ClipSpec(name, pretrained or DEFAULT_TAG, weight)


def register_model_configs(folder: str | Path) -> None:
    """Make the open_clip model configs (JSON files) in `folder` loadable by name."""
    import_open_clip().add_model_config(Path(folder))


def _weights_hint() -> str:
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub"
    )
    return (
        f"open_clip looks in the Hugging Face cache ({hf}) and ~/.cache/clip; pass a local file as --clip "
        "NAME:/path/to/weights.pt, or NAME:random for a smoke test"
    )


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors", ".pth"))


def _weights_cached(open_clip, name: str, tag: str) -> bool:
    """Whether open_clip would find these weights without the network."""
    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    if cfg.get("url") and (Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])).is_file():
        return True
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo.rstrip("/"), f), str) for f in names)
    return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class ClipModel(nn.Module):
    """Frozen CLIP in eval mode; encode_* return L2-normalised float32 embeddings."""

    def __init__(self, spec: ClipSpec, model: nn.Module, tokenizer, image_size: int, mean, std):
        super().__init__()
        self.spec = spec
        # what was built, for the run's manifest: the open_clip config and its activation
        self.quick_gelu = any(type(m).__name__ == "QuickGELU" for m in model.modules())
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def describe(self) -> dict:
        """The CLIP as the manifest records it."""
        return {
            "name": self.spec.name,
            "pretrained": self.spec.pretrained,
            "weight": self.spec.weight,
            "config": self.spec.name,
            "quick_gelu": self.quick_gelu,
        }

    def train(self, mode: bool = True) -> ClipModel:
        # CLIP stays in eval mode whatever the trainer does to its modules.
        super().train(False)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output [N,3,H,W] in [-1,1] -> CLIP input: [0,1], bicubic resize of the short
        side, center crop, normalise. Differentiable."""
        x = (images.float() + 1) / 2
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=scale < 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[:, :, top : top + s, left : left + s]
        return (x - self.mean) / self.std

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


CONFIG_DIR_ENV = "NADA_CLIP_CONFIG_DIR"


def load_clip(spec: ClipSpec, device: str | torch.device = "cpu") -> ClipModel:
    open_clip = import_open_clip()
    for folder in filter(None, os.environ.get(CONFIG_DIR_ENV, "").split(os.pathsep)):
        register_model_configs(folder)  # extra model configs (JSON), e.g. small CLIPs for tests
    pretrained = spec.pretrained or None
    if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
        raise FieldError(f"{{clip}} {spec}: weights file '{pretrained}' does not exist; {_weights_hint()}")
    if pretrained and (Path(pretrained).parent / f"{spec.name}.json").is_file():
        register_model_configs(Path(pretrained).parent)  # a model of your own: config beside its weights
    known = open_clip.list_models()
    if spec.name not in known and not spec.name.startswith("hf-hub:"):
        close = [m for m in known if spec.name.lower().replace("/", "-") in m.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (open_clip.list_models() lists them)"
        raise FieldError(
            f"{{clip}} {spec}: unknown CLIP model '{spec.name}'{hint}; note open_clip writes ViT-B-32, not "
            "ViT-B/32"
        )
    if spec.pretrained == RANDOM_TAG:
        warnings.warn(
            f"CLIP {spec.name} has RANDOM weights: its guidance is meaningless (smoke tests and speed "
            "benchmarks only)",
            stacklevel=2,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same "random" CLIP every time, so runs reproduce and resume
            model = open_clip.create_model(spec.name, pretrained=None, device=device)
    else:
        if pretrained and not Path(pretrained).is_file():
            tags = open_clip.list_pretrained_tags_by_model(spec.name)
            if pretrained not in tags:
                raise FieldError(
                    f"{{clip}} {spec}: unknown pretrained tag '{pretrained}' for {spec.name}; known tags: "
                    f"{', '.join(tags) or 'none'} (or 'random', or a local file)"
                )
        if (
            pretrained
            and not Path(pretrained).is_file()
            and not _weights_cached(open_clip, spec.name, pretrained)
            and not _hub_reachable()
        ):
            raise FieldError(
                f"{{clip}} {spec}: weights are not cached on this machine and the model hub cannot be "
                f"reached; {_weights_hint()}"
            )
        # build the network the weights were trained as: OpenAI's CLIPs used QuickGELU, and open_clip
        # (since 2.29) builds plain GELU for them unless told (it only warns)
        tag_cfg = (
            (open_clip.get_pretrained_cfg(spec.name, pretrained) or {})
            if pretrained and not Path(pretrained).is_file()
            else {}
        )
        try:
            model = open_clip.create_model(
                spec.name,
                pretrained=pretrained,
                device=device,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            )
        except Exception as exc:  # network, hub and file errors all mean: no weights here
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise FieldError(
                f"{{clip}} {spec}: could not load the weights ({reason}); {_weights_hint()}"
            ) from None
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    tokenizer = open_clip.get_tokenizer(spec.name)
    return ClipModel(spec, model, tokenizer, size, mean, std).to(device)
