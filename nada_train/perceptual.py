"""LPIPS (Zhang et al. 2018, the VGG16 variant, v0.1): the perceptual distance NVIDIA's projector
uses, laid out as the lpips package's state dict so a file saved from it loads here by name:
scaling_layer.{shift,scale}, net.slice1-5 (torchvision's VGG16 features, split after relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3), lin0-4.model.1 (a 1x1 conv without bias on each level's squared
difference)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nada_core.errors import FieldError

VGG16 = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, "pool", 512, 512, 512, "pool", 512, 512, 512)
SLICE_ENDS = (4, 9, 16, 23, 30)  # torchvision's features index after each tapped ReLU
LEVEL_CHANNELS = (64, 128, 256, 512, 512)
MAX_SIDE = 256  # larger images are measured at 256 px, as NVIDIA's projector does
SAVE_HINT = "save one where lpips is installed: torch.save(lpips.LPIPS(net='vgg').state_dict(), FILE)"


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])


class _Linear(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """distance(a, b): images [N, 3, H, W] in [-1, 1] -> [N]; 0 for equal images."""

    def __init__(self):
        super().__init__()
        self.scaling_layer = _Scaling()
        features: list[nn.Module] = []
        channels = 3
        for layer in VGG16:
            if layer == "pool":
                features.append(nn.MaxPool2d(2, 2))
            else:
                features += [nn.Conv2d(channels, layer, 3, padding=1), nn.ReLU()]
                channels = layer
        features.append(nn.MaxPool2d(2, 2))
        self.net = nn.Module()
        for k, (start, end) in enumerate(zip((0, *SLICE_ENDS[:-1]), SLICE_ENDS)):
            part = nn.Sequential()
            for i in range(start, end):
                part.add_module(str(i), features[i])
            self.net.add_module(f"slice{k + 1}", part)
        for k, c in enumerate(LEVEL_CHANNELS):
            self.add_module(f"lin{k}", _Linear(c))

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each tapped level's features, unit length along the channels."""
        x = (x - self.scaling_layer.shift) / self.scaling_layer.scale
        out = []
        for k in range(len(SLICE_ENDS)):
            x = getattr(self.net, f"slice{k + 1}")(x)
            out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for k, (fa, fb) in enumerate(zip(self.levels(a), self.levels(b))):
            total = total + getattr(self, f"lin{k}").model((fa - fb).square()).mean((2, 3))
        return total[:, 0]

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """forward at no more than MAX_SIDE pixels a side (area-averaged down)."""
        if a.shape[-1] > MAX_SIDE:
            size = (MAX_SIDE * a.shape[-2] // a.shape[-1], MAX_SIDE)
            a, b = (F.interpolate(x, size=size, mode="area") for x in (a, b))
        return self(a, b)


def load_lpips(path: str | Path, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS-VGG from a file in the lpips package's layout (its LPIPS(net='vgg').state_dict()), read
    with weights_only=True."""
    from nada_train.checkpoints import read_torch_file

    path = Path(path)
    if not path.is_file():
        raise FieldError(f"{{lpips}} '{path}': no such file; {SAVE_HINT}")
    state = read_torch_file(path, what="LPIPS weights")
    if not isinstance(state, dict) or not any(str(k).startswith("lin0.") for k in state):
        raise FieldError(f"{{lpips}} '{path}': not an LPIPS state dict (no lin0.* tensors); {SAVE_HINT}")
    if not any(str(k).startswith("net.") for k in state):
        raise FieldError(
            f"{{lpips}} '{path}': only the linear layers (the lpips package's own vgg.pth); the VGG16 trunk "
            f"is needed too: {SAVE_HINT}"
        )
    model = LPIPS()
    scaling = {k: v for k, v in model.state_dict().items() if k.startswith("scaling_layer.")}
    try:
        model.load_state_dict({**scaling, **state}, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise FieldError(f"{{lpips}} '{path}': tensors do not fit LPIPS-VGG ({detail})") from None
    return model.eval().requires_grad_(False).to(device)
