"""The built-in world's models: where their files live, the CLIP's prompt templates, the judge,
and the generator's architecture and latent rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nada_world.render import COLOURS, SHAPES, STYLES, Scene

ASSETS = Path(__file__).with_name("assets")
CLIP_NAME = "nada-world-clip"
CLIP_WEIGHTS = ASSETS / "clip.safetensors"
JUDGE_WEIGHTS = ASSETS / "judge.safetensors"
GENERATOR_WEIGHTS = ASSETS / "generator.safetensors"
ENCODER_WEIGHTS = ASSETS / "encoder.safetensors"  # photo renders -> the generator's W+ (train_encoder)

# Caption templates the world CLIP is trained on; {style} is the style word the user names.
CAPTION_TEMPLATES = (
    "a {style} of a {colour} {shape}",
    "a {colour} {shape} in {style} style",
    "{style} image of a {colour} {shape}",
    "a {style} showing a {colour} {shape}",
)


def clip_model_name(weights: Path | str) -> str:
    """The open_clip config a world CLIP file was trained with (recorded in its metadata; files
    from before the record are the first config, CLIP_NAME)."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return (f.metadata() or {}).get("model", CLIP_NAME)


def load_world_clip(weights: Path = CLIP_WEIGHTS, device: str | torch.device = "cpu"):
    """A world CLIP file through nada_train.clip: its open_clip config (named in the file) lies in
    ASSETS beside the shipped weights; a file elsewhere gets that folder's configs registered."""
    from nada_train.clip import ClipSpec, load_clip, register_model_configs

    register_model_configs(ASSETS)
    return load_clip(ClipSpec(clip_model_name(weights), str(weights)), device)


def caption(style: str, colour: str, shape: str, template: int = 0) -> str:
    return CAPTION_TEMPLATES[template].format(style=style, colour=colour, shape=shape)


def direction_templates() -> list[str]:
    """Prompt templates for text directions with the world CLIP: every caption template over every
    colour and shape, with {} for the style word; averaging over them leaves only the style."""
    return [
        t.format(style="{}", colour=c, shape=s) for t in CAPTION_TEMPLATES for c in COLOURS for s in SHAPES
    ]


# ---- judge -----------------------------------------------------------------------------------
# images the judge and the world's CLIP score at a time: 64 take about 35% less time than 256 on the
# CPU (their activations stay in cache), with the same logits and embeddings to the bit
SCORING_BATCH = 64


class Judge(nn.Module):
    """CNN classifier of style, shape and colour; decides metrics, never used as a loss."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        # a strided first layer: 64 -> 32 px at once keeps it cheap enough to train on one CPU core
        layers, c_in = [nn.Conv2d(3, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)], w
        for c_out in (w, 2 * w, 4 * w):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {
                "style": nn.Linear(c_in, len(STYLES)),
                "shape": nn.Linear(c_in, len(SHAPES)),
                "colour": nn.Linear(c_in, len(COLOURS)),
            }
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [N, 3, 64, 64] in [-1, 1] -> logits per factor."""
        h = self.features(images).mean((2, 3))
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = SCORING_BATCH) -> dict[str, np.ndarray]:
        self.eval()
        outs = [self(x) for x in images.split(batch)]
        return {k: torch.cat([o[k] for o in outs]).argmax(1).cpu().numpy() for k in self.heads}


def load_judge(path: Path = JUDGE_WEIGHTS) -> Judge:
    from safetensors.torch import load_file

    judge = Judge()
    judge.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return judge.eval()


# ---- generator: architecture and the rule from z to the scene it draws ---------------------
Z_DIM = 64
N_FACTOR_FEATURES = len(SHAPES) + len(COLOURS) + 7


def generator_config():
    from nada_train.generator import GeneratorConfig

    # lr_mlp 1: this mapping network is trained by regression, not by the GAN recipe
    return GeneratorConfig(size=64, style_dim=Z_DIM, n_mlp=4, channels=(256, 256, 128, 64, 32), lr_mlp=1.0)


def _phi(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / 2**0.5))


# The generator's own domain: photos with the object near the centre, at a moderate size and tilt.
# Narrower than what the CLIP and the judge see, so that a small generator trained on a CPU draws
# it sharply; (low, high) of each factor.
GEN_CENTRE = (0.44, 0.56)
GEN_RADIUS = (0.20, 0.26)
GEN_ANGLE = (-0.15, 0.15)


def _lerp(lo_hi: tuple[float, float], t: float) -> float:
    return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * t


def _unlerp(lo_hi: tuple[float, float], x: float) -> float:
    return (x - lo_hi[0]) / (lo_hi[1] - lo_hi[0])


def scene_of_z(z: torch.Tensor) -> list[Scene]:
    """The scene a latent stands for: shape = argmax z[0:4], colour = argmax z[4:9], position, size,
    angle and photo nuisances from the normal CDF of z[9:16]. Photo style."""
    u = _phi(z[:, 9:16]).cpu().numpy()
    shapes = z[:, 0:4].argmax(1).tolist()
    colours = z[:, 4:9].argmax(1).tolist()
    return [
        Scene(
            shape=s,
            colour=c,
            style=0,
            cx=_lerp(GEN_CENTRE, a[0]),
            cy=_lerp(GEN_CENTRE, a[1]),
            radius=_lerp(GEN_RADIUS, a[2]),
            angle=_lerp(GEN_ANGLE, a[3]),
            nuisance=(float(a[4]), float(a[5]), float(a[6]), 0.5, 0.5, 0.5),
        )
        for s, c, a in zip(shapes, colours, u)
    ]


def factor_features(scenes: list[Scene]) -> torch.Tensor:
    """What the synthesis network is conditioned on while it learns: one-hot shape and colour, then
    position, size, angle and the three photo nuisances, each in [0, 1]."""
    rows = []
    for s in scenes:
        f = np.zeros(N_FACTOR_FEATURES, np.float32)
        f[s.shape] = 1
        f[len(SHAPES) + s.colour] = 1
        f[len(SHAPES) + len(COLOURS) :] = [
            _unlerp(GEN_CENTRE, s.cx),
            _unlerp(GEN_CENTRE, s.cy),
            _unlerp(GEN_RADIUS, s.radius),
            _unlerp(GEN_ANGLE, s.angle),
            *s.nuisance[:3],
        ]
        rows.append(f)
    return torch.from_numpy(np.stack(rows))


class FactorEncoder(nn.Module):
    """Factor features -> w: the code the synthesis network learns to draw from (stage 1), and the
    target the mapping network then learns to reach from z (stage 2)."""

    def __init__(self, w_dim: int = Z_DIM, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(N_FACTOR_FEATURES, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, w_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def augment(images: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Photometric and small geometric changes that keep style, shape and colour: brightness,
    contrast, noise, blur, shifts. For training the CLIP and the judge."""
    n, dev = images.shape[0], images.device
    r = lambda *s: torch.rand(*s, generator=gen, device=dev)  # noqa: E731
    x = (images + 1) / 2
    x = x * (0.75 + 0.5 * r(n, 1, 1, 1))  # brightness
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (0.75 + 0.5 * r(n, 1, 1, 1)) + mean  # contrast
    x = x + 0.03 * torch.randn(x.shape, generator=gen, device=dev) * r(n, 1, 1, 1)
    blur = r(n) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0], device=dev)
        k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k, groups=3)
    shifts = (r(2) * 9 - 4).long().tolist()
    x = torch.roll(x, shifts=shifts, dims=(2, 3))
    return x.clamp(0, 1) * 2 - 1
