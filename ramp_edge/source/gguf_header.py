"""The tensor table of a GGUF file read from its header alone (stdlib only, bounded).

Beside gguf-py's `GGUFReader` (`source/gguf.py`, which maps the data) on purpose: it skips the
metadata values instead of decoding every array item in Python, so a deploy reads the table of
a large artifact in milliseconds, and every length and count is checked against the file size
before it is used, so a corrupt or hostile header is an ArtifactError (exit 5), not a loop over
2**62 items or a MemoryError. `tests/source/test_gguf_header.py` checks it against gguf-py.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge.errors import ArtifactError
from ramp_edge.quant.catalogue import BY_ID


@dataclass(frozen=True, slots=True)
class GGUFTensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order
    ggml_type: str
    n_bytes: int


_SCALAR = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def read_gguf_tensors(path: str | os.PathLike[str]) -> list[GGUFTensorInfo]:
    """The tensor table of a GGUF file (names, shapes, types, byte sizes).

    Parses the header per the GGUF spec (ggml/docs/gguf.md), skipping metadata values.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise ArtifactError(f"cannot read {path}: {err.strerror}") from None
    with handle:
        try:
            return _parse_gguf_tensors(path, handle)
        except (OSError, ValueError, OverflowError, MemoryError, RecursionError) as err:
            # a garbage length or offset: seek/read refuse it before our own bounds checks could
            raise ArtifactError(f"{path} is not a readable GGUF file ({err})") from None


def _parse_gguf_tensors(path: Path, handle: Any) -> list[GGUFTensorInfo]:
    file_bytes = os.fstat(handle.fileno()).st_size

    def skip(n: int) -> None:
        if n < 0 or handle.tell() + n > file_bytes:
            raise ArtifactError(f"{path} is truncated inside its GGUF header")
        handle.seek(n, os.SEEK_CUR)

    def read(fmt: str) -> int | float:
        size = struct.calcsize(fmt)
        data = handle.read(size)
        if len(data) != size:
            raise ArtifactError(f"{path} is truncated inside its GGUF header")
        return struct.unpack(fmt, data)[0]

    def skip_string() -> None:
        skip(int(read("<Q")))

    def read_string() -> str:
        n = int(read("<Q"))
        if handle.tell() + n > file_bytes:
            raise ArtifactError(f"{path} is truncated inside its GGUF header")
        return handle.read(n).decode("utf-8", errors="replace")

    def skip_value(vtype: int) -> None:
        if vtype in _SCALAR:
            skip(struct.calcsize(_SCALAR[vtype]))
        elif vtype == 8:
            skip_string()
        elif vtype == 9:
            item_type, count = int(read("<I")), int(read("<Q"))
            if item_type in _SCALAR:
                skip(count * struct.calcsize(_SCALAR[item_type]))
            elif count > file_bytes:  # every item takes at least one byte
                raise ArtifactError(f"{path} is truncated inside its GGUF header")
            else:
                for _ in range(count):
                    skip_value(item_type)
        else:
            raise ArtifactError(f"{path}: unknown GGUF metadata type {vtype}")

    if handle.read(4) != b"GGUF":
        raise ArtifactError(f"{path} is not a GGUF file (bad magic)")
    version = int(read("<I"))
    if version < 2:
        raise ArtifactError(f"{path}: GGUF version {version} is too old")
    n_tensors, n_kv = int(read("<Q")), int(read("<Q"))
    if n_tensors > file_bytes or n_kv > file_bytes:  # each entry takes many bytes
        raise ArtifactError(
            f"{path}: implausible GGUF header ({n_tensors} tensors, {n_kv} metadata keys "
            f"in {file_bytes} bytes)"
        )
    for _ in range(n_kv):
        skip_string()
        skip_value(int(read("<I")))
    tensors = []
    for _ in range(n_tensors):
        name = read_string()
        n_dims = int(read("<I"))
        shape = tuple(int(read("<Q")) for _ in range(n_dims))
        type_id = int(read("<I"))
        read("<Q")  # data offset
        qtype = BY_ID.get(type_id)
        if qtype is None:
            raise ArtifactError(f"{path}: tensor {name} has unsupported ggml type {type_id}")
        tensors.append(GGUFTensorInfo(name, shape, qtype.name, qtype.tensor_bytes(shape)))
    return tensors
