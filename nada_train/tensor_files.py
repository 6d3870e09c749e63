"""safetensors files as nada reads and writes them (generators, lightweight domains, encoders):
metadata beside the tensors, a file that cannot be read refused in one line, a write that lands
whole or not at all."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nada_core.errors import NadaError
from nada_core.fileio import atomic_path


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file; refused in one line naming `what` and the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open has no iterator)
    except Exception as exc:  # safetensors raises its own error types
        raise NadaError(f"{what} '{path}': not a readable safetensors file ({exc})") from None
    return meta, tensors


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> None:
    """Under a temporary name, renamed when complete. safetensors reports I/O failures as its own
    error ("... (os error N)"): raised as the OSError it was, so a full disk gets the commands' one line."""
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except Exception as exc:
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
