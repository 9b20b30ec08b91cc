"""The policy's prior: action 0 is exactly the knapsack over the predicted errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("gymnasium")


@pytest.fixture(scope="module")
def task(stories_gguf):
    from ramp_edge.allocate.sensitivity import measure_sensitivity
    from ramp_edge.models import resolve
    from ramp_edge.rl.env import make_task
    from ramp_edge.source import open_source

    source = open_source(resolve(str(stories_gguf)))
    return make_task(source, measure_sensitivity(source))


def test_zero_actions_follow_the_predicted_knapsack(task):
    from ramp_edge.allocate import knapsack as ks
    from ramp_edge.rl.env import AllocationEnv
    from ramp_edge.rl.prior import fit_prior, with_prior

    primed = with_prior(task, fit_prior([task]))
    assert primed.predicted is not None and task.predicted is None
    for bpw in (4.5, 6.0):
        cap = primed.episode_capacity(bpw)
        table = primed.table(predicted=True)
        want = ks.choice_types(table, ks.allocate_knapsack(table, cap))
        env = AllocationEnv([primed], capacity=cap)
        env.reset(seed=0)
        done = False
        while not done:
            _, _, done, _, info = env.step(np.zeros(1, dtype=np.float32))
        assert env.types() == want
        assert info["used_bytes"] <= cap
        # without a prior, action 0 spends evenly: another allocation
        plain = AllocationEnv([task], capacity=cap)
        plain.reset(seed=0)
        done = False
        while not done:
            _, _, done, _, _ = plain.step(np.zeros(1, dtype=np.float32))
        assert plain.types() != want


def test_the_regression_travels_in_json(task):
    from ramp_edge.allocate.predicted import ErrorModel
    from ramp_edge.rl.prior import fit_prior, with_prior

    model = fit_prior([task])
    again = ErrorModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert with_prior(task, again).predicted == with_prior(task, model).predicted
    doc = model.to_dict()
    doc["types"] = doc["types"][:-1]
    with pytest.raises(Exception, match="candidate type list"):
        ErrorModel.from_dict(doc)
