"""The policy's prior: the knapsack over per-tensor errors predicted from the observation.

Why. A behaviour clone of the knapsack, trained on Gemma-3 and applied zero shot to SmolLM2,
was 1.5-5x worse than the knapsack over errors *predicted* by a ridge regression on the same
inputs (`ramp_edge.allocate.predicted`; first bench/transfer run: KLD 0.31 vs 0.11 at 4.8 bpw).
The regression transfers across families; a network re-deriving the whole budget trade-off from
one family's demonstrations did not. So the policy acts relative to that prediction: at the
start of each episode the knapsack over the predicted errors gives every tensor a prior bits
per weight, and the policy's action moves each tensor up or down from it (`AllocationEnv`).
Action 0 everywhere is exactly the measurement-free predicted knapsack; demonstrations (the
knapsack over the *measured* table) teach the corrections, and SAC on the measured reward can
find more. The regression is fitted on the training tasks' measured tables and travels in the
policy's metadata, so applying a policy still measures nothing on the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ramp_edge.allocate.predicted import ErrorModel
from ramp_edge.rl.env import ModelTask


def _observations(task: ModelTask) -> np.ndarray:
    assert task.extras is not None
    return np.concatenate([task.features, task.extras], 1).astype(np.float64)


def _source_types(task: ModelTask) -> list[str]:
    """Each tensor's type in the source file; unknown (synthetic tasks): its largest option."""
    if task.source_types is not None:
        return [s or opts[-1][0] for s, opts in zip(task.source_types, task.options, strict=True)]
    return [opts[-1][0] for opts in task.options]


def fit_prior(tasks: Sequence[ModelTask]) -> ErrorModel:
    """The error regression over the tasks' measured tables (see `allocate.predicted`)."""
    return ErrorModel.fit(
        [t.table() for t in tasks],
        [_observations(t) for t in tasks],
        [_source_types(t) for t in tasks],
    )


def with_prior(task: ModelTask, model: ErrorModel) -> ModelTask:
    """`task` with every option's predicted error filled in (`ModelTask.predicted`)."""
    table = model.predict_table(task.table(), _observations(task), _source_types(task))
    by_type = [{o[0]: o[2] for o in t.options} for t in table.tensors]
    predicted = tuple(
        tuple(float(errs[o[0]]) for o in opts)
        for errs, opts in zip(by_type, task.options, strict=True)
    )
    return replace(task, predicted=predicted)
