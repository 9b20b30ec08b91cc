"""Recipes: which ggml type each tensor of a model gets, with where that choice came from.

A recipe is built from a llama.cpp preset (`Q4_K_M`), a uniform type (`uniform:Q4_0`), an
allocator, or a JSON file. It is checked against the model (every tensor named, every type
legal for the tensor's row length) before any byte is written.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramp_edge import schema
from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.fsutil import atomic_write_json, atomic_write_text
from ramp_edge.quant import presets
from ramp_edge.quant.catalogue import CATALOGUE, get, legal_types, resolve_fallback

ENCODINGS = ("rtn", "gptq")


@dataclass(frozen=True, slots=True)
class Recipe:
    """Tensor name -> quant type name for one model, and its provenance."""

    model_id: str
    allocation: tuple[tuple[str, str], ...]  # (GGUF tensor name, type name), file order
    method: str  # "preset:Q4_K_M", "uniform:Q4_0", "knapsack", "sac", "file"
    budget: str | None = None  # as the user gave it, e.g. "4.6bpw" or "95MB"
    notes: Mapping[str, Any] = field(default_factory=dict)
    # How blocks pick their levels: "rtn" as llama-quantize does, or "gptq": error-compensated
    # on the model's calibration Hessians (ramp_edge.quant.compensate). Same types, same bytes;
    # export re-derives the Hessians from the same calibration text, so the file is reproducible.
    encoding: str = "rtn"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ConfigError(
                f"recipe: unknown encoding {self.encoding!r}; known: {', '.join(ENCODINGS)}"
            )
        for name, qtype in self.allocation:
            if qtype.upper() not in CATALOGUE:
                raise ConfigError(f"recipe: tensor {name} has unknown type {qtype!r}")

    @property
    def types(self) -> dict[str, str]:
        return dict(self.allocation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "method": self.method,
            "budget": self.budget,
            "notes": dict(self.notes),
            "encoding": self.encoding,
            "tensors": {name: qtype for name, qtype in self.allocation},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "recipe") -> Recipe:
        try:
            tensors = doc["tensors"]
            if not isinstance(tensors, dict):
                raise TypeError("tensors must be an object")
            return cls(
                model_id=str(doc.get("model_id", "")),
                allocation=tuple((str(k), str(v).upper()) for k, v in tensors.items()),
                method=str(doc.get("method", "file")),
                budget=doc.get("budget"),
                notes=dict(doc.get("notes") or {}),
                encoding=str(doc.get("encoding", "rtn")),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ArtifactError(f"{source}: malformed recipe ({err})") from None

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, schema.wrap("ramp-edge/recipe", self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"recipe file {path} not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ArtifactError(f"{path} is not valid JSON ({err})") from None
        return cls.from_dict(schema.unwrap("ramp-edge/recipe", doc, str(path)), str(path))

    def tensor_type_file(self) -> str:
        """llama-quantize's --tensor-type-file: one anchored `regex=type` per quantized tensor."""
        lines = [
            f"^{re.escape(name)}$={qtype.lower()}"
            for name, qtype in self.allocation
            # llama.cpp applies overrides only to quantizable tensors; skip norms and the like
            if presets.allows_quantization(name, (1, 1))
            and not (get(qtype).name == "F32" and "norm" in name)
        ]
        return "\n".join(lines) + "\n"

    def save_tensor_type_file(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.tensor_type_file())

    def type_counts(self) -> Counter[str]:
        return Counter(qtype for _, qtype in self.allocation)


def quantizable(source: Any) -> list[str]:
    """Names of the tensors whose type a recipe may choose (llama.cpp's rule)."""
    return [s.name for s in source.specs if presets.allows_quantization(s.name, s.shape)]


def _expert_count(source: Any) -> int:
    return int(source.field(f"{source.arch}.expert_count", 0) or 0)


def from_preset(source: Any, preset: str, has_imatrix: bool = False) -> Recipe:
    info = source.info
    types = presets.preset_types(
        preset,
        {s.name: s.shape for s in source.specs},
        {s.name: s.source_type for s in source.specs},
        n_layer=info.n_layer,
        n_head=info.n_head,
        n_head_kv=info.n_head_kv,
        n_expert=_expert_count(source),
        has_imatrix=has_imatrix,
        is_70b=info.arch == "llama" and info.n_layer == 80 and info.n_head != info.n_head_kv,
    )
    p = presets.get_preset(preset)
    allocation = tuple((s.name, types[s.name]) for s in source.specs)
    return Recipe(source.model.model_id, allocation, f"preset:{p.name}")


def uniform(source: Any, qtype: str) -> Recipe:
    """Every quantizable tensor at `qtype`, with llama.cpp's fallback where rows do not fit."""
    qt = get(qtype)
    allocation = []
    for s in source.specs:
        if presets.allows_quantization(s.name, s.shape):
            allocation.append((s.name, resolve_fallback(qt, s.row_length).name))
        else:
            allocation.append((s.name, s.source_type))
    return Recipe(source.model.model_id, tuple(allocation), f"uniform:{qt.name}")


def build(source: Any, spec: str, has_imatrix: bool = False) -> Recipe:
    """A recipe from a preset name, `uniform:TYPE`, or a JSON recipe file."""
    if spec.lower().startswith("uniform:"):
        return uniform(source, spec.split(":", 1)[1])
    if spec.upper() in presets.PRESETS:
        return from_preset(source, spec, has_imatrix)
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        return Recipe.load(path)
    raise ConfigError(
        f"unknown recipe {spec!r}: not a preset ({', '.join(presets.PRESETS)}), "
        "uniform:TYPE, or an existing .json file"
    )


def validate(recipe: Recipe, source: Any) -> None:
    """Every tensor of the model named once, every type legal for its tensor."""
    types = recipe.types
    names = {s.name for s in source.specs}
    unknown = sorted(set(types) - names)
    if unknown:
        raise ConfigError(f"recipe names tensors the model does not have: {', '.join(unknown[:5])}")
    for s in source.specs:
        qtype = types.get(s.name)
        if qtype is None:
            raise ConfigError(f"recipe gives no type for tensor {s.name}")
        qt = get(qtype)
        if not presets.allows_quantization(s.name, s.shape):
            if qt.name != s.source_type and qt.block_size > 1:
                raise ConfigError(
                    f"tensor {s.name} is never quantized by llama.cpp; "
                    f"use {s.source_type}, F16 or F32"
                )
            continue
        if not qt.fits(s.row_length) or (not qt.allocatable and qt.name != s.source_type):
            legal = ", ".join(t.name for t in legal_types(s.row_length))
            raise ConfigError(
                f"type {qt.name} is not legal for tensor {s.name} (row length {s.row_length}); "
                f"legal: {legal}"
            )
