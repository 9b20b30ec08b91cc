"""Atomic file writes and checksums: temp file in the same directory, fsync, os.replace."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ramp_edge.errors import RampEdgeError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    On any exception the temporary file is removed, so no half-written file is ever left.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise RampEdgeError(f"cannot write {target}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise RampEdgeError(f"cannot write {target}: directory {parent} is not writable")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


# Identity by content (issue 16 class 8): a file's sha256 is computed once and remembered under
# $RAMP_EDGE_CACHE/sha256, keyed by what changes when the file does (path, size, mtime_ns,
# inode, ctime_ns), so a multi-GB model is hashed once, not on every command.
SHA_CACHE_VERSION = 1


def _sha_cache_file(path: Path, st: os.stat_result) -> Path:
    from ramp_edge import paths

    key = f"v{SHA_CACHE_VERSION}:{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
    return paths.cache_dir("sha256") / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def sha256_cached(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, hashed once per (path, size, mtime, inode, ctime) and then remembered."""
    path = Path(path).resolve()
    st = path.stat()
    entry = _sha_cache_file(path, st)
    try:
        cached = json.loads(entry.read_text())
        if cached.get("path") == str(path) and len(str(cached.get("sha256", ""))) == 64:
            return str(cached["sha256"])
    except (OSError, ValueError, AttributeError):
        pass  # absent or damaged: hash again
    digest = sha256_file(path)
    if path.stat().st_mtime_ns == st.st_mtime_ns:  # not rewritten while we read it
        with contextlib.suppress(OSError, RampEdgeError):
            atomic_write_json(entry, {"path": str(path), "size": st.st_size, "sha256": digest})
    return digest


def content_sha256(path: str | os.PathLike[str]) -> str:
    """Identity of a model file or directory by content.

    A file: its sha256. A directory (Hugging Face model): sha256 over the names and sha256s of
    its regular, non-hidden files, sorted by name.
    """
    path = Path(path)
    if not path.is_dir():
        return sha256_cached(path)
    digest = hashlib.sha256(b"ramp-edge-dir-v1\0")
    for child in sorted(path.iterdir()):
        if child.name.startswith(".") or not child.is_file():
            continue
        digest.update(f"{child.name}\0{sha256_cached(child)}\n".encode())
    return digest.hexdigest()
