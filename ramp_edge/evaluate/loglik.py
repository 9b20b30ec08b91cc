"""lm-eval-compatible log-likelihoods of continuations from a GGUF model via llama-cpp-python.

`LlamaCppScorer` implements the `Runner` protocol with ``llama_cpp.Llama(logits_all=True)``.

Tokenization follows lm-evaluation-harness (``HFLM._encode_pair``): trailing spaces of the
context move to the continuation; ``context + continuation`` is encoded as a whole and split at
the token length of the context encoded alone; the model input is ``context_enc +
continuation_enc``, left-truncated to n_ctx + 1 tokens, minus the last token. An empty context
is replaced by the BOS token (EOS when the model has none). BOS is prepended to every
encoding when the GGUF says so (``tokenizer.ggml.add_bos_token``; SmolLM2: no), the GGUF
counterpart of lm-eval's HF backend, which (0.4.13, ``add_bos_token`` unset) encodes with the
tokenizer's own default; ``add_bos=`` overrides it like lm-eval's ``add_bos_token=``. Known
residual difference: llama.cpp's pre-tokenizer can split runs of spaces differently from the HF
tokenizer (SmolLM2: 4 of 3,598 requests in scripts/crosscheck_lmeval.py, all in piqa).

KV-cache reuse (research/toolchain.md §8.3): the context is evaluated once, alone, from position
0; for each choice ``llm.n_tokens`` is set back to the context length and only the continuation
is evaluated (``Llama.eval`` frees the KV cells past n_tokens first). The log-probability of a
continuation token is read from the ``llm.scores`` row of the token before it, so the first one
comes from the context's last row, and a single-token continuation (boolq " no"/" yes") costs no
forward pass at all. The context is re-evaluated whenever it changes, never resumed from a
longer shared prefix: llama.cpp's CPU kernels round differently for different batch sizes
(SmolLM2 Q4_1: up to ~0.1 nats per choice between a one-pass and a context-then-continuation
evaluation; F16: ~0.01), so this canonical split makes every score independent of the requests
before it. `score_from_scratch` (fresh cache, same split) reproduces the reused scores;
`score_single_pass` evaluates context + continuation in one batch, for comparison.

Memory: with logits_all, llama-cpp-python keeps an n_ctx x n_vocab float32 ``scores`` buffer
(SmolLM2, n_ctx 2048: 400 MB; Gemma-3's 262k vocabulary: 2.1 GB), so edge devices want a smaller
n_ctx; longer inputs are left-truncated like lm-eval's ``max_length``.

Imports only stdlib, numpy, llama_cpp and the pure ramp_edge.evaluate/errors modules: it is
shipped to devices as part of the on-device agent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
import numpy as np

from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.evaluate.runner import LoglikResult, Request

logger = logging.getLogger(__name__)

DEFAULT_N_CTX = 2048  # lm-eval's default max_length for the HF backend


def default_threads() -> int:
    """$RAMP_EDGE_THREADS when set (> 0), else every core."""
    value = os.environ.get("RAMP_EDGE_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"RAMP_EDGE_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return os.cpu_count() or 1


class LlamaCppScorer:
    """Score (context, continuation) pairs with a GGUF model, reusing the KV cache.

    Args:
        model_path: a GGUF file.
        n_ctx: context window in tokens; longer requests are left-truncated (as lm-eval).
        n_threads: CPU threads; when None, $RAMP_EDGE_THREADS or else os.cpu_count(). On a
            machine shared with other busy processes, fewer threads than cores is much faster
            (llama.cpp threads spin at barriers).
        n_batch: tokens per llama_decode call.
        add_bos: prepend BOS; None = as the GGUF's add_bos_token says.
        verbose: let llama.cpp log to stderr.

    Raises:
        ArtifactError: the file is missing or llama.cpp cannot load it.
        ConfigError: n_ctx < 8.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        n_batch: int = 512,
        add_bos: bool | None = None,
        verbose: bool = False,
        n_gpu_layers: int = 0,
    ) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such GGUF file")
        if n_ctx < 8:
            raise ConfigError(f"n_ctx must be at least 8 tokens, got {n_ctx}")
        threads = n_threads or default_threads()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=min(n_batch, n_ctx),
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=True,
                verbose=verbose,
                n_gpu_layers=n_gpu_layers,  # -1: all layers; ignored by a CPU-only build
            )
        except (ValueError, RuntimeError) as err:
            raise ArtifactError(f"{path}: llama.cpp could not load the model ({err})") from None
        self.model_path = path
        self.n_ctx = int(self.llm.n_ctx())
        self.n_threads = threads
        # tokenize("", add_bos=True) yields [BOS] exactly when the vocab's add_bos flag is set
        model_bos = bool(self.llm.tokenize(b"", add_bos=True, special=False))
        self.add_bos = model_bos if add_bos is None else add_bos
        bos, eos = self.llm.token_bos(), self.llm.token_eos()
        self._bos = [bos] if self.add_bos and bos >= 0 else []
        self._prefix_token = bos if bos >= 0 else eos  # lm-eval's prefix_token_id
        self._ctx_cache: tuple[str | None, list[int]] = (None, [])
        self._kv_context: list[int] = []  # context tokens whose KV the model holds at 0..n-1
        self.n_evaluated_tokens = 0  # tokens actually run through the model (reuse saves the rest)

    # ------------------------------------------------------------------ tokenization

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (BOS first when add_bos), special tokens not parsed."""
        return self._bos + self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _encode_context(self, context: str) -> list[int]:
        if self._ctx_cache[0] != context:
            self._ctx_cache = (context, self.encode(context))
        return self._ctx_cache[1]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's ``_encode_pair``: (context tokens, continuation tokens)."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if not context:
            cont = self.llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)
            return [self._prefix_token], cont
        whole = self.encode(context + continuation)
        ctx = self._encode_context(context)
        return list(ctx), whole[len(ctx) :]

    # ------------------------------------------------------------------ scoring

    def loglikelihood(self, requests: Sequence[Request]) -> list[LoglikResult]:
        """(sum of continuation-token log-probabilities, is_greedy) per request, in order."""
        return [self.score_tokens(*self.encode_pair(ctx, cont)) for ctx, cont in requests]

    def score_tokens(self, ctx: Sequence[int], cont: Sequence[int]) -> LoglikResult:
        """Score continuation tokens after context tokens, reusing cached KV of a shared prefix."""
        if not cont:
            logger.warning("continuation encodes to no tokens; scoring it as log-likelihood 0")
            return 0.0, True
        if len(cont) > self.n_ctx:
            raise ConfigError(
                f"continuation of {len(cont)} tokens does not fit n_ctx={self.n_ctx}; raise n_ctx"
            )
        # lm-eval: inp = (context_enc + continuation_enc)[-(max_length + 1):][:-1]
        inp = [*ctx, *cont][-(self.n_ctx + 1) :][:-1]
        n_ctx_part = len(inp) - len(cont) + 1  # through the row that predicts cont[0]
        ctx_part, cont_part = inp[:n_ctx_part], inp[n_ctx_part:]
        llm = self.llm
        if ctx_part != self._kv_context or llm.n_tokens < n_ctx_part:
            # canonical batching: a context is always evaluated alone from position 0, so a
            # score never depends on which request came before (llama.cpp's CPU kernels give
            # batch-size-dependent rounding)
            llm.reset()
            llm.eval(ctx_part)
            self._kv_context = ctx_part
            self.n_evaluated_tokens += len(ctx_part)
        llm.n_tokens = n_ctx_part  # drop the previous continuation; eval() frees its KV cells
        if cont_part:
            llm.eval(cont_part)
            self.n_evaluated_tokens += len(cont_part)
        rows = llm.scores[n_ctx_part - 1 : len(inp)].astype(np.float64)
        return _sum_logprobs(rows, np.asarray(cont, dtype=np.int64))

    def score_from_scratch(self, context: str, continuation: str) -> LoglikResult:
        """The same score with the KV cache cleared first (same context/continuation split)."""
        self.reset()
        return self.score_tokens(*self.encode_pair(context, continuation))

    def score_single_pass(self, context: str, continuation: str) -> LoglikResult:
        """Score with a fresh cache and context + continuation evaluated in one batch."""
        ctx, cont = self.encode_pair(context, continuation)
        if not cont:
            return 0.0, True
        inp = [*ctx, *cont][-(self.n_ctx + 1) :][:-1]
        self.reset()
        self.llm.eval(inp)
        rows = self.llm.scores[len(inp) - len(cont) : len(inp)].astype(np.float64)
        self.reset()
        return _sum_logprobs(rows, np.asarray(cont, dtype=np.int64))

    def reset(self) -> None:
        """Forget the cached tokens so the next request is evaluated from the start."""
        self.llm.reset()
        self._kv_context = []

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaCppScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sum_logprobs(logits: np.ndarray, targets: np.ndarray) -> LoglikResult:
    """Sum of log-softmax(logits)[i, targets[i]] and whether every target is the argmax."""
    peak = logits.max(axis=1, keepdims=True)
    logsumexp = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
    picked = logits[np.arange(len(targets)), targets]
    greedy = bool((logits.argmax(axis=1) == targets).all())
    return float((picked - logsumexp).sum()), greedy
