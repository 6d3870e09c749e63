"""From backbone features to W+ codes: one map-to-style head per code, on the feature pyramid (pSp,
e4e) or on the last 16x16 features alone (ReStyle's encoders); each code on its own (pSp's gradual
form) or as w0 plus a delta per code (e4e's progressive form, which keeps codes near one w)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nada_train.encoders.backbone import IR50_STAGES, IRSE50, Stages
from nada_train.generator.layers import EqualLinear

COARSE_CODES, MIDDLE_CODES = 3, 7  # codes 0-2 read the 16-px level, 3-6 the 32-px one, the rest 64 px


class MapToStyle(nn.Module):
    """Strided 3x3 convs with leaky ReLUs down to 1x1, then an equalised linear layer: one W code."""

    def __init__(self, spatial: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(width, width, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(width, width)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.width))


def upsample_add(coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """The pyramid's top-down step: bilinear (corners aligned) to the lateral's size, plus it."""
    return F.interpolate(coarse, size=lateral.shape[2:], mode="bilinear", align_corners=True) + lateral


class StyleEncoder(IRSE50):
    """Image(s) [N, in_channels, 256, 256] in [-1, 1] -> codes [N, n_styles, 512], before the
    latent average (or, for ReStyle, the previous step's codes) is added.

    pyramid: heads read the feature pyramid (pSp, e4e); else all read the 16-px features (ReStyle).
    progressive: codes are w0 + delta_i (e4e, ReStyle-e4e); else each code is its own head's (pSp).
    stages, width: the backbone's stages and the codes' width (the last stage's channels), the
    authors' IR-50 and 512 unless given."""

    def __init__(
        self,
        n_styles: int,
        in_channels: int = 3,
        pyramid: bool = True,
        progressive: bool = False,
        stages: Stages = IR50_STAGES,
    ):
        super().__init__(in_channels, stages)
        self.n_styles, self.pyramid, self.progressive = n_styles, pyramid, progressive
        width = stages[-1][1]
        self.styles = nn.ModuleList(MapToStyle(self.spatial_of(i), width) for i in range(n_styles))
        if pyramid:
            self.latlayer1 = nn.Conv2d(stages[2][1], width, 1)
            self.latlayer2 = nn.Conv2d(stages[1][1], width, 1)

    def spatial_of(self, code: int) -> int:
        if not self.pyramid or code < COARSE_CODES:
            return 16
        return 32 if code < MIDDLE_CODES else 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.input_layer[0].in_channels, tuple(x.shape)
        fine, middle, coarse = super().forward(x)
        levels = {16: coarse}
        if self.pyramid and self.n_styles > COARSE_CODES:
            levels[32] = upsample_add(coarse, self.latlayer1(middle))
            if self.n_styles > MIDDLE_CODES:
                levels[64] = upsample_add(levels[32], self.latlayer2(fine))
        codes = [head(levels[self.spatial_of(i)]) for i, head in enumerate(self.styles)]
        if self.progressive:
            codes = [codes[0]] + [codes[0] + delta for delta in codes[1:]]
        return torch.stack(codes, dim=1)
