"""Perplexity and KL divergence of GGUF models, numbers comparable with llama-perplexity.

Reference distributions for KLD are cached on disk as top-k log-probs (float32) + int32 ids +
the rest mass + the exact NLL per scored token, keyed by the reference file's sha256, the
data's sha256 and the settings. Cost per 1k scored tokens with k=256:
256 * (4 + 4) + 8 bytes = 2 MiB on disk (float32 keeps a self-comparison at KLD 0; a full fp16
distribution would be n_vocab * 2 bytes per token: 98 MiB per 1k tokens for a 49k vocabulary).
In memory, evaluation holds one window of logits: n_ctx * n_vocab * 4 bytes (100 MB for SmolLM2
at n_ctx 512).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ramp_edge import paths
from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.evaluate.llama import LlamaLogits
from ramp_edge.evaluate.metrics import (
    KLDResult,
    PerplexityResult,
    TopK,
    kld_from_topk,
    log_softmax,
    perplexity_from_nll,
    top_k,
)
from ramp_edge.fsutil import atomic_path, sha256_file

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]

DATASETS = {
    "wikitext2-test": "wikitext2/wiki.test.raw",
}
# Calibration text (statistics, importance matrices): never used for evaluation.
# "-late" is the second half of the same file: the measured search scores candidates there,
# on text the statistics (taken from the start) never saw, so a GPTQ encoding fitted to the
# statistics cannot win the search by overfitting them.
CALIBRATION_DATASETS = {
    "wikitext2-valid": "wikitext2/valid.txt",
    "wikitext2-valid-late": "wikitext2/valid.txt#late",
}
DEFAULT_TOP_K = 256


def load_text(data: str) -> tuple[str, str]:
    """Text of a named shipped dataset or a file; returns (text, sha256 of its bytes)."""
    late = False
    if data in DATASETS or data in CALIBRATION_DATASETS:
        name, _, part = {**DATASETS, **CALIBRATION_DATASETS}[data].partition("#")
        path = paths.data_dir() / name
        late = part == "late"
    else:
        path = Path(data)
        if not path.is_file():
            raise ConfigError(f"unknown data {data!r}: not one of {', '.join(DATASETS)} nor a file")
    raw = path.read_bytes()
    if late:  # from the first line break past the middle
        cut = raw.find(b"\n", len(raw) // 2)
        raw = raw[cut + 1 :] if cut >= 0 else raw[len(raw) // 2 :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtifactError(f"{path} is not UTF-8 text") from None
    return text, hashlib.sha256(raw).hexdigest()


def perplexity(
    model_path: str | Path,
    data: str = "wikitext2-test",
    n_ctx: int = 512,
    n_chunks: int | None = None,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> PerplexityResult:
    """llama-perplexity's number for a GGUF: exp(mean NLL) over the second half of each window."""
    start = time.perf_counter()
    text, _ = load_text(data)
    model = LlamaLogits(model_path, n_ctx, threads)
    try:
        windows = model.windows(model.tokenize(text), n_chunks)
        nll: list[np.ndarray] = []
        for w in windows:
            if progress:
                progress(w.index, len(windows), f"perplexity chunk {w.index + 1}/{len(windows)}")
            logp = log_softmax(model.logits(w))
            nll.append(-logp[np.arange(len(w.targets)), w.targets])
    finally:
        model.close()
    all_nll = np.concatenate(nll)
    ppl, err = perplexity_from_nll(all_nll)
    if progress:
        progress(len(windows), len(windows), "perplexity done")
    return PerplexityResult(
        ppl, err, len(all_nll), len(windows), n_ctx, time.perf_counter() - start
    )


def _cache_path(ref_sha: str, data_sha: str, n_ctx: int, n_chunks: int | None, k: int) -> Path:
    key = hashlib.sha256(f"{ref_sha}:{data_sha}:{n_ctx}:{n_chunks}:{k}".encode()).hexdigest()[:24]
    return paths.cache_dir("reference-logits") / f"{key}.npz"


def reference_distribution(
    ref_path: str | Path,
    data: str = "wikitext2-test",
    n_ctx: int = 512,
    n_chunks: int | None = None,
    k: int = DEFAULT_TOP_K,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> TopK:
    """The reference's top-k distributions, computed once and cached on disk."""
    text, data_sha = load_text(data)
    cache = _cache_path(sha256_file(ref_path), data_sha, n_ctx, n_chunks, k)
    if cache.exists():
        try:
            with np.load(cache) as z:
                return TopK(z["ids"], z["logprobs"], z["rest"], z["nll"], int(z["n_vocab"]))
        except (OSError, KeyError, ValueError):
            logger.warning("reference cache %s is unreadable; recomputing", cache)
    model = LlamaLogits(ref_path, n_ctx, threads)
    parts: list[TopK] = []
    try:
        windows = model.windows(model.tokenize(text), n_chunks)
        for w in windows:
            if progress:
                progress(w.index, len(windows), f"reference chunk {w.index + 1}/{len(windows)}")
            parts.append(top_k(log_softmax(model.logits(w)), w.targets, k))
    finally:
        model.close()
    ref = TopK(
        np.concatenate([p.ids for p in parts]),
        np.concatenate([p.logprobs for p in parts]),
        np.concatenate([p.rest_logprob for p in parts]),
        np.concatenate([p.nll for p in parts]),
        parts[0].n_vocab,
    )
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                ids=ref.ids,
                logprobs=ref.logprobs,
                rest=ref.rest_logprob,
                nll=ref.nll,
                n_vocab=ref.n_vocab,
            )
    return ref


def kl_divergence(
    candidate: str | Path,
    reference: str | Path,
    data: str = "wikitext2-test",
    n_ctx: int = 512,
    n_chunks: int | None = None,
    k: int = DEFAULT_TOP_K,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> KLDResult:
    """KL(reference || candidate) per token over the same windows as llama-perplexity."""
    start = time.perf_counter()
    ref = reference_distribution(reference, data, n_ctx, n_chunks, k, threads, progress)
    text, _ = load_text(data)
    model = LlamaLogits(candidate, n_ctx, threads)
    if model.n_vocab != ref.n_vocab:
        model.close()
        raise ConfigError(
            f"candidate vocabulary ({model.n_vocab}) differs from the reference's ({ref.n_vocab}); "
            "KLD needs the same tokenizer"
        )
    klds, nlls, same = [], [], []
    offset = 0
    try:
        windows = model.windows(model.tokenize(text), n_chunks)
        for w in windows:
            if progress:
                progress(w.index, len(windows), f"candidate chunk {w.index + 1}/{len(windows)}")
            logp = log_softmax(model.logits(w))
            rows = slice(offset, offset + len(w.targets))
            klds.append(kld_from_topk(ref, rows, logp))
            nlls.append(-logp[np.arange(len(w.targets)), w.targets])
            same.append(logp.argmax(axis=1) == ref.ids[rows, 0])
            offset += len(w.targets)
    finally:
        model.close()
    if offset != len(ref.nll):
        raise ConfigError(
            "candidate and reference tokenize the data differently; KLD needs the same tokenizer"
        )
    kld = np.concatenate(klds)
    ppl_ref, _ = perplexity_from_nll(ref.nll)
    ppl_cand, _ = perplexity_from_nll(np.concatenate(nlls))
    return KLDResult(
        mean_kld=float(kld.mean()),
        kld_stderr=float(kld.std(ddof=1) / np.sqrt(len(kld))) if len(kld) > 1 else 0.0,
        kld_p99=float(np.percentile(kld, 99)),
        kld_median=float(np.median(kld)),
        same_top_p=float(np.concatenate(same).mean()),
        ppl_ref=ppl_ref,
        ppl_cand=ppl_cand,
        ppl_ratio=ppl_cand / ppl_ref,
        n_tokens=len(kld),
        n_chunks=len(windows),
        n_ctx=n_ctx,
        top_k=k,
        seconds=time.perf_counter() - start,
    )
