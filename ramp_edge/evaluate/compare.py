"""Retention report: a candidate's accuracy, KLD and perplexity against its reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge.evaluate.metrics import KLDResult
from ramp_edge.evaluate.tasks import TaskResult

ProgressFn = Callable[[float, float, str], None]


@dataclass(frozen=True, slots=True)
class TaskRetention:
    task: str
    n: int
    acc_ref: float
    acc_cand: float
    acc_norm_ref: float | None
    acc_norm_cand: float | None

    @property
    def retention(self) -> float:
        """Candidate accuracy as a fraction of the reference's (the paper's "retains 99.5%")."""
        ref = self.acc_norm_ref if self.acc_norm_ref is not None else self.acc_ref
        cand = self.acc_norm_cand if self.acc_norm_cand is not None else self.acc_cand
        return cand / ref if ref > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n": self.n,
            "acc_ref": self.acc_ref,
            "acc_cand": self.acc_cand,
            "acc_norm_ref": self.acc_norm_ref,
            "acc_norm_cand": self.acc_norm_cand,
            "retention": self.retention,
        }


@dataclass(frozen=True, slots=True)
class RetentionReport:
    candidate: str
    reference: str
    tasks: tuple[TaskRetention, ...]
    kld: KLDResult | None

    @property
    def mean_retention(self) -> float:
        return sum(t.retention for t in self.tasks) / max(1, len(self.tasks))

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "mean_retention": self.mean_retention,
            "tasks": [t.to_dict() for t in self.tasks],
            "kld": self.kld.to_dict() if self.kld else None,
        }


def pair(ref: list[TaskResult], cand: list[TaskResult]) -> tuple[TaskRetention, ...]:
    return tuple(
        TaskRetention(r.task, r.n, r.acc, c.acc, r.acc_norm, c.acc_norm)
        for r, c in zip(ref, cand, strict=False)
    )


def compare(
    candidate: Path,
    reference: Path,
    tasks: str,
    limit: int | None = None,
    n_chunks: int | None = 8,
    progress: ProgressFn | None = None,
) -> RetentionReport:
    """Score both models on the same task items and the same KLD windows."""
    from ramp_edge.evaluate.loglik import LlamaCppScorer
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.evaluate.taskfile import evaluate_tasks

    results = []
    for path in (reference, candidate):
        with LlamaCppScorer(path) as scorer:
            results.append(evaluate_tasks(scorer, tasks, limit, progress))
    kld = (
        kl_divergence(candidate, reference, n_chunks=n_chunks, progress=progress)
        if n_chunks
        else None
    )
    return RetentionReport(str(candidate), str(reference), pair(results[0], results[1]), kld)
