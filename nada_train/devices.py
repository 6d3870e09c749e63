"""Which device a run or a render uses: "auto" is CUDA where a GPU is visible, else the CPU."""

from __future__ import annotations

import torch

from nada_core.errors import FieldError


def resolve_device(name: str | torch.device) -> torch.device:
    """auto, cpu, cuda or cuda:N -> a torch.device that exists here; FieldError naming `device` otherwise."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FieldError(f"{{device}} '{name}': not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FieldError(f"{{device}} {name}: CUDA is not available on this machine; use {{device}} cpu")
    return device
