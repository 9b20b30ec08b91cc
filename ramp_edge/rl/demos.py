"""Knapsack demonstrations: warm-start the SAC policy from the exact surrogate optimum.

Why. A plain SAC run on SmolLM2-135M (62k steps) ended 2x worse than the knapsack on the very
surrogate it was trained on. It is not the observation's fault: a [64, 64] network fitted by
regression to the knapsack's actions, from the same 14 inputs, reproduces the knapsack's error
on SmolLM2 (0.200 vs 0.196 at 4.6 bpw, 0.0132 vs 0.0130 at 5.5). The gap is exploration: one
episode is ~200 dependent choices with a budget shared between them, and random actions almost
never find the narrow band of allocations that spend the budget well. So, as in SAC from
demonstrations (Vecerik et al. 2017, arXiv:1707.08817; Nair et al. 2018, arXiv:1709.10089),
training starts from demonstrations: the knapsack's allocation of each training model at a grid
of budgets, replayed through `AllocationEnv` to get real (obs, action, reward, next obs)
transitions. They fill the replay buffer, the actor is pretrained on them by behaviour cloning,
then SAC fine-tunes on the reward (and, with --kld-every, on measured KLD of exported files,
which the knapsack never sees).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.sensitivity import SensitivityTable
from ramp_edge.rl.env import SPAN_BPW, AllocationEnv, ModelTask


@dataclass(frozen=True, slots=True)
class Demonstrations:
    """Transitions of knapsack episodes, stacked (one row per step)."""

    obs: np.ndarray  # (n, OBS_DIM) float32
    actions: np.ndarray  # (n, 1) float32 in [-1, 1]
    rewards: np.ndarray  # (n,) float32
    next_obs: np.ndarray  # (n, OBS_DIM) float32
    dones: np.ndarray  # (n,) float32
    episode_errors: tuple[float, ...]  # summed surrogate error per episode / the par error

    def __len__(self) -> int:
        return len(self.rewards)


def _episode(
    task: ModelTask, table: SensitivityTable, capacity: int, true_quality=None
) -> tuple[list, float]:
    """Replay the knapsack's allocation at `capacity` through the environment."""
    types = ks.choice_types(table, ks.allocate_knapsack(table, capacity))
    env = AllocationEnv(
        [task], capacity=capacity, true_quality=true_quality, true_every=1 if true_quality else 0
    )
    obs, _ = env.reset(seed=0)
    steps = []
    for name, n, opts in zip(task.names, task.n_params, task.options, strict=True):
        nbytes = next(o[1] for o in opts if o[0] == types[name])
        # The action that makes the environment pick this type: its bpw relative to the base.
        action = np.clip((nbytes * 8 / n - env.base_bpw()) / SPAN_BPW, -1.0, 1.0)
        action = np.array([action], dtype=np.float32)
        next_obs, reward, done, _, info = env.step(action)
        steps.append((obs, action, reward, next_obs, float(done)))
        obs = next_obs
    # the environment ends the episode at the last tensor; `info` then carries its summary
    return steps, info["err_total"] / info["err_scale"]


def knapsack_demonstrations(
    tasks: Sequence[ModelTask],
    budgets_bpw: Sequence[float],
    step_bpw: float = 0.1,
    true_quality=None,
) -> Demonstrations:
    """Knapsack episodes of every task on a `step_bpw` grid spanning the training budgets.

    With `true_quality` (the measured reward) each episode's terminal reward is measured too,
    and the grid is coarsened to 0.25 bpw (each episode costs a model evaluation)."""
    if true_quality is not None:
        step_bpw = max(step_bpw, 0.25)
    lo, hi = min(budgets_bpw) - 0.2, max(budgets_bpw) + 0.2
    grid = np.arange(lo, hi + 1e-9, step_bpw)
    rows: list = []
    errors = []
    for task in tasks:
        table = task.table()
        seen: set[int] = set()
        for bpw in grid:
            cap = int(min(max(task.capacity_for_bpw(float(bpw)), task.min_bytes), task.max_bytes))
            if cap in seen:
                continue
            seen.add(cap)
            steps, err = _episode(task, table, cap, true_quality)
            rows.extend(steps)
            errors.append(err)
    obs, act, rew, nxt, done = (np.asarray(x) for x in zip(*rows, strict=True))
    return Demonstrations(
        obs.astype(np.float32),
        act.reshape(-1, 1).astype(np.float32),
        rew.astype(np.float32),
        nxt.astype(np.float32),
        done.astype(np.float32),
        tuple(errors),
    )


def fill_replay_buffer(model, demos: Demonstrations) -> None:
    """Add every demonstration transition to an SB3 off-policy model's replay buffer."""
    for i in range(len(demos)):
        model.replay_buffer.add(
            demos.obs[i : i + 1],
            demos.next_obs[i : i + 1],
            demos.actions[i : i + 1],
            demos.rewards[i : i + 1],
            demos.dones[i : i + 1],
            [{}],
        )


def behaviour_clone(
    model, demos: Demonstrations, epochs: int = 150, batch: int = 256, seed: int = 0
) -> float:
    """Fit the SAC actor's mean action to the demonstrations; returns the final MSE.

    The log-std is pulled towards exp(-2.5) ~ 0.08 (in pre-tanh units) so that the stochastic
    policy SAC fine-tunes explores near the demonstrations instead of over the whole range.
    """
    import torch

    actor = model.actor
    obs = torch.as_tensor(demos.obs)
    target = torch.as_tensor(demos.actions)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
    n = len(demos)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for k in range(0, n, batch):
            idx = perm[k : k + batch]
            mean, log_std, _ = actor.get_action_dist_params(obs[idx])
            loss = ((torch.tanh(mean) - target[idx]) ** 2).mean()
            loss = loss + 0.01 * ((log_std + 2.5) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        mean, _, _ = actor.get_action_dist_params(obs)
        return float(((torch.tanh(mean) - target) ** 2).mean())
