"""AllocationEnv passes gymnasium's checker; the reward constants behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from ramp_edge.rl import reward as rw


def _fake_task(n: int = 12):
    """A synthetic model: n tensors of 4096 params, options Q2_K..Q8_0-like by bpw."""
    from ramp_edge.rl.env import ModelTask

    bpws = (2.5, 3.5, 4.5, 5.5, 6.5, 8.5)
    opts = tuple(
        tuple((f"T{b}", int(4096 * b / 8), float(2.0 ** (-1.8 * b)) * (1 + i % 3)) for b in bpws)
        for i in range(n)
    )
    feats = np.random.default_rng(0).normal(size=(n, 11)).astype(np.float32)
    return ModelTask(
        "fake",
        tuple(f"t{i}" for i in range(n)),
        (4096,) * n,
        feats,
        opts,
        fixed_bytes=1024,
        total_params=4096 * n + 256,
    )


def test_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    from ramp_edge.rl.env import AllocationEnv

    check_env(AllocationEnv([_fake_task()], seed=0), skip_render_check=True)


def test_over_budget_costs_more_than_under():
    cap = 1_000_000
    for frac in (0.001, 0.005, 0.01):
        over = rw.budget_penalty(cap * (1 + frac), cap)
        under = rw.budget_penalty(cap * (1 - frac), cap)
        assert over > under > 0
    assert rw.budget_penalty(cap, cap) == 0.0


def test_cliff_past_budget_eps():
    cap = 1_000_000
    cfg = rw.RewardConfig()
    just_in = rw.budget_penalty(cap * (1 + cfg.eps * 0.99), cap, cfg)
    just_out = rw.budget_penalty(cap * (1 + cfg.eps * 1.01), cap, cfg)
    assert just_out - just_in > cfg.cliff * 0.99
    # the cliff alone outweighs a whole uniform allocation's quality term (-1)
    assert cfg.cliff > 1.0


def test_shaping_telescopes_to_terminal_penalty():
    """Dense budget rewards sum to minus the terminal penalty (undiscounted)."""
    from ramp_edge.rl.env import AllocationEnv

    task = _fake_task()
    for action in (-1.0, 0.0, 1.0):
        env = AllocationEnv([task], capacity=task.capacity_for_bpw(4.5))
        env.reset(seed=0)
        total, done, quality = 0.0, False, 0.0
        while not done:
            _, r, done, _, info = env.step(np.array([action], dtype=np.float32))
            total += r
            quality += rw.quality_reward(info["err"], env.err_scale)
        expected = -rw.budget_penalty(env.used, env.capacity)
        assert total - quality == pytest.approx(expected, abs=1e-6)


def test_par_action_spends_the_budget_and_scores_about_minus_one():
    from ramp_edge.rl.env import AllocationEnv

    task = _fake_task()
    env = AllocationEnv([task], capacity=int(4096 * 12 * 4.5 / 8))
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        _, r, done, _, info = env.step(np.array([0.0], dtype=np.float32))
        total += r
    assert info["budget_ratio"] == pytest.approx(1.0)
    assert total == pytest.approx(-1.0)


def test_reward_config_rejects_cheap_overrun():
    from ramp_edge.errors import ConfigError

    with pytest.raises(ConfigError):
        rw.RewardConfig(over_coef=1.0, under_coef=2.0)
