"""Issue 16 class 8: the sensitivity cache is keyed by the source's content, not its path,
size and mtime."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from ramp_edge.allocate.sensitivity import _cache_key


def _key(path: Path) -> str:
    source = SimpleNamespace(path=path, model=SimpleNamespace(model_id="m"))
    return _cache_key(source, ["Q4_0", "Q8_0"], None)


def test_a_same_size_same_mtime_rewrite_is_a_different_cache_entry(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\1" * 60)
    st = model.stat()
    before = _key(model)
    model.write_bytes(b"GGUF" + b"\2" * 60)  # another model, same name and size
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _key(model) != before


def test_a_copy_elsewhere_shares_the_entry(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\3" * 60)
    (tmp_path / "moved").mkdir()
    copy = Path(shutil.copy(model, tmp_path / "moved" / "other-name.gguf"))
    assert _key(copy) == _key(model)
