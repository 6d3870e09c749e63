"""The generator's architecture as data: inferred from a checkpoint's tensors, never assumed."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch

from nada_core.errors import NadaError


class LatentAndFrame:
    """What every generator config derives the same way: z and mapping widths, the output's shape,
    and the check of its crop box. Needs size, style_dim, n_mlp, z_features, mlp_features, crop."""

    @property
    def z_dim(self) -> int:
        return self.z_features or self.style_dim

    @property
    def mlp_widths(self) -> list[int]:
        """Widths through the mapping network: z, the hidden layers, w."""
        hidden = self.mlp_features or self.style_dim
        return [self.z_dim] + [hidden] * (self.n_mlp - 1) + [self.style_dim]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the output: the crop box, or the whole square."""
        if self.crop is None:
            return (self.size, self.size)
        left, top, right, bottom = self.crop
        return (bottom - top, right - left)

    def check_crop(self) -> None:
        if self.crop is not None:
            left, top, right, bottom = self.crop
            if not (0 <= left < right <= self.size and 0 <= top < bottom <= self.size):
                raise ValueError(
                    f"crop {list(self.crop)} is not a box inside the {self.size}x{self.size} image (left, "
                    "top, right, bottom with 0 <= left < right <= size)"
                )


@dataclass(frozen=True)
class GeneratorConfig(LatentAndFrame):
    """Everything needed to build a Generator.

    size:      output resolution (a power of two >= 8).
    style_dim: width of z and w (rosinality uses one width for both).
    n_mlp:     depth of the mapping network.
    channels:  feature width at each resolution 4, 8, ..., size (one entry per resolution).
    lr_mlp:    the mapping network's learning-rate multiplier; not stored in checkpoints, 0.01 in
               every public rosinality model.
    blur_kernel: the separable up-sampling filter taps.
    z_features:  width of z where it differs from w's (NVIDIA's z_dim); None: style_dim.
    mlp_features: width inside the mapping network (NVIDIA's layer_features); None: style_dim.
    conv_clamp:  activations clamped to +-X after each layer, as NVIDIA's conv_clamp (256 in its
                 configs); None: no clamping (rosinality).
    crop:        (left, top, right, bottom) of the image that is content, for generators that draw it
                 inside a larger frame (LSUN cars: 512x384 in 512x512); the output is that box.
    """

    size: int
    style_dim: int
    n_mlp: int
    channels: tuple[int, ...]
    lr_mlp: float = 0.01
    blur_kernel: tuple[int, ...] = field(default=(1, 3, 3, 1))
    z_features: int | None = None
    mlp_features: int | None = None
    conv_clamp: float | None = None
    crop: tuple[int, int, int, int] | None = None

    architecture = "stylegan2"

    @property
    def rosinality_compatible(self) -> bool:
        """Whether rosinality's Generator(size, style_dim, n_mlp) can hold this architecture."""
        return (
            self.z_features in (None, self.style_dim)
            and self.mlp_features in (None, self.style_dim)
            and self.conv_clamp is None
            and self.crop is None
            and self.lr_mlp == 0.01
            and tuple(self.blur_kernel) == (1, 3, 3, 1)
        )

    def __post_init__(self) -> None:
        log_size = math.log2(self.size)
        if self.size < 8 or log_size != int(log_size):
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")
        if len(self.channels) != self.log_size - 1:
            raise ValueError(
                f"channels needs one width per resolution 4..{self.size} ({self.log_size - 1} entries), got "
                f"{len(self.channels)}"
            )
        self.check_crop()

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Number of W+ codes: one per styled conv and ToRGB, shared as rosinality shares them."""
        return self.log_size * 2 - 2

    @property
    def num_noise_layers(self) -> int:
        return (self.log_size - 2) * 2 + 1

    def channel(self, resolution: int) -> int:
        return self.channels[int(math.log2(resolution)) - 2]

    @classmethod
    def rosinality(
        cls, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2
    ) -> GeneratorConfig:
        """The widths rosinality's Generator(size, style_dim, n_mlp, channel_multiplier) builds."""
        table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
        chans = []
        for i in range(2, int(math.log2(size)) + 1):
            res = 2**i
            base = table.get(res, max(16 * 1024 // res, 1))
            chans.append(base * (channel_multiplier if res >= 64 else 1))
        return cls(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=tuple(chans))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["blur_kernel"] = list(self.blur_kernel)
        d["crop"] = None if self.crop is None else list(self.crop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        return cls(
            size=int(d["size"]),
            style_dim=int(d["style_dim"]),
            n_mlp=int(d["n_mlp"]),
            channels=tuple(int(c) for c in d["channels"]),
            lr_mlp=float(d.get("lr_mlp", 0.01)),
            blur_kernel=tuple(int(k) for k in d.get("blur_kernel", (1, 3, 3, 1))),
            z_features=_optional(d.get("z_features"), int),
            mlp_features=_optional(d.get("mlp_features"), int),
            conv_clamp=_optional(d.get("conv_clamp"), float),
            crop=_optional(d.get("crop"), lambda box: tuple(int(v) for v in box)),
        )

    @classmethod
    def infer(cls, state: dict[str, torch.Tensor], source: str = "checkpoint") -> GeneratorConfig:
        """Read the architecture off a rosinality-format state dict's tensor shapes.

        Works for any channel multiplier or custom widths (the reference code assumes config-f).
        """

        def need(key: str) -> torch.Tensor:
            if key not in state:
                raise NadaError(
                    f"{source}: missing tensor '{key}'; it is not a rosinality-format StyleGAN2 generator "
                    "(expected keys like style.1.weight, input.input, conv1.conv.weight)"
                )
            return state[key]

        mlp_ids = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        if not mlp_ids:
            need("style.1.weight")
        n_mlp = len(mlp_ids)
        style_dim = int(need("style.1.weight").shape[1])
        n_rgb = len({k.split(".")[1] for k in state if k.startswith("to_rgbs.")})
        size = 2 ** (n_rgb + 2)
        channels = [int(need("input.input").shape[1])]
        for j in range(n_rgb):
            weight = need(f"convs.{2 * j}.conv.weight")
            if weight.ndim != 5:
                raise NadaError(
                    f"{source}: convs.{2 * j}.conv.weight has shape {tuple(weight.shape)}, expected 5 dims"
                )
            channels.append(int(weight.shape[1]))
        try:
            config = cls(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=tuple(channels))
        except ValueError as exc:
            raise NadaError(f"{source}: inconsistent generator tensors ({exc})") from None
        return config


def _optional(value, kind):
    return None if value is None else kind(value)
