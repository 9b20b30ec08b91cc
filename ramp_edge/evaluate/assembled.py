"""The fast quality evaluator: end-to-end KLD of a whole mixed-precision model, many times.

The measured-quality search and the policy's measured reward both need the true mean KL
divergence of a candidate allocation against the reference, hundreds of times. Each candidate
is *assembled*: the GGUF is written from quantized tensors that are encoded once per
(tensor, type) and kept in memory, into memory-backed temporary storage (/dev/shm where it
exists), then run by the same llama.cpp that deploys it, on calibration tokens (WikiText-2
validation by default, never the test text reports use). Because the evaluated file *is* the
exported file, its KLD equals the exported GGUF's on the same tokens: no proxy to validate.

Results are cached on disk per (source sha256, setting, allocation), so an interrupted search
resumes where it stopped and a re-run costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge import paths
from ramp_edge.evaluate.llama import LlamaLogits, Window
from ramp_edge.evaluate.metrics import TopK, kld_from_topk, log_softmax, perplexity_from_nll
from ramp_edge.evaluate.perplexity import (
    CALIBRATION_DATASETS,
    DEFAULT_TOP_K,
    load_text,
    reference_distribution,
)
from ramp_edge.fsutil import sha256_cached

logger = logging.getLogger(__name__)

EVALS_VERSION = 1


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """Which tokens an evaluation scores: `n_chunks` windows of `n_ctx` tokens of `data`."""

    # the second half of the calibration text: disjoint from the statistics' windows
    data: str = "wikitext2-valid-late"
    n_ctx: int = 512
    # 1024 scored tokens (~4 s per evaluation of SmolLM2-135M on 2 cores): fewer make the
    # search's accept/reject decisions noisier
    n_chunks: int = 4
    top_k: int = DEFAULT_TOP_K
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.n_ctx < 16 or self.n_chunks < 1:
            raise ValueError("n_ctx must be >= 16 and n_chunks >= 1")

    def key(self) -> str:
        return f"{self.data}:{self.n_ctx}:{self.n_chunks}:{self.top_k}"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One measured allocation."""

    mean_kld: float
    ppl: float
    size_bytes: int
    seconds: float
    cached: bool  # True when read from the evaluation cache (no model run)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_kld": self.mean_kld,
            "ppl": self.ppl,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
        }


class EncodedTensors:
    """Quantized bytes per (tensor, type) in memory, least recently used dropped past a limit.

    Implements ramp_edge.quant.export.EncodedCache. Thread-safe (Ray/threads may share it).
    """

    def __init__(self, limit_bytes: int = 4 << 30):
        self.limit_bytes = limit_bytes
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.encoded = 0  # how many tensors were actually quantized

    def get(self, name: str, qtype: str, encode: Callable[[], np.ndarray]) -> np.ndarray:
        key = (name, qtype)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = encode()
        with self._lock:
            self.encoded += 1
            self._items[key] = data
            self._bytes += data.nbytes
            while self._bytes > self.limit_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return data


def allocation_key(types: Mapping[str, str]) -> str:
    """A stable id for one allocation (tensor -> type)."""
    raw = ";".join(f"{n}={t}" for n, t in sorted(types.items()))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _scratch_dir() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


class AssembledEvaluator:
    """Measures KLD(reference || candidate) of allocations of one source, end to end.

    Args:
        source: an opened GGUF model (ramp_edge.source.open_source); its dequantized weights are
            the reference.
        imatrix: importance matrix the candidates are quantized with (as export uses it).
        variant: names the (imatrix, overrides) setting in the cache key, e.g. the imatrix id.
        overrides: tensor -> float32 values replacing the source's (Scale Folding).
        settings: the calibration tokens scored.
        cache: quantized-tensor cache to share with another evaluator of the same setting.
        hessians: input Hessians for error-compensated encoding (name them in `variant`).
    """

    def __init__(
        self,
        source: Any,
        imatrix: Mapping[str, np.ndarray] | None = None,
        variant: str = "",
        overrides: Mapping[str, np.ndarray] | None = None,
        settings: EvalSettings = EvalSettings(),
        cache: EncodedTensors | None = None,
        use_disk_cache: bool = True,
        hessians: Mapping[str, np.ndarray] | None = None,
    ):
        if settings.data not in CALIBRATION_DATASETS and not Path(settings.data).is_file():
            logger.warning("evaluating on %s, which is not calibration text", settings.data)
        self.source = source
        self.imatrix = imatrix
        self.overrides = dict(overrides or {})
        self.hessians = hessians
        self.settings = settings
        self.tensors = cache or EncodedTensors()
        self.model_runs = 0  # evaluations that ran the model (cache misses)
        self._ref: TopK | None = None
        self._windows: list[Window] | None = None
        self._memo: dict[str, Evaluation] = {}
        self._source_sha = _source_sha(source)
        setting = f"{self._source_sha}:{variant}:{settings.key()}:{EVALS_VERSION}"
        self.setting_id = hashlib.sha256(setting.encode()).hexdigest()[:24]
        self._log: Path | None = None
        if use_disk_cache:
            self._log = paths.cache_dir("evaluations") / f"{self.setting_id}.jsonl"
            self._load_log()

    # ------------------------------------------------------------------ cache

    def _load_log(self) -> None:
        assert self._log is not None
        if not self._log.exists():
            return
        for line in self._log.read_text().splitlines():
            try:
                row = json.loads(line)
                self._memo[row["key"]] = Evaluation(
                    float(row["mean_kld"]), float(row["ppl"]), int(row["size_bytes"]), 0.0, True
                )
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: that evaluation is simply redone

    def _append_log(self, key: str, ev: Evaluation) -> None:
        if self._log is None:
            return
        row = {"key": key, "mean_kld": ev.mean_kld, "ppl": ev.ppl, "size_bytes": ev.size_bytes}
        # One short line per append: a crash can cut at most the last line, which _load_log skips.
        with open(self._log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def cached(self, types: Mapping[str, str]) -> Evaluation | None:
        return self._memo.get(allocation_key(self._complete(types)))

    # ------------------------------------------------------------------ evaluation

    def _complete(self, types: Mapping[str, str]) -> dict[str, str]:
        return {s.name: types.get(s.name, s.source_type) for s in self.source.specs}

    def reference(self) -> TopK:
        if self._ref is None:
            s = self.settings
            self._ref = reference_distribution(
                self.source.path, s.data, s.n_ctx, s.n_chunks, s.top_k, s.threads
            )
        return self._ref

    def assemble(self, types: Mapping[str, str], out: Path) -> int:
        """Write the candidate GGUF to `out`; returns its size in bytes."""
        from ramp_edge.quant.export import export_model
        from ramp_edge.recipe import Recipe

        full = self._complete(types)
        recipe = Recipe(
            self.source.model.model_id,
            tuple((s.name, full[s.name]) for s in self.source.specs),
            "candidate",
        )
        result = export_model(
            self.source,
            recipe,
            out,
            imatrix=self.imatrix,
            overrides=self.overrides,
            cache=self.tensors,
            hessians=self.hessians,
        )
        return result.plan.size_bytes

    def evaluate(self, types: Mapping[str, str]) -> Evaluation:
        """Mean KLD and perplexity of the allocation on the calibration tokens (cached)."""
        full = self._complete(types)
        key = allocation_key(full)
        if key in self._memo:
            hit = self._memo[key]
            return Evaluation(hit.mean_kld, hit.ppl, hit.size_bytes, 0.0, True)
        start = time.perf_counter()
        ref = self.reference()
        fd, name = tempfile.mkstemp(
            prefix="ramp-edge-candidate-", suffix=".gguf", dir=_scratch_dir()
        )
        os.close(fd)
        path = Path(name)
        try:
            size = self.assemble(full, path)
            kld, nll = self._score(path, ref)
        finally:
            path.unlink(missing_ok=True)
        ppl, _ = perplexity_from_nll(nll)
        ev = Evaluation(float(kld.mean()), ppl, size, time.perf_counter() - start, False)
        self.model_runs += 1
        self._memo[key] = ev
        self._append_log(key, ev)
        return ev

    def _score(self, path: Path, ref: TopK) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        model = LlamaLogits(path, s.n_ctx, s.threads)
        try:
            if self._windows is None:
                text, _ = load_text(s.data)
                self._windows = model.windows(model.tokenize(text), s.n_chunks)
            klds, nlls, offset = [], [], 0
            for w in self._windows:
                logp = log_softmax(model.logits(w), np.float32)
                rows = slice(offset, offset + len(w.targets))
                klds.append(kld_from_topk(ref, rows, logp))
                nlls.append(-logp[np.arange(len(w.targets)), w.targets])
                offset += len(w.targets)
        finally:
            model.close()
        return np.concatenate(klds), np.concatenate(nlls)


def _source_sha(source: Any) -> str:
    """sha256 of the source file, computed once per opened source."""
    cached = source.__dict__.get("_ramp_sha256")
    if cached is None:
        cached = sha256_cached(source.path)
        source.__dict__["_ramp_sha256"] = cached
    return cached
