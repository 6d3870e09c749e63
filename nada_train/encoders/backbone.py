"""The IR-SE50 backbone the pSp family of encoders shares (ArcFace's improved residual units with
squeeze-and-excitation), built so that the authors' checkpoints load by name:
input_layer.{0,1,2}, body.N.shortcut_layer, body.N.res_layer.{0..5}."""

from __future__ import annotations

import torch
from torch import nn

# (input channels, output channels, units) per stage; the first unit of each stage halves the size
Stages = tuple[tuple[int, int, int], ...]
IR50_STAGES: Stages = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class SqueezeExcite(nn.Module):
    """Channel gates from the unit's pooled activations: x * sigmoid(fc2(relu(fc1(mean x))))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)  # the authors' widths (64 up) divide; a narrow one keeps 1
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

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
    the features at the end of stages 2, 3 and 4 (64, 32 and 16 px at 256 input): the fine, middle
    and coarse levels of the pyramid. stages: the authors' IR-50 unless a smaller encoder (the built-in
    world's) asks for fewer or narrower units."""

    def __init__(self, in_channels: int = 3, stages: Stages = IR50_STAGES):
        super().__init__()
        assert len(stages) == 4, stages
        first = stages[0][0]
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, 1, 1, bias=False), nn.BatchNorm2d(first), nn.PReLU(first)
        )
        units = []
        for c_in, c_out, n in stages:
            units += [IRUnit(c_in, c_out, 2)] + [IRUnit(c_out, c_out, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.stages = tuple(tuple(stage) for stage in stages)
        ends = [sum(n for *_, n in stages[: i + 1]) - 1 for i in range(4)]
        self.taps = (ends[1], ends[2], ends[3])  # IR-50: units 6, 20 and 23

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        taps = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                taps[i] = x
        return tuple(taps[i] for i in self.taps)
