import os

import pytest

from ramp_edge.errors import RampEdgeError
from ramp_edge.fsutil import atomic_path, atomic_write_text, sha256_file


def test_atomic_write_replaces_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(ValueError), atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RampEdgeError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "c.txt", "x")


def test_sha256(tmp_path):
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_file(tmp_path / "x").startswith("ba7816bf")


def test_sha256_cached_hashes_once_and_sees_same_size_rewrites(tmp_path, monkeypatch):
    import ramp_edge.fsutil as fsutil

    calls = []
    real = fsutil.sha256_file
    monkeypatch.setattr(fsutil, "sha256_file", lambda p: calls.append(p) or real(p))
    f = tmp_path / "model.gguf"
    f.write_bytes(b"A" * 100)
    first = fsutil.sha256_cached(f)
    assert fsutil.sha256_cached(f) == first == real(f)
    assert len(calls) == 1  # the second call read the cache
    # same size, same mtime (restored), different bytes: a different identity
    st = f.stat()
    f.write_bytes(b"B" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fsutil.sha256_cached(f) == real(f) != first


def test_content_sha256_of_a_directory_follows_its_files(tmp_path):
    from ramp_edge.fsutil import content_sha256

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"x" * 10)
    assert content_sha256(a) == content_sha256(b)
    (b / "model.safetensors").write_bytes(b"y" * 10)
    assert content_sha256(a) != content_sha256(b)
