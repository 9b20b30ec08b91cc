"""The log-likelihood runner interface that task scoring talks to, and a deterministic fake.

A runner answers lm-evaluation-harness `loglikelihood` requests: for each (context, continuation)
pair it returns the summed log-probability of the continuation's tokens given the context, and
whether greedy decoding from the context would have produced exactly those tokens. The real
backend is `ramp_edge.evaluate.loglik.LlamaCppScorer`; tests use `FakeRunner`.

Stdlib only: this module ships to devices together with `tasks.py` and `loglik.py`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol, Tuple, runtime_checkable  # noqa: UP035

logger = logging.getLogger(__name__)

# (context, continuation) -> (sum of continuation-token log-probabilities in nats, is_greedy)
# typing aliases, not tuple[...]: this module runs on the device's Python >= 3.8
Request = Tuple[str, str]  # noqa: UP006
LoglikResult = Tuple[float, bool]  # noqa: UP006


@runtime_checkable
class Runner(Protocol):
    """Anything that scores (context, continuation) pairs like lm-eval's `LM.loglikelihood`."""

    def loglikelihood(self, requests: Sequence[Request]) -> list[LoglikResult]:
        """Return one (sum logprob of continuation tokens, is_greedy) per request, in order."""
        ...


def hashed_loglik(context: str, continuation: str) -> float:
    """A stable pseudo log-likelihood in (-10, 0] derived from sha256 of the pair."""
    digest = hashlib.sha256(f"{context}\x00{continuation}".encode()).digest()
    return -int.from_bytes(digest[:4], "big") / 2**32 * 10.0


class FakeRunner:
    """Deterministic runner for tests: table lookups, else a hash of the pair.

    Args:
        scores: optional exact answers, (context, continuation) -> log-likelihood.
        greedy: optional set of pairs reported as greedy; all others are not.

    Every request is appended to `calls`, so tests can check what was asked and in what order.
    """

    def __init__(
        self,
        scores: Mapping[Request, float] | None = None,
        greedy: frozenset[Request] | set[Request] = frozenset(),
    ) -> None:
        self.scores = dict(scores or {})
        self.greedy = frozenset(greedy)
        self.calls: list[Request] = []

    def loglikelihood(self, requests: Sequence[Request]) -> list[LoglikResult]:
        out: list[LoglikResult] = []
        for context, continuation in requests:
            pair = (context, continuation)
            self.calls.append(pair)
            ll = self.scores.get(pair)
            if ll is None:
                ll = hashed_loglik(context, continuation)
            out.append((float(ll), pair in self.greedy))
        return out
