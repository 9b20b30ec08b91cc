"""Importance matrices in llama.cpp's imatrix GGUF format. numpy + gguf only (no torch).

Layout as written by llama-imatrix (`tools/imatrix/imatrix.cpp`, `IMatrixCollector::save_imatrix`)
and read by `common/imatrix-loader.cpp` (`common_imatrix_load`), llama.cpp 0c1e570:

- KV: `general.type = "imatrix"`, `imatrix.datasets` (array of strings), `imatrix.chunk_count`
  (u32) and `imatrix.chunk_size` (u32). llama-quantize refuses a GGUF imatrix without all three.
- per weight, sorted by name: `<name>.in_sum2` F32 with ggml shape [n_per_row, 1] (the sum over
  tokens of x_j^2) and `<name>.counts` F32 [1, 1] (the number of tokens, read back with lround).
- the quantizer's importance vector is in_sum2 / counts = E[x_j^2] (1.0 where counts is 0).

As llama-imatrix does by default, `token_embd.weight` (a row lookup) is not written. Newer
llama-imatrix also writes `<name>.in_sum` (sums of x_j); it does not enter the quantizer and is
ignored here.

`read_imatrix` also reads the legacy `.dat` format (`llama-imatrix --output-format dat`, the only
format before llama.cpp b6120; `IMatrixCollector::save_imatrix_legacy`), told apart by the GGUF
magic. Little-endian int32 `n_entries`, then per entry int32 name length, the name, int32 `ncall`,
int32 `nval` and `nval` float32 of `(in_sum2 / count) * ncall`; then int32 chunk count, int32
length and the dataset name. The importance is `value / ncall`, as llama-quantize's
`load_legacy_imatrix` computes it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ramp_edge.errors import ArtifactError
from ramp_edge.features.records import CalibrationStats
from ramp_edge.fsutil import atomic_path

logger = logging.getLogger(__name__)

_SUM2 = ".in_sum2"
_COUNTS = ".counts"


def importance(
    stats: CalibrationStats, names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """GGUF weight name -> E[x_j^2] (float32, one per column): the quantizer's imatrix."""
    chosen = stats.weights() if names is None else [n for n in names if stats.has(n)]
    return {
        n: stats.for_weight(n).m2.astype(np.float32) for n in chosen if n != "token_embd.weight"
    }


def write_imatrix(
    path: str | Path,
    stats: CalibrationStats | Mapping[str, tuple[np.ndarray, int]],
    names: Iterable[str] | None = None,
    datasets: Iterable[str] | None = None,
) -> Path:
    """Write an imatrix GGUF that llama-quantize --imatrix accepts, atomically.

    Args:
        path: output file.
        stats: calibration statistics, or a mapping weight name -> (in_sum2 vector, token count),
            e.g. statistics after Scale Folding.
        names: restrict to these GGUF weight names (default: every weight with statistics).
        datasets: names recorded in `imatrix.datasets` (default: the statistics' data label).

    Returns:
        The path written.
    """
    from gguf import GGUFValueType, GGUFWriter

    if isinstance(stats, CalibrationStats):
        chosen = stats.weights() if names is None else [n for n in names if stats.has(n)]
        entries = {n: (stats.for_weight(n).sum2, stats.for_weight(n).count) for n in chosen}
        chunk_size = stats.seq_len
        chunk_count = stats.n_seq
        default_datasets = [stats.data]
    else:
        entries = {n: v for n, v in stats.items() if names is None or n in set(names)}
        counts = [int(c) for _, c in entries.values()]
        chunk_size = 0
        chunk_count = 0
        default_datasets = ["ramp-edge"]
        if counts:
            chunk_count = 1
            chunk_size = max(counts)
    entries.pop("token_embd.weight", None)
    if not entries:
        raise ArtifactError("no importance data to write")
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = GGUFWriter(tmp, arch="", use_temp_file=False)
        # GGUFWriter always adds general.architecture; llama.cpp ignores it in an imatrix file.
        writer.add_key_value("general.type", "imatrix", GGUFValueType.STRING)
        writer.add_key_value(
            "imatrix.datasets",
            list(datasets or default_datasets),
            GGUFValueType.ARRAY,
            sub_type=GGUFValueType.STRING,
        )
        writer.add_key_value("imatrix.chunk_count", int(chunk_count), GGUFValueType.UINT32)
        writer.add_key_value("imatrix.chunk_size", int(chunk_size), GGUFValueType.UINT32)
        for name in sorted(entries):
            sum2, count = entries[name]
            values = np.asarray(sum2, dtype=np.float32).reshape(1, -1)  # ggml [n_per_row, 1]
            if not np.all(np.isfinite(values)):
                raise ArtifactError(f"{name}: non-finite importance values")
            writer.add_tensor(name + _SUM2, values)
            writer.add_tensor(name + _COUNTS, np.full((1, 1), float(count), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """Read a llama.cpp imatrix, GGUF or legacy `.dat`: weight name -> E[x_j^2] per column.

    Returns:
        GGUF weight name -> float32 vector of length n_per_row (times the expert count for
        3-D expert weights): in_sum2 / counts.

    Raises:
        ArtifactError: missing file, not an imatrix, truncated or inconsistent entries.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise ArtifactError(f"cannot read imatrix {path}: {err.strerror}") from None
    if magic == b"GGUF":
        return _read_gguf(path)
    return read_imatrix_legacy(path)


def read_imatrix_legacy(path: str | Path) -> dict[str, np.ndarray]:
    """Read the legacy `.dat` imatrix (see the module docstring): name -> value / ncall.

    Raises:
        ArtifactError: truncated or malformed file (the message names the entry).
    """
    path = Path(path)
    data = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise ArtifactError(
                f"{path} is not a llama.cpp imatrix (GGUF or legacy .dat): truncated at {what}"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def int32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = int32("the entry count")
    if not 0 < n_entries < 1_000_000:
        raise ArtifactError(
            f"{path} is not a llama.cpp imatrix (GGUF or legacy .dat): {n_entries} entries"
        )
    out: dict[str, np.ndarray] = {}
    for index in range(n_entries):
        length = int32(f"entry {index}")
        if not 0 < length < 4096:
            raise ArtifactError(f"{path}: entry {index}: bad name length {length}")
        try:
            name = take(length, f"entry {index}").decode("utf-8")
        except UnicodeDecodeError:
            raise ArtifactError(f"{path}: entry {index}: name is not UTF-8") from None
        ncall = int32(name)
        nval = int32(name)
        values = np.frombuffer(take(4 * nval, name), dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ArtifactError(f"{path}: {name}: non-finite importance values")
        out[name] = values / np.float32(ncall) if ncall > 0 else values
    # trailer: chunk count and dataset name; older files may end before it
    if pos + 4 <= len(data):
        chunks = int32("the chunk count")
        logger.debug("%s: legacy imatrix, %d entries, %d chunks", path, len(out), chunks)
    return out


def _read_gguf(path: Path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path, "r")
    except Exception as err:  # gguf raises ValueError/struct.error on foreign bytes
        raise ArtifactError(f"{path} is not a GGUF imatrix ({err})") from None
    field = reader.fields.get("general.type")
    if field is None or field.contents() != "imatrix":
        raise ArtifactError(f"{path} is a GGUF but not an imatrix (general.type != 'imatrix')")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        if t.name.endswith(_SUM2):
            sums[t.name[: -len(_SUM2)]] = np.asarray(t.data, dtype=np.float32)
        elif t.name.endswith(_COUNTS):
            counts[t.name[: -len(_COUNTS)]] = np.asarray(t.data, dtype=np.float32)
    if set(sums) != set(counts):
        odd = sorted(set(sums) ^ set(counts))
        raise ArtifactError(f"{path}: mismatched in_sum2 and counts for {odd[:3]}")
    out = {}
    for name, s in sums.items():
        c = np.rint(counts[name].reshape(-1))  # llama.cpp reads counts with lround
        rows = s.reshape(len(c), -1)
        safe = np.where(c > 0, c, 1.0)[:, None]
        out[name] = np.where(c[:, None] > 0, rows / safe, 1.0).reshape(-1).astype(np.float32)
    return out
