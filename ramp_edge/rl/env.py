"""`AllocationEnv`: a gymnasium environment in which one episode quantizes one model.

Each step is one quantizable tensor, in file order. The observation (OBS_DIM = 29) is

    the tensor's 11 features (`features_adapter`: activation and weight statistics, relative
        depth, role code, fan-in, size share),
    what the tensor's file and row length allow (`tensor_extras`, 14 numbers): the source
        type's bits per weight in action units (our sources are already quantized, and keeping
        the source type costs no error), 1 if K-quants (256-blocks) fit its rows else 0 (the
        K-quant fallback: a 576-wide row takes Q5_0 for Q4_K), the smallest and the largest
        legal candidate in action units, and the role one-hot (10 roles of
        `features.embed.ROLES`),
    the budget state: bits used so far / capacity, par action (the bits per weight left per
        weight left, in action units, below), fraction of tensors left, and the base action
        (what action 0 asks for this tensor, below).

The action is one number in [-1, 1], read as a change of bits per weight around a base: the
target is ``base + action * SPAN_BPW``; the tensor takes the candidate type (its
SensitivityTable options: legal types only, llama.cpp's fallbacks applied) whose bits per
weight are nearest. With a prior (`ModelTask.predicted`, `ramp_edge.rl.prior`: the knapsack
over errors predicted from the observation) the base is the prior's bits per weight for the
tensor plus the drift of the remaining budget from the prior's plan, spread evenly; without
one it is par, ``bpw_left``, the remaining budget spread evenly over the remaining weights.
Action 0 therefore follows the prior (or spends evenly), and the policy only learns where to
deviate: budget tracking is built in, and the same action means the same thing on every model
and budget, which zero-shot transfer needs. A bpw target rather than
an index into each tensor's list matters because the lists differ: SmolLM2's 576-wide rows fit
no K-quant, its 1536-wide ffn_down rows do. The observation's "par action" places ``bpw_left``
on the fixed scale [BPW_LO, BPW_HI] -> [-1, 1].

Rewards are in `ramp_edge.rl.reward`; episodes are sampled over the given models and budgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.sensitivity import SensitivityTable, TensorCosts
from ramp_edge.errors import BudgetError, ConfigError
from ramp_edge.rl import reward as rw
from ramp_edge.rl.features_adapter import N_FEATURES, ROLES

logger = logging.getLogger(__name__)

BPW_LO = 1.5  # just under IQ1_S (1.5625 bpw): the smallest type maps to action -1
BPW_HI = 8.5  # Q8_0: larger types buy nothing measurable at these budgets
SPAN_BPW = 3.0  # action +-1 = 3 bpw above/below par: Q8_0 vs Q5_K, or Q2_K vs Q5_K
REF_BPW = 4.5  # the quality scale is the summed error at the type nearest 4.5 bpw (Q4_0-like)
JITTER_BPW = 0.15  # training budgets vary by up to this much, so the policy sees a continuum
N_BUDGET_STATE = 4  # used / capacity, par action, fraction left, base action (the prior)
N_EXTRA = 4 + len(ROLES)  # source bpw, K-quant legal, min/max legal bpw, role one-hot
OBS_DIM = N_FEATURES + N_EXTRA + N_BUDGET_STATE
OBS_BOUND = 20.0  # features are clipped to +-16; budget state to +-4


def _pad(n: int, align: int = 32) -> int:
    return (n + align - 1) // align * align


def action_to_bpw(action: float) -> float:
    a = float(np.clip(action, -1.0, 1.0))
    return BPW_LO + (a + 1.0) / 2.0 * (BPW_HI - BPW_LO)


def bpw_to_action(bpw: float) -> float:
    return 2.0 * (bpw - BPW_LO) / (BPW_HI - BPW_LO) - 1.0


@dataclass(frozen=True, slots=True)
class ModelTask:
    """What an episode needs about one model: per tensor features, options and sizes."""

    model_id: str
    names: tuple[str, ...]
    n_params: tuple[int, ...]
    features: np.ndarray  # (n_tensors, N_FEATURES) float32
    options: tuple[tuple[tuple[str, int, float], ...], ...]  # (type, padded bytes, err), bpw asc
    fixed_bytes: int  # header + tensors not chosen, padded
    total_params: int  # every parameter of the model (what bpw budgets count)
    extras: np.ndarray | None = None  # (n_tensors, N_EXTRA) float32, `tensor_extras`
    source_types: tuple[str | None, ...] | None = None  # each tensor's type in the source file
    # per tensor, per option: the error the policy's prior predicts (`rl.prior.with_prior`)
    predicted: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError(f"{self.model_id}: no quantizable tensors")
        if self.features.shape != (len(self.names), N_FEATURES):
            raise ConfigError(f"{self.model_id}: features shape {self.features.shape}")
        if self.extras is None:
            object.__setattr__(self, "extras", _extras_without_source(self))
        assert self.extras is not None
        if self.extras.shape != (len(self.names), N_EXTRA):
            raise ConfigError(f"{self.model_id}: extras shape {self.extras.shape}")
        if any(not o for o in self.options):
            raise ConfigError(f"{self.model_id}: a tensor has no candidate types")

    @property
    def min_bytes(self) -> int:
        return sum(o[0][1] for o in self.options)

    @property
    def max_bytes(self) -> int:
        return sum(o[-1][1] for o in self.options)

    def capacity_for_bpw(self, bpw: float) -> int:
        """Bytes the chosen tensors may take for a whole-file budget of `bpw`."""
        return int(bpw * self.total_params / 8) - self.fixed_bytes

    def episode_capacity(self, bpw: float) -> int:
        """Capacity of a training/evaluation episode at `bpw`: budgets below the model's smallest
        file become "just above the minimum" episodes, above its largest the largest."""
        return int(min(max(self.capacity_for_bpw(bpw), self.min_bytes * 1.01), self.max_bytes))

    @property
    def sizes(self) -> np.ndarray:
        return np.asarray(self.n_params, dtype=np.float64)

    def table(self, predicted: bool = False) -> SensitivityTable:
        """The options as a SensitivityTable (bytes descending), for the knapsack; with
        `predicted` the errors are the prior's predictions instead of the task's own."""
        rows = []
        for i, (name, n, opts) in enumerate(
            zip(self.names, self.n_params, self.options, strict=True)
        ):
            if predicted:
                assert self.predicted is not None
                opts = tuple((o[0], o[1], e) for o, e in zip(opts, self.predicted[i], strict=True))
            rows.append(
                TensorCosts(name, (n,), n, tuple(sorted(opts, key=lambda o: (-o[1], o[2]))))
            )
        return SensitivityTable(self.model_id, tuple(rows), self.fixed_bytes)

    def prior_bits(self, capacity: int) -> np.ndarray | None:
        """Bits per tensor of the knapsack over the predicted errors at `capacity` bytes (the
        policy's prior, `rl.prior`); None without predictions."""
        if self.predicted is None:
            return None
        table = self.table(predicted=True)
        types = ks.choice_types(table, ks.allocate_knapsack(table, capacity))
        return np.asarray(
            [
                next(o[1] for o in opts if o[0] == types[name]) * 8.0
                for name, opts in zip(self.names, self.options, strict=True)
            ],
            dtype=np.float64,
        )


def tensor_extras(
    names: Sequence[str],
    n_params: Sequence[int],
    options: Sequence[Sequence[tuple[str, int, float]]],
    source_types: Sequence[str | None],
    row_lengths: Sequence[int],
) -> np.ndarray:
    """(n_tensors, N_EXTRA) float32: what the file and row shape allow (see the module doc)."""
    from ramp_edge.features.embed import role_of
    from ramp_edge.quant.catalogue import CATALOGUE

    rows = []
    for name, n, opts, src, row in zip(
        names, n_params, options, source_types, row_lengths, strict=True
    ):
        bpws = [o[1] * 8 / n for o in opts]
        src_bpw = CATALOGUE[src].bits_per_weight if src in CATALOGUE else max(bpws)
        onehot = [0.0] * len(ROLES)
        onehot[ROLES.index(role_of(name))] = 1.0
        rows.append(
            [
                np.clip(bpw_to_action(src_bpw), -4.0, 4.0),
                1.0 if row % 256 == 0 else 0.0,
                np.clip(bpw_to_action(min(bpws)), -4.0, 4.0),
                np.clip(bpw_to_action(max(bpws)), -4.0, 4.0),
                *onehot,
            ]
        )
    return np.asarray(rows, dtype=np.float32).reshape(len(names), N_EXTRA)


def _extras_without_source(task: ModelTask) -> np.ndarray:
    """Extras for a task built without its source (tests): the largest option as source type,
    row length unknown (K-quant flag from whether any 256-block option is listed)."""
    from ramp_edge.quant.catalogue import CATALOGUE

    rows = [
        256 if any(CATALOGUE[o[0]].block_size == 256 for o in opts if o[0] in CATALOGUE) else 32
        for opts in task.options
    ]
    return tensor_extras(task.names, task.n_params, task.options, [None] * len(rows), rows)


def make_task(
    source: Any,
    table: Any,
    features: np.ndarray | None = None,
    header_bytes: int | None = None,
    activations: bool = True,
) -> ModelTask:
    """A ModelTask from an opened model and a SensitivityTable (measured, or sizes only).

    `table` is read by duck typing (model_id, tensors with name/n_params/options, fixed_bytes),
    so the measurement-free path can pass `ramp_edge.allocate.repair.size_table`'s.
    """
    from ramp_edge.rl.features_adapter import tensor_features

    if features is None:
        features = tensor_features(source, table, activations=activations)
    if header_bytes is None:
        header_bytes = _header_bytes(source)
    options = []
    for t in table.tensors:
        opts = sorted(
            ((o[0], _pad(int(o[1])), float(o[2])) for o in t.options), key=lambda o: (o[1], o[2])
        )
        options.append(tuple(opts))
    specs = {s.name: s for s in source.specs}
    names = tuple(t.name for t in table.tensors)
    n_params = tuple(int(t.n_params) for t in table.tensors)
    extras = tensor_extras(
        names,
        n_params,
        options,
        [specs[n].source_type if n in specs else None for n in names],
        [
            specs[n].row_length if n in specs else int(t.shape[0])
            for n, t in zip(names, table.tensors, strict=True)
        ],
    )
    return ModelTask(
        model_id=table.model_id,
        names=names,
        n_params=n_params,
        features=np.asarray(features, dtype=np.float32),
        options=tuple(options),
        fixed_bytes=int(header_bytes) + _pad(int(table.fixed_bytes)),
        total_params=int(source.info.n_params),
        extras=extras,
        source_types=tuple(specs[n].source_type if n in specs else None for n in names),
    )


def _header_bytes(source: Any) -> int:
    """The exported file's header size (metadata + tensor infos), from a uniform Q4_0 plan."""
    from ramp_edge.errors import RampEdgeError
    from ramp_edge.quant.export import plan_export
    from ramp_edge.recipe import uniform

    try:
        return plan_export(source, uniform(source, "Q4_0")).header_bytes
    except RampEdgeError as err:
        logger.warning("could not plan a header (%s); assuming 4096 bytes", err)
        return 4096


def pick_option(options: Sequence[tuple[str, int, float]], n_params: int, target_bpw: float) -> int:
    """Index of the option whose bits per weight are nearest `target_bpw` (ties: smaller)."""
    return min(
        range(len(options)), key=lambda i: (abs(options[i][1] * 8 / n_params - target_bpw), i)
    )


def quality_scale(task: ModelTask) -> float:
    """Summed error with every tensor at its non-free option nearest REF_BPW.

    Free options (error 0: the source's own type, copied verbatim) are skipped, or a model
    shipped at 4.5 bpw would get a zero scale. Fixed per model, independent of the budget.
    """
    total = 0.0
    for opts, n in zip(task.options, task.n_params, strict=True):
        paid = [o for o in opts if o[2] > 0] or list(opts)
        total += paid[pick_option(paid, n, REF_BPW)][2]
    return max(total, 1e-12)


class AllocationEnv(gym.Env):
    """Walk one model's tensors and pick a type for each under a byte capacity.

    Args:
        tasks: models to sample episodes from.
        budgets_bpw: whole-file budgets (bpw) to sample from; ignored when `capacity` is set.
        capacity: a fixed byte capacity for the chosen tensors (apply mode; one task only).
        config: reward constants.
        true_quality: optional callable(task, {name: type}) -> quality loss (mean KLD over a
            per-model reference KLD, `rl.reward`), measured on the assembled model; called at
            the end of every `true_every`-th episode (0: never). With `true_every` 1 it is the
            whole quality term (the per-tensor surrogate is off): the paper's reward.
        seed: for sampling tasks and budgets.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        tasks: Sequence[ModelTask],
        budgets_bpw: Sequence[float] = (3.5, 4.0, 4.5, 5.0, 5.5, 6.0),
        capacity: int | None = None,
        config: rw.RewardConfig = rw.DEFAULT_CONFIG,
        true_quality: Callable[[ModelTask, Mapping[str, str]], float] | None = None,
        true_every: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        if not tasks:
            raise ConfigError("AllocationEnv needs at least one model")
        if capacity is not None and len(tasks) != 1:
            raise ConfigError("a fixed capacity needs exactly one model")
        if capacity is None and not budgets_bpw:
            raise ConfigError("AllocationEnv needs budgets or a capacity")
        self.tasks = tuple(tasks)
        self.budgets_bpw = tuple(float(b) for b in budgets_bpw)
        self.fixed_capacity = capacity
        self.config = config
        self.true_quality = true_quality
        self.true_every = int(true_every)
        self.observation_space = spaces.Box(
            -OBS_BOUND, OBS_BOUND, shape=(OBS_DIM,), dtype=np.float32
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self.episodes = 0
        self._priors: dict[tuple[int, int], np.ndarray | None] = {}
        self._start(self.tasks[0], self._capacity(self.tasks[0]))

    # ------------------------------------------------------------------ episode state

    def _capacity(self, task: ModelTask) -> int:
        if self.fixed_capacity is not None:
            cap = int(self.fixed_capacity)
            if cap < task.min_bytes:
                raise BudgetError(
                    f"capacity {cap:,} bytes is below the smallest allocation ({task.min_bytes:,})"
                )
            return min(cap, task.max_bytes)
        bpw = float(self._rng.choice(self.budgets_bpw))
        bpw += float(self._rng.uniform(-JITTER_BPW, JITTER_BPW))
        return task.episode_capacity(bpw)

    def _start(self, task: ModelTask, capacity: int) -> None:
        self.task = task
        self.capacity = capacity
        self.i = 0
        self.used = 0
        self.choice: list[int] = []
        self.targets: list[float] = []  # bits per weight asked for, per tensor decided
        self.actions: list[float] = []  # the policy's action (bits vs par / SPAN_BPW)
        self.par_bpw0 = capacity * 8 / float(task.sizes.sum())
        self.err_scale = quality_scale(task)
        self._params_left = float(task.sizes.sum())
        key = (id(task), capacity)
        if key not in self._priors:
            self._priors[key] = task.prior_bits(capacity)
        self.prior = self._priors[key]  # bits per tensor, or None: par is the base
        self._prior_left = float(self.prior.sum()) if self.prior is not None else 0.0

    def base_bpw(self) -> float:
        """What action 0 asks for the current tensor: the prior's bits per weight, plus the
        remaining budget's drift from the prior's plan spread evenly; without a prior, par."""
        bpw_left = self._bpw_left()
        if self.prior is None or self.i >= len(self.task.names) or self._params_left <= 0:
            return bpw_left
        n = self.task.n_params[self.i]
        return self.prior[self.i] / n + bpw_left - self._prior_left / self._params_left

    def _projected(self) -> float:
        """Final bytes if every remaining tensor got exactly the remaining average bpw."""
        if self.i >= len(self.task.names):
            return float(self.used)
        return self.used + self._params_left * self.par_bpw0 / 8

    def _bpw_left(self) -> float:
        """The remaining budget spread evenly over the remaining weights, in bits per weight."""
        if self._params_left <= 0:
            return 0.0
        return (self.capacity - self.used) * 8 / self._params_left

    def _obs(self) -> np.ndarray:
        task = self.task
        n = len(task.names)
        k = min(self.i, n - 1)
        bpw_left = self._bpw_left()
        state = np.array(
            [
                np.clip(self.used / self.capacity, 0.0, 4.0),
                np.clip(bpw_to_action(bpw_left), -4.0, 4.0),
                (n - self.i) / n,
                np.clip(bpw_to_action(self.base_bpw()), -4.0, 4.0),
            ],
            dtype=np.float32,
        )
        return np.concatenate([task.features[k], task.extras[k], state]).astype(np.float32)

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        task = self.tasks[int(self._rng.integers(len(self.tasks)))]
        self._start(task, self._capacity(task))
        return self._obs(), {"model_id": task.model_id, "capacity": self.capacity}

    def step(self, action):
        task = self.task
        a = float(np.clip(np.asarray(action, dtype=np.float32).reshape(-1)[0], -1.0, 1.0))
        opts = task.options[self.i]
        target = self.base_bpw() + a * SPAN_BPW
        idx = pick_option(opts, task.n_params[self.i], target)
        if self.prior is not None:
            self._prior_left -= self.prior[self.i]
        qtype, nbytes, err = opts[idx]
        self.targets.append(target)
        self.actions.append(a)
        before = self._projected()
        self.used += nbytes
        self._params_left -= task.n_params[self.i]
        self.choice.append(idx)
        self.i += 1
        terminated = self.i >= len(task.names)
        after = self._projected()
        # With a measured quality term every `true_every` episodes... and with true_every == 1
        # (the paper's reward) the surrogate is off: the whole quality signal is the KLD.
        measured_only = self.true_quality is not None and self.true_every == 1
        reward = 0.0 if measured_only else rw.quality_reward(err, self.err_scale)
        reward += rw.shaped_budget_reward(before, after, self.capacity, self.config)
        info: dict[str, Any] = {"type": qtype, "bytes": nbytes, "err": err}
        if terminated:
            self.episodes += 1
            info.update(self.summary())
            if (
                self.true_quality is not None
                and self.true_every > 0
                and self.episodes % self.true_every == 0
            ):
                loss = float(self.true_quality(task, self.types()))
                info["true_quality"] = loss
                reward -= self.config.true_coef * loss
        obs = self._obs() if not terminated else np.zeros(OBS_DIM, dtype=np.float32)
        return obs, float(reward), terminated, False, info

    # ------------------------------------------------------------------ results

    def types(self) -> dict[str, str]:
        """Tensor name -> chosen type for the tensors decided so far."""
        return {self.task.names[i]: self.task.options[i][j][0] for i, j in enumerate(self.choice)}

    def summary(self) -> dict[str, Any]:
        err = sum(self.task.options[i][j][2] for i, j in enumerate(self.choice))
        return {
            "used_bytes": self.used,
            "capacity": self.capacity,
            "budget_ratio": self.used / self.capacity,
            "err_total": err,
            "err_scale": self.err_scale,
        }
