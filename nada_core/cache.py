"""Where nada keeps what it can rebuild but would rather not: the python-backend stub folder, ONNX
traces. NADA_CACHE names the folder (default ~/.cache/nada); anything in it may be deleted."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NADA_CACHE"


def cache_dir(name: str) -> Path:
    """The cache's sub-folder `name` (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nada") / name
