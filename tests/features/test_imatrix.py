"""imatrix GGUF files: round trip, and the layout llama.cpp's own GGUF parser sees (no torch)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from ramp_edge.errors import ArtifactError
from ramp_edge.features.imatrix import importance, read_imatrix, write_imatrix
from ramp_edge.features.records import CalibrationStats, ChannelStats


def fake_stats(seed: int = 0) -> CalibrationStats:
    rng = np.random.default_rng(seed)

    def chan(n: int) -> ChannelStats:
        x = rng.standard_normal((100, n)) * rng.uniform(0.1, 5.0, n)
        return ChannelStats(
            np.abs(x).max(0),
            np.abs(x).sum(0),
            (x**2).sum(0),
            (x**4).sum(0),
            100,
            x[::10].astype(np.float32),
        )

    inputs = {
        "blk.0.attn_q.weight": chan(64),
        "blk.0.ffn_down.weight": chan(96),
        "output.weight": chan(64),
    }
    weight_input = {
        "blk.0.attn_q.weight": "blk.0.attn_q.weight",
        "blk.0.attn_k.weight": "blk.0.attn_q.weight",
        "blk.0.ffn_down.weight": "blk.0.ffn_down.weight",
        "output.weight": "output.weight",
        "token_embd.weight": "output.weight",
    }
    return CalibrationStats("fake", "k" * 64, 100, 2, 50, "test", inputs, weight_input)


def test_round_trip_is_in_sum2_over_counts(tmp_path):
    stats = fake_stats()
    path = write_imatrix(tmp_path / "m.imatrix.gguf", stats)
    got = read_imatrix(path)
    want = importance(stats)
    assert (
        set(got)
        == set(want)
        == {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "output.weight"}
    )
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-6)
        assert got[name].dtype == np.float32


def test_mapping_input_and_name_filter(tmp_path):
    entries = {"blk.0.attn_q.weight": (np.full(8, 6.0), 3), "blk.1.attn_q.weight": (np.ones(8), 2)}
    path = write_imatrix(tmp_path / "m.gguf", entries, names=["blk.0.attn_q.weight"])
    got = read_imatrix(path)
    assert list(got) == ["blk.0.attn_q.weight"]
    np.testing.assert_allclose(got["blk.0.attn_q.weight"], 2.0)


def test_rejects_other_gguf(stories_gguf):
    with pytest.raises(ArtifactError, match="not an imatrix"):
        read_imatrix(stories_gguf)


def test_rejects_non_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ArtifactError):
        read_imatrix(bad)


class _Params(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def test_llama_cpp_gguf_parser_sees_the_layout(tmp_path):
    """What common_imatrix_load (common/imatrix-loader.cpp) checks, via libggml's parser."""
    from ramp_edge.quant.quantizer import _lib

    lib = _lib()
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _Params]
    for fn, res, args in [
        ("gguf_find_key", ctypes.c_int64, [ctypes.c_void_p, ctypes.c_char_p]),
        ("gguf_get_kv_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_arr_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_arr_n", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_val_u32", ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_val_str", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_n_tensors", ctypes.c_int64, [ctypes.c_void_p]),
        ("gguf_get_tensor_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_tensor_type", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_get_tensor_size", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_int64]),
        ("gguf_free", None, [ctypes.c_void_p]),
    ]:
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = args
    path: Path = write_imatrix(tmp_path / "m.imatrix.gguf", fake_stats())
    ctx = lib.gguf_init_from_file(str(path).encode(), _Params(True, None))
    assert ctx, "libggml could not parse the imatrix file"
    try:
        gguf_type_array, gguf_type_string, gguf_type_u32 = 9, 8, 4
        key = lib.gguf_find_key(ctx, b"general.type")
        assert lib.gguf_get_val_str(ctx, key) == b"imatrix"
        datasets = lib.gguf_find_key(ctx, b"imatrix.datasets")
        assert lib.gguf_get_kv_type(ctx, datasets) == gguf_type_array
        assert lib.gguf_get_arr_type(ctx, datasets) == gguf_type_string
        assert lib.gguf_get_arr_n(ctx, datasets) == 1
        for k, want in ((b"imatrix.chunk_count", 2), (b"imatrix.chunk_size", 50)):
            idx = lib.gguf_find_key(ctx, k)
            assert lib.gguf_get_kv_type(ctx, idx) == gguf_type_u32
            assert lib.gguf_get_val_u32(ctx, idx) == want
        names = {}
        for i in range(lib.gguf_get_n_tensors(ctx)):
            names[lib.gguf_get_tensor_name(ctx, i).decode()] = (
                lib.gguf_get_tensor_type(ctx, i),
                lib.gguf_get_tensor_size(ctx, i),
            )
        assert names["blk.0.ffn_down.weight.in_sum2"] == (0, 96 * 4)  # F32, n_per_row values
        assert names["blk.0.ffn_down.weight.counts"] == (0, 4)
        assert "token_embd.weight.in_sum2" not in names
        assert len(names) == 8
    finally:
        lib.gguf_free(ctx)


def test_stats_npz_round_trip(tmp_path):
    stats = fake_stats(1)
    path = stats.save(tmp_path / "s.npz")
    back = CalibrationStats.load(path)
    assert back.weight_input == stats.weight_input and back.key == stats.key
    for k, c in stats.inputs.items():
        b = back.inputs[k]
        assert b.count == c.count
        for field in ("max_abs", "sum_abs", "sum2", "sum4", "sample"):
            np.testing.assert_array_equal(getattr(b, field), getattr(c, field))


def test_stats_load_rejects_garbage(tmp_path):
    bad = tmp_path / "s.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ArtifactError):
        CalibrationStats.load(bad)


# --------------------------------------------------------------------------- llama.cpp's own tools


def llama_tool(name: str) -> Path:
    """A llama.cpp tool installed with llama-cpp-python (site-packages/bin), else skip."""
    import sysconfig

    path = Path(sysconfig.get_paths()["purelib"]) / "bin" / name
    if not path.is_file():
        pytest.skip(f"{name} is not installed beside llama-cpp-python")
    return path


def run_tool(name: str, *args: object) -> str:
    import os
    import subprocess
    import sysconfig

    purelib = Path(sysconfig.get_paths()["purelib"])
    libs = [str(purelib / "lib"), str(purelib / "llama_cpp" / "lib")]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(libs)}
    proc = subprocess.run(
        [str(llama_tool(name)), *map(str, args)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def llama_imatrices(stories_gguf, tmp_path_factory) -> tuple[Path, Path]:
    """The same llama-imatrix run on stories260K written as GGUF and as legacy .dat."""
    from ramp_edge import paths

    out = tmp_path_factory.mktemp("imatrix")
    text = out / "calib.txt"
    text.write_text((paths.data_dir() / "wikitext2" / "valid.txt").read_text()[:20000])
    for target, fmt in ((out / "st.gguf", "gguf"), (out / "st.dat", "dat")):
        run_tool(
            "llama-imatrix", "-m", stories_gguf, "-f", text, "-c", 128, "--chunks", 4,
            "-t", 1, "-o", target, "--output-format", fmt,
        )  # fmt: skip
    return out / "st.gguf", out / "st.dat"


@pytest.mark.llama
def test_reads_both_formats_llama_imatrix_writes(llama_imatrices) -> None:
    gguf_file, dat_file = llama_imatrices
    from_gguf, from_dat = read_imatrix(gguf_file), read_imatrix(dat_file)
    assert len(from_gguf) == 35 and sorted(from_gguf) == sorted(from_dat)
    assert "blk.0.attn_q.weight" in from_gguf and "token_embd.weight" not in from_gguf
    for name, values in from_gguf.items():
        assert values.ndim == 1 and values.size in (64, 172)  # n_embd, n_ff of stories260K
        assert np.all(values > 0), name
        np.testing.assert_allclose(from_dat[name], values, rtol=1e-6)


def quantized_tensors(path: Path) -> dict[str, bytes]:
    from gguf import GGUFReader

    return {t.name: bytes(t.data.tobytes()) for t in GGUFReader(path).tensors}


@pytest.mark.llama
def test_llama_quantize_takes_our_imatrix_like_its_own(llama_imatrices, stories_gguf, tmp_path):
    """llama.cpp imatrix -> read -> write ours -> llama-quantize: the same quantized bytes."""
    gguf_file, dat_file = llama_imatrices
    ours = write_imatrix(
        tmp_path / "ours.imatrix.gguf", {n: (v, 1) for n, v in read_imatrix(dat_file).items()}
    )
    outputs = {}
    for label, imatrix in (("llama", gguf_file), ("ours", ours)):
        log = run_tool(
            "llama-quantize", "--imatrix", imatrix, stories_gguf, tmp_path / f"{label}.gguf",
            "IQ2_XXS", 1,
        )  # fmt: skip
        assert "loaded 35 importance matrix entries" in log
        outputs[label] = quantized_tensors(tmp_path / f"{label}.gguf")
    assert outputs["ours"] == outputs["llama"]
    flat = write_imatrix(
        tmp_path / "flat.gguf", {n: (np.ones_like(v), 1) for n, v in read_imatrix(ours).items()}
    )
    run_tool("llama-quantize", "--imatrix", flat, stories_gguf, tmp_path / "flat-q.gguf", "IQ2_XXS")
    assert quantized_tensors(tmp_path / "flat-q.gguf") != outputs["llama"]  # values matter


def test_truncated_legacy_file_names_the_entry(tmp_path) -> None:
    import struct

    name = b"blk.0.attn_q.weight"
    good = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 2, 4)
    good += np.array([2.0, 4.0, 6.0, 8.0], "<f4").tobytes() + struct.pack("<i", 2)
    path = tmp_path / "m.dat"
    path.write_bytes(good)
    np.testing.assert_allclose(read_imatrix(path)["blk.0.attn_q.weight"], [1, 2, 3, 4])
    path.write_bytes(good[:-10])
    with pytest.raises(ArtifactError, match=r"truncated at blk\.0\.attn_q\.weight"):
        read_imatrix(path)
    with pytest.raises(ArtifactError, match="cannot read imatrix"):
        read_imatrix(tmp_path / "missing.dat")
