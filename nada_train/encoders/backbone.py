"""The IR-SE50 backbone the pSp family of encoders shares (ArcFace's improved residual units with
squeeze-and-excitation), built so that the authors' checkpoints load by name:
input_layer.{0,1,2}, body.N.shortcut_layer, body.N.res_layer.{0..5}."""

from __future__ import annotations

import torch
from torch import nn

# (input channels, output channels, units) per stage; the first unit of each stage halves the size
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
# the body's units after which the feature pyramid taps its three levels (64, 32 and 16 px at 256 input)
FINE_TAP, MIDDLE_TAP, COARSE_TAP = 6, 20, 23


class SqueezeExcite(nn.Module):
    """Channel gates from the unit's pooled activations: x * sigmoid(fc2(relu(fc1(mean x))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class IRUnit(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN -> SE, plus a shortcut: a strided identity
    when the width is kept, else a strided 1x1 conv and BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # a 1x1 max pool: every stride-th pixel
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """in_channels (3 for pSp/e4e, 6 for ReStyle: the image and the current reconstruction) ->
    the features after FINE_TAP, MIDDLE_TAP and COARSE_TAP (the last unit)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        units = []
        for c_in, c_out, n in IR50_STAGES:
            units += [IRUnit(c_in, c_out, 2)] + [IRUnit(c_out, c_out, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in (FINE_TAP, MIDDLE_TAP, COARSE_TAP):
                taps[i] = x
        return taps[FINE_TAP], taps[MIDDLE_TAP], taps[COARSE_TAP]
