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
