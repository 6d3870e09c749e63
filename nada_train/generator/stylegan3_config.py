"""StyleGAN3's architecture as data: every layer's geometry written out, as read from a network file.

NVIDIA derives each layer's sizes, sampling rates and filters from a handful of hyper-parameters
(with scipy's filter design); nada reads the result off the file instead (the filters travel as
buffers), so a config here is explicit and needs no filter design to rebuild.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from nada_train.generator.config import LatentAndFrame


@dataclass(frozen=True)
class AliasFreeLayerSpec:
    """One synthesis layer (StyleGAN3's SynthesisLayer).

    in_channels, out_channels: feature widths.
    in_size, out_size: square feature maps' side, margins included.
    kernel:     modulated conv kernel (3 in config T, 1 in config R and the ToRGB layer).
    up, down:   integer up- and down-sampling around the nonlinearity.
    padding:    (x0, x1, y0, y1) applied after zero-insertion upsampling (negative crops).
    up_taps, down_taps: filter lengths (1: no filter).
    radial:     the down filter is a 2-D radially symmetric one (config R), else separable.
    torgb:      the last layer: no demodulation, linear activation.
    """

    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    kernel: int
    up: int
    down: int
    padding: tuple[int, int, int, int]
    up_taps: int
    down_taps: int
    radial: bool = False
    torgb: bool = False

    def __post_init__(self) -> None:
        expected = (
            (self.in_size + self.kernel - 1) * self.up
            + self.padding[0]
            + self.padding[1]
            - (self.up_taps - 1)
            - (self.down_taps - 1)
        )
        if (expected + self.down - 1) // self.down != self.out_size:
            raise ValueError(
                f"layer geometry does not add up: {self.in_size} px in, up {self.up}, padding "
                f"{list(self.padding)}, filters {self.up_taps}/{self.down_taps}, down {self.down} gives "
                f"{(expected + self.down - 1) // self.down}, not {self.out_size}"
            )


@dataclass(frozen=True)
class StyleGAN3Config(LatentAndFrame):
    """Everything needed to build a StyleGAN3Generator.

    size:        output resolution.
    style_dim:   width of w; z_features: width of z where it differs (NVIDIA's z_dim).
    n_mlp, lr_mlp, mlp_features: the mapping network (depth, learning-rate multiplier, hidden width).
    input_channels, input_size: the Fourier-feature input's width and side (margins included).
    input_sampling_rate, input_bandwidth: its sampling rate and the cutoff of its frequencies.
    layers:      the synthesis layers, the ToRGB layer last.
    conv_clamp:  activations clamped to +-X in each layer (None: none).
    output_scale: the image is the ToRGB output times this (0.25 in NVIDIA's configs).
    crop:        (left, top, right, bottom) content box of the frame, or None.
    """

    size: int
    style_dim: int
    n_mlp: int
    input_channels: int
    input_size: int
    input_sampling_rate: float
    input_bandwidth: float
    layers: tuple[AliasFreeLayerSpec, ...] = field(default_factory=tuple)
    lr_mlp: float = 0.01
    z_features: int | None = None
    mlp_features: int | None = None
    conv_clamp: float | None = 256.0
    output_scale: float = 0.25
    crop: tuple[int, int, int, int] | None = None

    architecture = "stylegan3"

    def __post_init__(self) -> None:
        if not self.layers or not self.layers[-1].torgb or any(spec.torgb for spec in self.layers[:-1]):
            raise ValueError("a StyleGAN3 synthesis needs its layers with exactly one ToRGB layer, the last")
        if self.layers[-1].out_size != self.size or self.layers[-1].out_channels != 3:
            raise ValueError(
                f"the ToRGB layer makes {self.layers[-1].out_size} px x {self.layers[-1].out_channels} "
                f"channels, not {self.size} px RGB"
            )
        self.check_crop()

    @property
    def n_latent(self) -> int:
        """One W code for the input and one per layer (NVIDIA's num_ws)."""
        return len(self.layers) + 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["architecture"] = self.architecture
        d["layers"] = [{**asdict(spec), "padding": list(spec.padding)} for spec in self.layers]
        d["crop"] = None if self.crop is None else list(self.crop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StyleGAN3Config:
        layers = tuple(
            AliasFreeLayerSpec(**{**spec, "padding": tuple(int(p) for p in spec["padding"])})
            for spec in d["layers"]
        )
        kept = {k: v for k, v in d.items() if k not in ("architecture", "layers", "crop")}
        config = cls(**kept, layers=layers)
        return replace(config, crop=None if d.get("crop") is None else tuple(int(v) for v in d["crop"]))
