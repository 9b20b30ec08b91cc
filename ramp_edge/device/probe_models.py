"""The probe models: a small reference GGUF requantized purely to each type to be timed.

`profiling.profile_host` pushes them to a device once and times each with the agent's `bench`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ramp_edge.errors import ConfigError, DependencyError, RampEdgeError
from ramp_edge.quant.catalogue import CATALOGUE
from ramp_edge.quant.llamacpp import llama_quantize

logger = logging.getLogger(__name__)

# Types measured by default: the 32-block types, which fit every tensor of SmolLM2-135M (rows
# of 576) and are the ones llama.cpp repacks on CPU (Q4_0, Q8_0) or not (Q4_1, Q5_0).
DEFAULT_TYPES: tuple[str, ...] = ("Q8_0", "Q5_0", "Q4_1", "Q4_0")

ProgressFn = Callable[[float, float, str], None]


def no_progress(done: float, total: float, desc: str = "") -> None:
    return None


def require_llama():  # type: ignore[no-untyped-def]
    try:
        import llama_cpp
    except ImportError:
        raise DependencyError(
            "llama-cpp-python is not installed; run: pip install ramp-edge"
        ) from None
    # llama-cpp-python forwards llama.cpp's C log (one line per tensor when quantizing) to
    # stderr unless this logger's level is above INFO; keep errors only.
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level < logging.ERROR:
        llama_logger.setLevel(logging.ERROR)
    return llama_cpp


def quantize_pure(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], qtype: str, threads: int = 0
) -> Path:
    """Requantize a GGUF so every weight matrix has `qtype` (llama-quantize --pure).

    Rows the type's block does not fit fall back as llama.cpp decides (tensor_type_fallback).
    Written to a `.partial` name and renamed, so a killed run leaves no half file.
    """
    require_llama()
    key = qtype.strip().upper()
    if key not in CATALOGUE or CATALOGUE[key].ftype is None:
        raise ConfigError(f"unknown quant type {qtype!r}; known: {', '.join(CATALOGUE)}")
    if CATALOGUE[key].needs_imatrix:
        raise ConfigError(f"{key} needs an importance matrix; the probe measures types without one")
    dst = Path(dst)
    partial = dst.with_name(dst.name + ".partial")
    try:
        llama_quantize(src, partial, key, threads=threads, pure=True)
    except RampEdgeError:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    os.replace(partial, dst)
    return dst


def probe_models(
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    progress: ProgressFn = no_progress,
) -> tuple[str, list[tuple[str, Path]]]:
    """Small probe GGUFs made here: `model` requantized purely to each type (cached).

    Returns (model id, [(type, path)]). The files are pushed once per host (sha256-checked).
    """
    from ramp_edge import paths
    from ramp_edge.models import resolve

    resolved = resolve(model)
    if resolved.kind != "gguf":
        raise ConfigError(
            f"the speed probe needs a GGUF reference model, got {resolved.kind} {model!r}"
        )
    work = paths.cache_dir("profiles", resolved.model_id)
    out = []
    for i, qtype in enumerate(types):
        key = qtype.strip().upper()
        progress(i, len(types), f"probe model {key}")
        # the source size in the name keeps a changed reference from reusing stale files
        target = work / f"{resolved.model_id}-{Path(resolved.path).stat().st_size}-{key}.gguf"
        if not target.exists():
            logger.info("quantizing %s to %s", resolved.model_id, key)
            quantize_pure(resolved.path, target, key)
        out.append((key, target))
    return resolved.model_id, out
