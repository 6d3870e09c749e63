"""Import open_clip where torchvision's compiled ops do not match torch (CPU torch beside
PyPI's CUDA torchvision): torchvision registers fake kernels for nms/qnms, whose schemas its
library would define; defining the two schemas first lets its Python parts import. Its compiled
ops stay unavailable; nada does not use them."""

from __future__ import annotations

import importlib

_DONE = False


def _define_missing_torchvision_schemas() -> None:
    import torch

    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    _define_missing_torchvision_schemas.lib = lib  # keep the registration alive


def import_open_clip():
    global _DONE
    if not _DONE:
        try:
            importlib.import_module("torchvision")
        except RuntimeError as exc:
            if "torchvision::nms" not in str(exc):
                raise
            import sys

            for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[name]
            _define_missing_torchvision_schemas()
        _DONE = True
    return importlib.import_module("open_clip")
