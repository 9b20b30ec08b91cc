"""Shared fixtures: a temporary RAMP_EDGE_HOME, the CLI runner, real models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared beside the checkout (developers and CI have it; users do not)."""
    env = os.environ.get("RAMP_EDGE_SHARED")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared", Path("/work/shared")]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(autouse=True)
def home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own RAMP_EDGE_HOME; the model cache stays shared across tests."""
    path = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("RAMP_EDGE_HOME", str(path))
    return path


@pytest.fixture
def invoke():
    """Run the CLI in-process: invoke([...]) -> click.testing.Result (exit_code, stdout, stderr)."""
    from ramp_edge.cli import cli

    runner = CliRunner()
    return lambda args: runner.invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="session")
def stories_gguf() -> Path:
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared/models/stories260K is not available")
    return shared / "models" / "stories260K" / "stories260K-f32.gguf"


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The embedded default model (fetched once into the shared cache)."""
    from ramp_edge.models import resolve

    return resolve("smollm2-135m").path


@pytest.fixture(scope="session")
def tiny_kquant_gguf(tmp_path_factory, stories_gguf) -> Path:
    """A random F32 llama with 256-wide rows, so every K-quant and IQ type applies.

    Tokenizer metadata comes from stories260K; weights are seeded Gaussian noise.
    """
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    out = tmp_path_factory.mktemp("tiny") / "tiny-k-f32.gguf"
    reader = GGUFReader(stories_gguf)
    n_embd, n_ff, n_layer, n_head, n_head_kv, n_vocab = 256, 512, 2, 4, 2, 512
    writer = GGUFWriter(out, "llama")
    dims = {
        "llama.embedding_length": n_embd,
        "llama.feed_forward_length": n_ff,
        "llama.block_count": n_layer,
        "llama.attention.head_count": n_head,
        "llama.attention.head_count_kv": n_head_kv,
        "llama.rope.dimension_count": n_embd // n_head,
        "llama.context_length": 256,
    }
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture" or f.name in dims:
            continue
        vtype = f.types[0]
        writer.add_key_value(
            f.name,
            f.contents(),
            vtype,
            sub_type=f.types[-1] if vtype == GGUFValueType.ARRAY else None,
        )
    for key, value in dims.items():
        writer.add_key_value(key, value, GGUFValueType.UINT32)
    rng = np.random.default_rng(0)

    def add(name: str, shape: tuple[int, ...], scale: float = 0.02) -> None:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name.endswith("norm.weight"):
            data = np.ones(shape, dtype=np.float32)
        writer.add_tensor(name, data)

    head_dim = n_embd // n_head
    add("token_embd.weight", (n_vocab, n_embd), 0.5)
    add("output_norm.weight", (n_embd,))
    for i in range(n_layer):
        add(f"blk.{i}.attn_norm.weight", (n_embd,))
        add(f"blk.{i}.attn_q.weight", (n_embd, n_embd))
        add(f"blk.{i}.attn_k.weight", (n_head_kv * head_dim, n_embd))
        add(f"blk.{i}.attn_v.weight", (n_head_kv * head_dim, n_embd))
        add(f"blk.{i}.attn_output.weight", (n_embd, n_embd))
        add(f"blk.{i}.ffn_norm.weight", (n_embd,))
        add(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd))
        add(f"blk.{i}.ffn_up.weight", (n_ff, n_embd))
        add(f"blk.{i}.ffn_down.weight", (n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
