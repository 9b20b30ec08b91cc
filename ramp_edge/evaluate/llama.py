"""Logits from GGUF models through llama-cpp-python, windowed like llama-perplexity."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramp_edge.errors import ArtifactError, DependencyError

logger = logging.getLogger(__name__)


def default_threads() -> int:
    return int(os.environ.get("RAMP_EDGE_THREADS", "0")) or max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp logs to fd 2 from C; silence it while loading unless debugging."""
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass(frozen=True, slots=True)
class Window:
    index: int
    tokens: list[int]  # n_ctx tokens as evaluated (first replaced by BOS where the model adds one)
    targets: np.ndarray  # the next token for each scored position
    first: int  # first scored position (n_ctx // 2)


class LlamaLogits:
    """One loaded GGUF that returns full logits for token windows."""

    def __init__(self, path: str | os.PathLike[str], n_ctx: int = 512, threads: int | None = None):
        try:
            import llama_cpp
        except ImportError as err:  # pragma: no cover
            raise DependencyError(
                "llama-cpp-python is missing; run: pip install ramp-edge"
            ) from err
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"model file {self.path} not found")
        self.n_ctx = n_ctx
        try:
            with _quiet_stderr():
                self.llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_batch=n_ctx,
                    n_ubatch=n_ctx,
                    logits_all=True,
                    n_threads=threads or default_threads(),
                    verbose=False,
                )
        except (ValueError, RuntimeError) as err:
            raise ArtifactError(f"llama.cpp could not load {self.path}: {err}") from None
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = int(llama_cpp.llama_vocab_bos(vocab))
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def windows(self, tokens: list[int], n_chunks: int | None = None) -> list[Window]:
        """Non-overlapping n_ctx windows; like llama-perplexity, the first token becomes BOS."""
        n_ctx = self.n_ctx
        available = len(tokens) // n_ctx
        if available == 0:
            raise ArtifactError(f"text has {len(tokens)} tokens, fewer than one window of {n_ctx}")
        count = available if n_chunks is None else min(n_chunks, available)
        first = n_ctx // 2
        out = []
        for i in range(count):
            chunk = list(tokens[i * n_ctx : (i + 1) * n_ctx])
            targets = np.asarray(chunk[first + 1 :], dtype=np.int64)
            if self.add_bos:
                chunk[0] = self.bos
            out.append(Window(i, chunk, targets, first))
        return out

    def logits(self, window: Window) -> np.ndarray:
        """Logits for positions first .. n_ctx-2 (each predicting the next token)."""
        self.llm.reset()
        self.llm.eval(window.tokens)
        scores = np.asarray(self.llm.scores[: len(window.tokens)])
        return scores[window.first : len(window.tokens) - 1]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()
