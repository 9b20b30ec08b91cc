"""Write a synthetic llama-architecture GGUF of a given parameter count (random weights).

The scale benchmark (scripts/bench_scale.py) needs models of 0.1B-3B parameters without
downloading any: this writes F16 weights drawn from N(0, 0.02) (norms F32 ones), widths that are
multiples of 256 (so every K-quant is legal), and the tokenizer metadata of the shared tiny model
stories260K (a 512-token sentencepiece vocabulary, so llama.cpp can run the file). The writer
streams tensor by tensor: memory stays at one tensor, whatever the size.

    python scripts/make_synthetic_gguf.py 0.5B --out /tmp/synth-0.5b.gguf
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_SOURCE = Path("/work/shared/models/stories260K/stories260K-f32.gguf")


@dataclass(frozen=True)
class Shape:
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_layer: int
    n_vocab: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def layer_params(self) -> int:
        kv = self.n_head_kv * self.head_dim
        return 2 * self.n_embd * self.n_embd + 2 * self.n_embd * kv + 3 * self.n_embd * self.n_ff

    def n_params(self) -> int:
        # token_embd + untied output + blocks (norms are negligible and counted exactly below)
        return 2 * self.n_vocab * self.n_embd + self.n_layer * self.layer_params()


# widths by size, roughly the Qwen2.5/Llama-3.2 family proportions; layers fill the count
WIDTHS = {
    0.1: (768, 2048, 12, 4),
    0.5: (1024, 2816, 16, 4),
    1.5: (2048, 5632, 16, 4),
    3.0: (3072, 8192, 24, 8),
}


def shape_for(billions: float, n_vocab: int) -> Shape:
    n_embd, n_ff, n_head, n_head_kv = WIDTHS[min(WIDTHS, key=lambda b: abs(b - billions))]
    probe = Shape(n_embd, n_ff, n_head, n_head_kv, 1, n_vocab)
    n_layer = max(1, round((billions * 1e9 - 2 * n_vocab * n_embd) / probe.layer_params()))
    return Shape(n_embd, n_ff, n_head, n_head_kv, n_layer, n_vocab)


def tensors(shape: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """(name, numpy shape) in llama.cpp's order; numpy shape = reversed ggml shape."""
    e, f, kv = shape.n_embd, shape.n_ff, shape.n_head_kv * shape.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (shape.n_vocab, e))]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        out += [
            (b + "attn_norm.weight", (e,)),
            (b + "attn_q.weight", (e, e)),
            (b + "attn_k.weight", (kv, e)),
            (b + "attn_v.weight", (kv, e)),
            (b + "attn_output.weight", (e, e)),
            (b + "ffn_norm.weight", (e,)),
            (b + "ffn_gate.weight", (f, e)),
            (b + "ffn_up.weight", (f, e)),
            (b + "ffn_down.weight", (e, f)),
        ]
    out += [("output_norm.weight", (e,)), ("output.weight", (shape.n_vocab, e))]
    return out


def write(path: Path, shape: Shape, seed: int = 0, tokenizer: Path = TOKENIZER_SOURCE) -> int:
    """Write the GGUF atomically; returns the parameter count."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

    tok = GGUFReader(tokenizer, "r")
    vocab = len(tok.fields["tokenizer.ggml.tokens"].data)
    if vocab != shape.n_vocab:
        raise SystemExit(f"tokenizer has {vocab} tokens, shape wants {shape.n_vocab}")
    tmp = path.with_name(path.name + ".partial")
    writer = GGUFWriter(tmp, "llama")
    writer.add_name(f"synthetic-llama-{shape.n_params() / 1e9:.2f}B")
    writer.add_context_length(2048)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1)  # MOSTLY_F16
    for f in tok.fields.values():
        if not f.name.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    specs = tensors(shape)
    for name, np_shape in specs:
        is_norm = len(np_shape) == 1
        dtype = np.float32 if is_norm else np.float16
        nbytes = int(np.prod(np_shape)) * np.dtype(dtype).itemsize
        raw = GGMLQuantizationType.F32 if is_norm else GGMLQuantizationType.F16
        writer.add_tensor_info(name, np_shape, np.dtype(dtype), nbytes, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    n_params = 0
    for _name, np_shape in specs:
        n_params += int(np.prod(np_shape))
        if len(np_shape) == 1:
            writer.write_tensor_data(np.ones(np_shape, dtype=np.float32))
            continue
        rows = np.empty(np_shape, dtype=np.float16)
        step = max(1, (1 << 24) // np_shape[1])  # 64 MiB of float32 at a time
        for r in range(0, np_shape[0], step):
            block = rng.standard_normal((min(step, np_shape[0] - r), np_shape[1]), np.float32)
            block *= 0.02
            rows[r : r + len(block)] = block
        writer.write_tensor_data(rows)
        del rows
    writer.close()
    tmp.replace(path)
    return n_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", help="parameters, e.g. 0.1B, 0.5B, 1.5B, 3B")
    parser.add_argument("--out", required=True, type=Path, help="output GGUF (not in the repo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER_SOURCE)
    args = parser.parse_args(argv)
    if ROOT in args.out.resolve().parents:
        parser.error("write synthetic models outside the repository (e.g. under /tmp)")
    billions = float(args.size.rstrip("Bb"))
    from gguf import GGUFReader

    vocab = len(GGUFReader(args.tokenizer, "r").fields["tokenizer.ggml.tokens"].data)
    shape = shape_for(billions, vocab)
    n = write(args.out, shape, args.seed, args.tokenizer)
    print(f"{args.out}: {n:,} parameters, {shape}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
