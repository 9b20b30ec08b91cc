"""The stdlib GGUF header reader: the same tensor table as gguf-py, garbage as ArtifactError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ramp_edge.device.budget import bytes_read_per_token
from ramp_edge.errors import ArtifactError
from ramp_edge.source.gguf_header import read_gguf_tensors


def _write_gguf(path: Path, tied: bool) -> None:
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    writer = GGUFWriter(path, "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_uint32("llama.block_count", 1)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((100, 64)).astype(np.float32)
    writer.add_tensor(
        "token_embd.weight",
        quantize(emb, GGMLQuantizationType.Q8_0),
        raw_dtype=GGMLQuantizationType.Q8_0,
    )
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.add_tensor("blk.0.ffn_down.weight", rng.standard_normal((32, 64)).astype(np.float16))
    if not tied:
        out = rng.standard_normal((100, 64)).astype(np.float32)
        writer.add_tensor(
            "output.weight",
            quantize(out, GGMLQuantizationType.Q4_0),
            raw_dtype=GGMLQuantizationType.Q4_0,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("tied", [True, False])
def test_header_reader_matches_gguf_py(tmp_path, tied):
    from gguf import GGUFReader

    path = tmp_path / "t.gguf"
    _write_gguf(path, tied)
    ours = read_gguf_tensors(path)
    theirs = GGUFReader(path).tensors
    assert [(t.name, t.shape, t.ggml_type, t.n_bytes) for t in ours] == [
        (t.name, tuple(int(x) for x in t.shape), t.tensor_type.name, int(t.n_bytes)) for t in theirs
    ]
    read = bytes_read_per_token(ours)
    if tied:  # the embedding is the output matrix: read in full
        assert read == {"F16": 32 * 64 * 2, "Q8_0": 100 * 2 * 34}
    else:  # the embedding is a row lookup; output.weight is read instead
        assert read == {"F16": 32 * 64 * 2, "Q4_0": 100 * 2 * 18}


def test_gguf_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(ArtifactError, match="bad magic"):
        read_gguf_tensors(bad)
    good = tmp_path / "good.gguf"
    _write_gguf(good, tied=True)
    (tmp_path / "cut.gguf").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ArtifactError, match="truncated"):
        read_gguf_tensors(tmp_path / "cut.gguf")


def _header(*fields: tuple[str, int]) -> bytes:
    import struct

    return b"GGUF" + b"".join(struct.pack(fmt, value) for fmt, value in fields)


@pytest.mark.parametrize(
    "garbage",
    [
        # one metadata key whose length is past any offset (was ValueError from seek)
        _header(("<I", 3), ("<Q", 0), ("<Q", 1), ("<Q", 2**63 + 5)),
        # one key of length 4 TiB (was OSError: Invalid argument / a silent seek past the end)
        _header(("<I", 3), ("<Q", 0), ("<Q", 1), ("<Q", 2**42)),
        # one tensor whose name is 1 TiB long (was MemoryError)
        _header(("<I", 3), ("<Q", 1), ("<Q", 0), ("<Q", 2**40)),
        # 2**60 metadata keys in a 40-byte file
        _header(("<I", 3), ("<Q", 0), ("<Q", 2**60), ("<Q", 0)),
        # an array of 2**62 uint64: its byte size overflows the seek offset
        _header(
            ("<I", 3),
            ("<Q", 0),
            ("<Q", 1),
            ("<Q", 1),
            ("<B", 65),
            ("<I", 9),
            ("<I", 10),
            ("<Q", 2**62),
        ),
    ],
)
def test_gguf_reader_turns_garbage_lengths_into_artifact_errors(tmp_path, garbage):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(garbage)
    with pytest.raises(ArtifactError):
        read_gguf_tensors(bad)


def test_resolve_gpu_layers_on_a_garbage_gguf_is_exit_5(tmp_path):
    from ramp_edge.pipeline import resolve_gpu_layers

    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(_header(("<I", 3), ("<Q", 0), ("<Q", 1), ("<Q", 2**42)))
    with pytest.raises(ArtifactError) as info:
        resolve_gpu_layers("auto", {"llama_cpp": {"supports_gpu_offload": True}}, bad)
    assert info.value.exit_code == 5
