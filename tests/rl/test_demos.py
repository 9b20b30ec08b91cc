"""Knapsack demonstrations: exact replay, and a cloned policy that matches the knapsack."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")


def _task(n: int = 48, seed: int = 0):
    """Synthetic model whose tensors differ in sensitivity by up to 64x, told by feature 0."""
    from ramp_edge.rl.env import ModelTask

    rng = np.random.default_rng(seed)
    log_sens = rng.uniform(0, 6, size=n)
    bpws = (2.5, 3.5, 4.5, 5.5, 6.5, 8.5)
    opts = tuple(
        tuple((f"T{b}", int(4096 * b / 8), float(2.0 ** (-1.8 * b + s))) for b in bpws)
        for s in log_sens
    )
    feats = np.zeros((n, 11), dtype=np.float32)
    feats[:, 0] = log_sens - 3
    return ModelTask(
        "synthetic", tuple(f"t{i}" for i in range(n)), (4096,) * n, feats, opts, 1024, 4096 * n
    )


def _rollout_error(task, capacity, act) -> float:
    from ramp_edge.rl.env import AllocationEnv

    env = AllocationEnv([task], capacity=capacity)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        obs, _, done, _, info = env.step(act(obs))
    assert info["budget_ratio"] <= 1.01
    return info["err_total"]


def test_demonstrations_replay_the_knapsack_exactly():
    from ramp_edge.allocate import knapsack as ks
    from ramp_edge.rl import demos as dm
    from ramp_edge.rl.env import quality_scale

    task = _task()
    d = dm.knapsack_demonstrations([task], (4.0, 5.0))
    table = task.table()
    assert len(d) == len(d.episode_errors) * len(task.names)
    assert np.all(np.abs(d.actions) <= 1) and d.dones.sum() == len(d.episode_errors)
    cap = task.capacity_for_bpw(4.5)
    best = ks.choice_error(table, ks.allocate_knapsack(table, cap)) / quality_scale(task)
    assert min(abs(e - best) for e in d.episode_errors) < 1e-9


def test_cloned_policy_matches_knapsack_and_beats_even_spending():
    from stable_baselines3 import SAC

    from ramp_edge.allocate import knapsack as ks
    from ramp_edge.rl import demos as dm
    from ramp_edge.rl.env import AllocationEnv

    task = _task()
    model = SAC("MlpPolicy", AllocationEnv([task], seed=0), seed=0, device="cpu")
    d = dm.knapsack_demonstrations([task], (4.0, 4.5, 5.0))
    dm.fill_replay_buffer(model, d)
    assert model.replay_buffer.size() == len(d)
    assert dm.behaviour_clone(model, d, epochs=300) < 0.01

    table = task.table()
    for bpw in (4.2, 4.7):
        cap = task.capacity_for_bpw(bpw)
        best = ks.choice_error(table, ks.allocate_knapsack(table, cap))
        even = _rollout_error(task, cap, lambda obs: np.zeros(1, dtype=np.float32))
        cloned = _rollout_error(task, cap, lambda obs: model.predict(obs, deterministic=True)[0])
        assert cloned <= 1.15 * best, (bpw, cloned, best)
        assert cloned < 0.8 * even, (bpw, cloned, even)
