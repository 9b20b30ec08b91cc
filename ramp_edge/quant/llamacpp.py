"""Drive llama.cpp's own quantizer (`llama_model_quantize`) from Python, for cross-checks.

Used by tests (byte and type equality) and by the export benchmark (time against llama.cpp).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ramp_edge.errors import RampEdgeError
from ramp_edge.quant.presets import PRESETS, get_preset


def llama_quantize(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    preset: str,
    imatrix: Mapping[str, np.ndarray] | None = None,
    overrides: Mapping[str, str] | None = None,
    threads: int = 0,
    pure: bool = False,
) -> None:
    """Quantize `src` to `dst` with llama.cpp's `llama_model_quantize` (requantizing allowed).

    Args:
        preset: llama.cpp ftype name, e.g. "Q4_K_M", or a ggml type name with an ftype in the
            catalogue (e.g. "Q4_K"; with `pure` every weight matrix gets that type).
        imatrix: tensor name -> importance vector.
        overrides: regex -> type name (`--tensor-type`), first match wins.
    """
    import llama_cpp

    from ramp_edge.quant.catalogue import CATALOGUE, get

    key = preset.strip().upper()
    params = llama_cpp.llama_model_quantize_default_params()
    if key not in PRESETS and key in CATALOGUE and CATALOGUE[key].ftype is not None:
        params.ftype = CATALOGUE[key].ftype
    else:
        params.ftype = get_preset(preset).ftype
    params.allow_requantize = True
    params.nthread = threads
    params.pure = pure
    keep: list[object] = []
    if imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, vec) in enumerate(imatrix.items()):
            arr = np.ascontiguousarray(vec, dtype=np.float32)
            keep.append(arr)
            entries[i].name = name.encode()
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(imatrix)].name = None
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        keep.append(entries)
    if overrides:
        tt = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for i, (pattern, qtype) in enumerate(overrides.items()):
            tt[i].pattern = pattern.encode()
            tt[i].type = get(qtype).ggml_id
        tt[len(overrides)].pattern = None
        params.tt_overrides = ctypes.cast(tt, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
        keep.append(tt)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not Path(dst).exists():
        raise RampEdgeError(f"llama_model_quantize failed for {src} -> {preset} (rc={rc})")
