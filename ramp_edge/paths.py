"""Where ramp-edge keeps its state.

RAMP_EDGE_HOME (default ~/.ramp-edge) holds user state: the results database and artifacts.
RAMP_EDGE_CACHE (default ~/.cache/ramp-edge) holds re-creatable downloads and caches
(model files, reference logits); tests share it across runs so models are fetched once.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    path = Path(os.environ.get("RAMP_EDGE_HOME", Path.home() / ".ramp-edge"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get("RAMP_EDGE_CACHE", Path.home() / ".cache" / "ramp-edge"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifacts_dir() -> Path:
    path = home() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Data files shipped inside the package (WikiText-2, task items), with their SOURCE.md."""
    return Path(__file__).parent / "data"
