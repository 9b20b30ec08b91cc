"""Every ggml tensor type ramp-edge can store, as one table of small records.

Facts follow ggml (`ggml/src/ggml.c` type_traits) and llama.cpp (`src/llama-quant.cpp`):
block sizes and bytes per block equal `gguf.GGML_QUANT_SIZES`; `fallback` reproduces
`tensor_type_fallback`, the type llama.cpp substitutes when a row length is not a multiple
of the block size; `needs_imatrix` reproduces `ggml_quantize_requires_imatrix` (the C code
aborts the process without one, so we check first).
"""

from __future__ import annotations

from dataclasses import dataclass

from ramp_edge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class QuantType:
    """One ggml storage type."""

    name: str
    ggml_id: int
    block_size: int  # weights per block
    block_bytes: int  # bytes per block, scales included
    needs_imatrix: bool = False  # ggml aborts without an importance matrix
    fallback: str | None = None  # llama.cpp's substitute when the row length does not fit
    allocatable: bool = True  # sensible for LLM weights (ternary TQ types are not)
    ftype: int | None = None  # llama_ftype whose name describes a file dominated by this type

    @property
    def bits_per_weight(self) -> float:
        return self.block_bytes * 8 / self.block_size

    def fits(self, row_length: int) -> bool:
        return row_length % self.block_size == 0

    def row_bytes(self, row_length: int) -> int:
        if not self.fits(row_length):
            raise ConfigError(
                f"type {self.name} needs rows divisible by {self.block_size}, got {row_length}"
            )
        return row_length // self.block_size * self.block_bytes

    def tensor_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of a tensor with ggml shape (ne0 = row length, ne1, ...)."""
        rows = 1
        for dim in shape[1:]:
            rows *= dim
        return self.row_bytes(shape[0]) * rows


_ROWS = [
    # name, id, block, bytes, imatrix, fallback, allocatable, ftype
    ("F32", 0, 1, 4, False, None, True, 0),
    ("F16", 1, 1, 2, False, None, True, 1),
    ("BF16", 30, 1, 2, False, None, True, 32),
    ("Q8_0", 8, 32, 34, False, "F16", True, 7),
    ("Q6_K", 14, 256, 210, False, "Q8_0", True, 18),
    ("Q5_1", 7, 32, 24, False, "F16", True, 9),
    ("Q5_K", 13, 256, 176, False, "Q5_1", True, 17),
    ("Q5_0", 6, 32, 22, False, "F16", True, 8),
    ("Q4_1", 3, 32, 20, False, "F16", True, 3),
    ("Q4_K", 12, 256, 144, False, "Q5_0", True, 15),
    ("Q4_0", 2, 32, 18, False, "F16", True, 2),
    ("IQ4_NL", 20, 32, 18, False, "F16", True, 25),
    ("NVFP4", 40, 64, 36, False, None, True, 39),
    ("IQ4_XS", 23, 256, 136, False, "IQ4_NL", True, 30),
    ("MXFP4", 39, 32, 17, False, "F16", True, 38),
    ("Q3_K", 11, 256, 110, False, "Q4_0", True, 12),
    ("IQ3_S", 21, 256, 110, False, "IQ4_NL", True, 26),
    ("IQ3_XXS", 18, 256, 98, False, "IQ4_NL", True, 23),
    ("Q2_K", 10, 256, 84, False, "Q4_0", True, 10),
    ("IQ2_S", 22, 256, 82, False, "IQ4_NL", True, 28),
    ("IQ2_XS", 17, 256, 74, True, "IQ4_NL", True, 20),
    ("IQ2_XXS", 16, 256, 66, True, "IQ4_NL", True, 19),
    ("IQ1_M", 29, 256, 56, False, "IQ4_NL", True, 31),
    ("IQ1_S", 19, 256, 50, True, "IQ4_NL", True, 24),
    ("TQ2_0", 35, 256, 66, False, "Q4_0", False, 37),
    ("TQ1_0", 34, 256, 54, False, "Q4_0", False, 36),
]

CATALOGUE: dict[str, QuantType] = {
    row[0]: QuantType(*row)  # type: ignore[arg-type]
    for row in _ROWS
}
BY_ID: dict[int, QuantType] = {t.ggml_id: t for t in CATALOGUE.values()}


def get(name: str) -> QuantType:
    """Look a type up by name, case-insensitively (`q4_k` == `Q4_K`)."""
    key = name.strip().upper()
    if key not in CATALOGUE:
        raise ConfigError(f"unknown quant type {name!r}; known: {', '.join(CATALOGUE)}")
    return CATALOGUE[key]


def resolve_fallback(qtype: QuantType, row_length: int) -> QuantType:
    """The type llama.cpp actually writes for `qtype` on rows of `row_length`.

    Mirrors llama.cpp's tensor_type_fallback.
    """
    if qtype.fits(row_length):
        return qtype
    if qtype.fallback is None:
        raise ConfigError(
            f"type {qtype.name} does not fit rows of {row_length} and has no fallback"
        )
    substitute = CATALOGUE[qtype.fallback]
    return substitute if substitute.fits(row_length) else CATALOGUE["F16"]


def legal_types(row_length: int, include_float: bool = True) -> list[QuantType]:
    """Allocatable types whose block fits the row, sorted by bits per weight (descending)."""
    types = [
        t
        for t in CATALOGUE.values()
        if t.allocatable and t.fits(row_length) and (include_float or t.block_size > 1)
    ]
    return sorted(types, key=lambda t: (-t.bits_per_weight, t.name))
