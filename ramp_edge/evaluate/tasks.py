"""Multiple-choice tasks scored the way lm-evaluation-harness scores them.

A task is data, never Python: a file in the multiple-choice subset of lm-eval's YAML task format or
a plain JSONL file (``context``, ``choices``, ``label`` per line); `ramp_edge.evaluate.taskfile`
reads both (host side). The six built-in tasks are such YAML files in ``ramp_edge/data/tasks/``
(``arc_easy``, ``arc_challenge``, ``piqa``, ``hellaswag``, ``winogrande``, ``boolq``), each with
its data and SOURCE.md in a folder beside it. To add a task, write a YAML (or JSONL) file and pass
its path wherever a task name is accepted (``ramp-edge eval tasks MODEL --tasks my_task.yaml``);
to ship one, drop it in ``ramp_edge/data/tasks/`` with five items under ``tests/data/tasks/``.

This module holds what the device needs too: the `Item` record (one document as log-likelihood
requests), scoring and the `TaskResult` record. Scoring follows lm-eval's
``ConfigurableTask.process_results``: ``acc`` is 1 when the gold choice has the highest summed
log-likelihood (ties go to the first choice, ``np.argmax``); ``acc_norm`` divides each
log-likelihood by ``len(choice)``, the length in *characters* of the ``doc_to_choice`` string
without the target delimiter. Standard errors are lm-eval's ``mean_stderr``: sample standard
deviation (n-1) over sqrt(n). ``limit`` keeps the first N documents in file order, the subset
``lm_eval --limit N`` scores.

Pure: stdlib + numpy + ramp_edge.errors, Python >= 3.8; it ships to devices with ``runner.py`` and
``loglik.py``. The host-only lookups (`get_task`, `parse_task_names`, `evaluate_tasks`) live in
`taskfile`, which imports this module (never the other way).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable  # noqa: UP035 - ProgressFn on Python 3.8

import numpy as np

from ramp_edge.errors import ArtifactError, ConfigError, RampEdgeError

if TYPE_CHECKING:
    from ramp_edge.evaluate.runner import Runner

logger = logging.getLogger(__name__)

TARGET_DELIMITER = " "  # lm-eval's default target_delimiter for multiple_choice tasks
METRICS = ("acc", "acc_norm")

# (done, total, description), as ramp_edge.ui.progress yields
ProgressFn = Callable[[float, float, str], None]


def default_data_dir() -> Path:
    """The task files shipped inside the package: ``ramp_edge/data/tasks``."""
    return Path(__file__).resolve().parent.parent / "data" / "tasks"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Item:
    """One document as loglikelihood requests: a (context, continuation) per choice.

    Attributes:
        requests: one (context, continuation) pair per choice, in choice order.
        gold: index of the correct choice.
        choice_chars: ``len()`` in characters of each lm-eval ``doc_to_choice`` string, the
            divisor of ``acc_norm``.
    """

    requests: tuple[tuple[str, str], ...]
    gold: int
    choice_chars: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.requests) < 2:
            raise ArtifactError(f"an item needs at least 2 choices, got {len(self.requests)}")
        if len(self.choice_chars) != len(self.requests):
            raise ArtifactError("choice_chars and requests differ in length")
        if not 0 <= self.gold < len(self.requests):
            raise ArtifactError(
                f"gold index {self.gold} out of range for {len(self.requests)} choices"
            )
        if any(n <= 0 for n in self.choice_chars):
            raise ArtifactError("empty answer choice")
        for context, continuation in self.requests:
            if (
                not isinstance(context, str)
                or not isinstance(continuation, str)
                or not continuation
            ):
                raise ArtifactError("requests must be (str, non-empty str) pairs")


@dataclass(frozen=True)
class TaskInfo:
    """What scoring needs to know about a task: its name, version and reported metrics.

    The device builds one from the task items the host ships; on the host, a
    `ramp_edge.evaluate.taskfile.TaskDefinition` carries the same three attributes.
    """

    name: str
    version: int
    metrics: tuple[str, ...] = METRICS

    def __post_init__(self) -> None:
        if not self.name or self.version < 1 or "acc" not in self.metrics:
            raise ConfigError(f"task {self.name!r}: needs a name, version >= 1 and metric acc")


@dataclass(frozen=True)
class TaskResult:
    """Accuracy of one model on one task. Stderrs are None for n < 2; acc_norm is None where
    the task does not report it (winogrande, boolq)."""

    task: str
    version: int
    n: int
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    items_per_s: float

    def __post_init__(self) -> None:
        if self.n < 1 or not 0.0 <= self.acc <= 1.0:
            raise ArtifactError(f"bad TaskResult for {self.task}: n={self.n}, acc={self.acc}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "version": self.version,
            "n": self.n,
            "acc": self.acc,
            "acc_stderr": self.acc_stderr,
            "acc_norm": self.acc_norm,
            "acc_norm_stderr": self.acc_norm_stderr,
            "items_per_s": self.items_per_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")


# --------------------------------------------------------------------------- scoring


def score_item(item: Item, results: Sequence[tuple[float, bool]]) -> tuple[float, float]:
    """(acc, acc_norm) of one item from its per-choice (loglikelihood, is_greedy) results."""
    if len(results) != len(item.requests):
        raise RampEdgeError(
            f"runner returned {len(results)} results for {len(item.requests)} choices"
        )
    lls = np.array([float(ll) for ll, _ in results], dtype=np.float64)
    acc = float(int(np.argmax(lls)) == item.gold)
    acc_norm = float(int(np.argmax(lls / np.array(item.choice_chars, np.float64))) == item.gold)
    return acc, acc_norm


def mean_stderr(values: Sequence[float]) -> float | None:
    """lm-eval's ``mean_stderr``: sample standard deviation (ddof=1) / sqrt(n); None if n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance) / math.sqrt(n)


def evaluate_items(
    runner: Runner,
    task: Any,
    items: Sequence[Item],
    progress: Callable[[int], None] | None = None,
) -> TaskResult:
    """Score `items` of `task` with `runner`, one runner call per item (so KV reuse applies).

    Args:
        task: anything with ``name``, ``version`` and ``metrics`` (a `TaskInfo` or a
            `TaskDefinition`).
        progress: called with the number of items done after each item.
    """
    accs: list[float] = []
    norms: list[float] = []
    start = time.perf_counter()
    for done, item in enumerate(items, start=1):
        results = runner.loglikelihood(item.requests)
        acc, acc_norm = score_item(item, results)
        accs.append(acc)
        norms.append(acc_norm)
        if progress is not None:
            progress(done)
    elapsed = max(time.perf_counter() - start, 1e-9)
    with_norm = "acc_norm" in task.metrics
    result = TaskResult(
        task=task.name,
        version=task.version,
        n=len(items),
        acc=math.fsum(accs) / len(accs),
        acc_stderr=mean_stderr(accs),
        acc_norm=math.fsum(norms) / len(norms) if with_norm else None,
        acc_norm_stderr=mean_stderr(norms) if with_norm else None,
        items_per_s=len(items) / elapsed,
    )
    logger.info(
        "%s: acc %.4f over %d items (%.2f items/s)",
        task.name,
        result.acc,
        result.n,
        result.items_per_s,
    )
    return result
