"""Bit-exact ggml quantization through the libggml that llama-cpp-python ships.

`ggml_quantize_chunk` (ggml/src/ggml.c) is the function llama-quantize itself calls, so the
bytes are llama.cpp's. Two pitfalls of release builds are guarded here: a row length that is
not a multiple of the block size is not checked by C (silent garbage), and the types that
require an importance matrix abort the whole process without one.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ramp_edge.errors import ConfigError, DependencyError
from ramp_edge.quant.catalogue import QuantType, get

logger = logging.getLogger(__name__)


@functools.cache
def _lib() -> ctypes.CDLL:
    try:
        import llama_cpp
    except ImportError as err:  # pragma: no cover - llama-cpp-python is a core dependency
        raise DependencyError(
            "llama-cpp-python is not installed; run: pip install ramp-edge"
        ) from err
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*"))
    if not candidates:
        raise DependencyError(f"libggml-base not found in {lib_dir}; reinstall llama-cpp-python")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_float),
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.POINTER(ctypes.c_float),
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


@functools.cache
def _init_once(ggml_id: int) -> None:
    """ggml_quantize_init once per type and process: it enters a global critical section on
    every call, and GPTQ quantizes thousands of small ranges."""
    _lib().ggml_quantize_init(ggml_id)


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, int(os.environ.get("RAMP_EDGE_THREADS", "0")) or 64))


def quantize(
    weights: np.ndarray,
    qtype: QuantType | str,
    imatrix: np.ndarray | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Quantize a 2-D float matrix row by row exactly as llama.cpp does.

    Args:
        weights: shape (rows, row_length), any float dtype; converted to float32.
        qtype: target type (record or name).
        imatrix: optional importance per column, shape (row_length,), float32, all finite.
        threads: worker threads (ctypes releases the GIL); default all cores.

    Returns:
        uint8 array of shape (rows, row_bytes): what GGUFWriter.add_tensor(raw_dtype=...) takes.

    Raises:
        ConfigError: the row length does not fit the type's block, or an imatrix is required.
    """
    qt = get(qtype) if isinstance(qtype, str) else qtype
    data = np.ascontiguousarray(weights, dtype=np.float32)
    if data.ndim != 2:
        raise ConfigError(f"quantize expects a 2-D matrix, got shape {data.shape}")
    rows, row_length = data.shape
    if qt.name == "F32":
        return data.view(np.uint8).reshape(rows, row_length * 4)
    if qt.name == "F16":
        return data.astype(np.float16).view(np.uint8).reshape(rows, row_length * 2)
    if not qt.fits(row_length):
        raise ConfigError(
            f"type {qt.name} needs rows divisible by {qt.block_size}, got rows of {row_length}"
        )
    lib = _lib()
    # Ask ggml too: the catalogue must agree with the library it drives.
    if lib.ggml_blck_size(qt.ggml_id) != qt.block_size:
        raise ConfigError(f"catalogue and libggml disagree on the block size of {qt.name}")
    imat_ptr = None
    if imatrix is not None:
        imat = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imat.shape != (row_length,):
            raise ConfigError(f"imatrix has shape {imat.shape}, expected ({row_length},)")
        if not np.all(np.isfinite(imat)):
            raise ConfigError("imatrix contains non-finite values")
        imat_ptr = imat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    elif lib.ggml_quantize_requires_imatrix(qt.ggml_id) or qt.needs_imatrix:
        raise ConfigError(f"type {qt.name} requires an importance matrix (--imatrix)")
    # The IQ grids are initialised lazily and not thread-safe: do it once up front.
    _init_once(qt.ggml_id)
    row_bytes = lib.ggml_row_size(qt.ggml_id, row_length)
    out = np.empty((rows, row_bytes), dtype=np.uint8)
    src = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    dst = out.ctypes.data

    n_threads = threads or _threads()
    # Chunks of whole rows; ggml offsets dst by start / row_length rows itself.
    chunk = max(1, -(-rows // (n_threads * 4)))
    starts = range(0, rows, chunk)

    def run(first_row: int) -> int:
        n = min(chunk, rows - first_row)
        return lib.ggml_quantize_chunk(
            qt.ggml_id, src, dst, first_row * row_length, n, row_length, imat_ptr
        )

    if n_threads == 1 or len(starts) == 1:
        written = sum(run(s) for s in starts)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            written = sum(pool.map(run, starts))
    if written != out.nbytes:
        raise ConfigError(f"ggml wrote {written} bytes for {qt.name}, expected {out.nbytes}")
    return out


def dequantize(data: np.ndarray, qtype: QuantType | str, row_length: int) -> np.ndarray:
    """Inverse of `quantize` via gguf-py's reference dequantizers.

    Returns float32 (rows, row_length).
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as _deq

    qt = get(qtype) if isinstance(qtype, str) else qtype
    values = _deq(np.asarray(data, dtype=np.uint8), GGMLQuantizationType(qt.ggml_id))
    return np.asarray(values, dtype=np.float32).reshape(-1, row_length)


def validate(data: np.ndarray, qtype: QuantType | str) -> bool:
    """ggml_validate_row_data: no NaN/inf scales in the quantized bytes."""
    qt = get(qtype) if isinstance(qtype, str) else qtype
    buf = np.ascontiguousarray(data, dtype=np.uint8)
    return bool(_lib().ggml_validate_row_data(qt.ggml_id, buf.ctypes.data, buf.nbytes))


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml/include/ggml.h)
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


@functools.cache
def _to_float(ggml_id: int):
    lib = _lib()
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    traits = lib.ggml_get_type_traits(ggml_id).contents
    return _TO_FLOAT(traits.to_float) if traits.to_float else None


def to_float(
    data: np.ndarray, qtype: QuantType | str, row_length: int, threads: int | None = None
) -> np.ndarray:
    """Dequantize stored rows with ggml's own `to_float` (C, multi-threaded).

    Returns float32 (rows, row_length).
    """
    qt = get(qtype) if isinstance(qtype, str) else qtype
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if qt.name == "F32":
        return raw.view(np.float32).reshape(-1, row_length).copy()
    fn = _to_float(qt.ggml_id)
    if fn is None:
        return dequantize(raw, qt, row_length)
    row_bytes = qt.row_bytes(row_length)
    rows = raw.nbytes // row_bytes
    out = np.empty((rows, row_length), dtype=np.float32)
    n_threads = threads or _threads()
    chunk = max(1, -(-rows // (n_threads * 4)))

    def run(first: int) -> None:
        n = min(chunk, rows - first)
        fn(
            raw.ctypes.data + first * row_bytes,
            out[first:].ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            n * row_length,
        )

    if n_threads == 1:
        for first in range(0, rows, chunk):
            run(first)
        return out
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(run, range(0, rows, chunk)))
    return out
