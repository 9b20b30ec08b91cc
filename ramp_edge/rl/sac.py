"""Train, save and apply the RAMP allocation policy (Soft Actor-Critic, stable-baselines3).

`train` fits a SAC policy on one or more models' `AllocationEnv`s at a spread of budgets and
saves it as an SB3 zip with an extra member `ramp_edge.json` (ramp-edge version, observation
layout, reward constants, training models/budgets/steps, system info; SB3 itself stores its
version and system info). `policy_choices` runs the policy deterministically on any model, zero
shot, computing only its observation (weight and activation statistics), and returns its
choices and preferences; `ramp_edge.allocate.repair` repairs them to the budget from exact
sizes and those preferences (no measured errors).

Reference: Haarnoja et al. 2018, "Soft Actor-Critic" (arXiv:1801.01290); SB3's `SAC`.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from ramp_edge import __version__
from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.rl import reward as rw
from ramp_edge.rl.env import (
    BPW_HI,
    BPW_LO,
    OBS_DIM,
    SPAN_BPW,
    AllocationEnv,
    ModelTask,
    make_task,
    pick_option,
)

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]
META_MEMBER = "ramp_edge.json"
# Format 4: 29 inputs (11 features + 14 source/legality/role extras + 4 budget state), actions
# relative to the prior (`rl.prior`, its regression in the metadata). Older formats are
# refused by obs_dim.
POLICY_FORMAT = 4
DEFAULT_BUDGETS_BPW = (3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5)

# SAC settings. Small networks: 29 inputs, 1 output; [64, 64] keeps policy.zip ~100 kB and
# updates fast on 2 CPU cores. gamma 0.99: an episode is ~200 steps and the budget term is
# densely shaped, so a ~100-step horizon suffices. learning_starts: one SmolLM2 episode of
# random actions before the first update.
SAC_KWARGS: dict[str, Any] = {
    "learning_rate": 3e-4,
    "buffer_size": 200_000,
    "batch_size": 128,
    "gamma": 0.99,
    "tau": 0.01,
    "train_freq": 1,
    "gradient_steps": 1,
    "ent_coef": "auto_0.001",
    "policy_kwargs": {"net_arch": [64, 64]},
}


@dataclass(frozen=True, slots=True)
class TrainResult:
    path: Path
    steps: int
    seconds: float
    episodes: int
    models: tuple[str, ...]
    budgets_bpw: tuple[float, ...]
    mean_budget_ratio: float  # last episodes: used bytes / capacity
    mean_err_ratio: float  # last episodes: summed error / par allocation's
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "episodes": self.episodes,
            "models": list(self.models),
            "budgets_bpw": list(self.budgets_bpw),
            "mean_budget_ratio": round(self.mean_budget_ratio, 4),
            "mean_err_ratio": round(self.mean_err_ratio, 4),
        }


class _Callback(BaseCallback):
    """Reports progress, records episode summaries and writes periodic checkpoints."""

    def __init__(
        self,
        total: int,
        progress: ProgressFn | None,
        checkpoint: Path | None,
        every: int,
        meta: dict[str, Any],
    ):
        super().__init__()
        self.total = total
        self.progress = progress
        self.checkpoint = checkpoint
        self.every = every
        self.meta = meta
        self.episodes: list[dict[str, Any]] = []
        self._start = 0

    def _on_training_start(self) -> None:
        self._start = self.num_timesteps

    def _on_step(self) -> bool:
        for info, done in zip(
            self.locals.get("infos", []), self.locals.get("dones", []), strict=False
        ):
            if done and "budget_ratio" in info:
                self.episodes.append(
                    {
                        "budget_ratio": info["budget_ratio"],
                        "err_ratio": info["err_total"] / info["err_scale"],
                    }
                )
        done_steps = self.num_timesteps - self._start
        if self.progress and done_steps % 64 == 0:
            last = self.episodes[-1] if self.episodes else None
            desc = (
                "SAC"
                if last is None
                else (
                    f"SAC ep {len(self.episodes)} size {last['budget_ratio']:.3f} "
                    f"err {last['err_ratio']:.3f}"
                )
            )
            self.progress(done_steps, self.total, desc)
        if self.checkpoint is not None and self.every > 0 and done_steps % self.every == 0:
            save_policy(self.model, self.checkpoint, self.meta)
        return True


def system_info() -> dict[str, str]:
    import gymnasium
    import stable_baselines3
    import torch

    return {
        "ramp_edge": __version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _write_metadata(path: Path, meta: Mapping[str, Any]) -> None:
    with zipfile.ZipFile(path, "a") as zf:
        if META_MEMBER in zf.namelist():  # resumed from a file that already has one
            return
        zf.writestr(META_MEMBER, json.dumps(meta, indent=2))


def save_policy(model: SAC, path: Path, meta: dict[str, Any]) -> None:
    """Save the SB3 zip with the ramp-edge metadata member, atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".partial.zip")
    model.save(tmp)
    doc = dict(meta)
    doc["steps"] = int(model.num_timesteps)
    doc["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_metadata(tmp, doc)
    tmp.replace(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ramp-edge metadata stored in a policy zip."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"policy file {path} not found")
    try:
        with zipfile.ZipFile(path) as zf:
            if META_MEMBER not in zf.namelist():
                raise ArtifactError(f"{path} is not a ramp-edge policy (no {META_MEMBER})")
            meta = json.loads(zf.read(META_MEMBER))
    except (zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is not a readable policy zip ({err})") from None
    if int(meta.get("format", 0)) > POLICY_FORMAT:
        raise ArtifactError(f"{path} was written by a newer ramp-edge; upgrade ramp-edge")
    if int(meta.get("obs_dim", -1)) != OBS_DIM:
        raise ArtifactError(
            f"{path} expects {meta.get('obs_dim')} inputs; this version gives {OBS_DIM}"
        )
    return meta


def train(
    tasks: Sequence[ModelTask],
    out: str | Path,
    steps: int = 20_000,
    budgets_bpw: Sequence[float] = DEFAULT_BUDGETS_BPW,
    resume: str | Path | None = None,
    seed: int = 0,
    config: rw.RewardConfig = rw.DEFAULT_CONFIG,
    true_quality: Callable[[ModelTask, Mapping[str, str]], float] | None = None,
    true_every: int = 0,
    checkpoint_every: int = 5_000,
    progress: ProgressFn | None = None,
    demos: bool = True,
    eval_every: int = 0,
    eval_budgets_bpw: Sequence[float] | None = None,
) -> TrainResult:
    """Train (or continue training) a policy and save it to `out`.

    Args:
        tasks: models to train on (`env.make_task(source, table)`).
        out: the policy zip to write; checkpoints go to `<out stem>.ckpt.zip` beside it.
        steps: environment steps (one step = one tensor).
        budgets_bpw: whole-file budgets sampled per episode.
        resume: a policy/checkpoint zip to continue from (its optimiser state included).
        true_quality, true_every: optional measured quality at episode end (see AllocationEnv);
            with true_every 1 it is the whole quality term, in training, in the demonstrations'
            rewards and in the periodic evaluation (the learning curve).
        eval_every, eval_budgets_bpw: steps between deterministic evaluations (default
            max(1000, steps // 10)) and their budgets (default: the training budgets).
        progress: callback(done_steps, total_steps, description).
        demos: start from knapsack demonstrations (`ramp_edge.rl.demos`): replay buffer,
            behaviour cloning and a critic warm-up before SAC; the best policy seen by the
            periodic deterministic evaluation is the one saved.
    """
    import torch

    from ramp_edge.allocate.predicted import ErrorModel
    from ramp_edge.rl.prior import fit_prior, with_prior

    torch.set_num_threads(1)  # tiny networks: threads cost more than they give on shared cores
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The prior's regression: the resumed policy's own, else fitted on the tasks' measured tables.
    prior_doc = read_metadata(resume).get("prior") if resume is not None else None
    prior = ErrorModel.from_dict(prior_doc) if prior_doc else fit_prior(tasks)
    tasks = [with_prior(t, prior) for t in tasks]
    env = AllocationEnv(
        tasks,
        budgets_bpw,
        config=config,
        true_quality=true_quality,
        true_every=true_every,
        seed=seed,
    )
    if resume is not None:
        read_metadata(resume)
        model = SAC.load(str(resume), env=env, device="cpu")
        logger.info("resuming from %s at step %d", resume, model.num_timesteps)
    else:
        model = SAC(
            "MlpPolicy",
            env,
            seed=seed,
            device="cpu",
            verbose=0,
            learning_starts=0 if demos else min(256, max(1, steps // 4)),
            **SAC_KWARGS,
        )
    warm: dict[str, Any] = {}
    if demos and resume is None:
        warm = _warm_start(
            model,
            tasks,
            budgets_bpw,
            seed,
            progress,
            true_quality=true_quality if true_every == 1 else None,
        )
    meta: dict[str, Any] = {
        "format": POLICY_FORMAT,
        "kind": "ramp-edge/policy",
        "obs_dim": OBS_DIM,
        "features": "layer embedding with activation statistics + source/legality/role extras",
        "quality": "measured KLD" if true_quality is not None and true_every == 1 else "surrogate",
        "bpw_range": [BPW_LO, BPW_HI],
        "action": {"kind": "residual-bpw", "base": "prior", "span_bpw": SPAN_BPW},
        "prior": prior.to_dict(),
        "reward": config.to_dict(),
        "sac": dict(SAC_KWARGS),
        "models": [t.model_id for t in tasks],
        "budgets_bpw": list(budgets_bpw),
        "seed": seed,
        "system": system_info(),
    }
    if warm:
        meta["demonstrations"] = warm
    ckpt = out.with_name(out.stem + ".ckpt.zip")
    cb = _Callback(steps, progress, ckpt, checkpoint_every, meta)
    measured = true_quality is not None and true_every == 1
    best = _KeepBest(
        tasks,
        eval_budgets_bpw or budgets_bpw,
        config,
        every=eval_every or max(1000, steps // 10),
        true_quality=true_quality if measured else None,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=[cb, best], reset_num_timesteps=resume is None)
    seconds = time.perf_counter() - start
    meta["evaluation"] = best.restore(model)
    meta["train_seconds"] = round(seconds, 2)
    save_policy(model, out, meta)
    last = cb.episodes[-20:]
    if progress:
        progress(steps, steps, "SAC done")
    return TrainResult(
        out,
        int(model.num_timesteps),
        seconds,
        len(cb.episodes),
        tuple(meta["models"]),
        tuple(float(b) for b in budgets_bpw),
        float(np.mean([e["budget_ratio"] for e in last])) if last else float("nan"),
        float(np.mean([e["err_ratio"] for e in last])) if last else float("nan"),
        meta,
    )


def evaluate(
    model: SAC,
    tasks: Sequence[ModelTask],
    budgets_bpw: Sequence[float],
    config: rw.RewardConfig = rw.DEFAULT_CONFIG,
    true_quality: Callable[[ModelTask, Mapping[str, str]], float] | None = None,
) -> float:
    """Mean deterministic episode return over every task and budget (higher is better).

    With `true_quality` the return's quality term is the measured one (the training reward).
    """
    returns = [
        _deterministic_episode(model, task, task.episode_capacity(bpw), config, true_quality)[1]
        for task in tasks
        for bpw in budgets_bpw
    ]
    return float(np.mean(returns))


class _KeepBest(BaseCallback):
    """Evaluates the deterministic policy every `every` steps and remembers the best weights."""

    def __init__(self, tasks, budgets_bpw, config, every: int, true_quality=None):
        super().__init__()
        self.tasks, self.budgets, self.config, self.every = tasks, budgets_bpw, config, every
        self.true_quality = true_quality
        self.best_return = -np.inf
        self.best_step = 0
        self.best_state: dict[str, Any] | None = None
        self.history: list[tuple[int, float]] = []

    def _check(self) -> None:
        import copy

        ret = evaluate(self.model, self.tasks, self.budgets, self.config, self.true_quality)
        self.history.append((int(self.model.num_timesteps), round(ret, 4)))
        if ret > self.best_return:
            self.best_return, self.best_step = ret, int(self.model.num_timesteps)
            self.best_state = copy.deepcopy(self.model.policy.state_dict())

    def _on_training_start(self) -> None:
        self._check()

    def _on_step(self) -> bool:
        if self.n_calls % self.every == 0:
            self._check()
        return True

    def restore(self, model: SAC) -> dict[str, Any]:
        """Load the best weights into `model`; returns the evaluation record for the metadata."""
        self._check()
        if self.best_state is not None:
            model.policy.load_state_dict(self.best_state)
        return {
            "best_return": round(float(self.best_return), 4),
            "best_step": self.best_step,
            "history": self.history,
        }


def _warm_start(
    model: SAC,
    tasks: Sequence[ModelTask],
    budgets_bpw: Sequence[float],
    seed: int,
    progress: ProgressFn | None,
    critic_steps: int = 3000,
    true_quality: Callable[[ModelTask, Mapping[str, str]], float] | None = None,
) -> dict[str, Any]:
    """Knapsack demonstrations -> replay buffer, behaviour cloning, critic warm-up."""
    from stable_baselines3.common.logger import configure

    from ramp_edge.rl import demos as dm

    if progress:
        progress(0, 1, "SAC: knapsack demonstrations")
    d = dm.knapsack_demonstrations(tasks, budgets_bpw, true_quality=true_quality)
    dm.fill_replay_buffer(model, d)
    mse = dm.behaviour_clone(model, d, seed=seed)
    if progress:
        progress(0, 1, "SAC: critic warm-up")
    # The critic learns Q of the cloned policy first; the actor's weights are put back after,
    # or its first updates would follow an untrained critic away from the demonstrations.
    import copy

    model.set_logger(configure(None, []))
    cloned = copy.deepcopy(model.actor.state_dict())
    model.train(gradient_steps=critic_steps, batch_size=model.batch_size)
    model.actor.load_state_dict(cloned)
    return {
        "transitions": len(d),
        "episodes": len(d.episode_errors),
        "bc_mse": round(mse, 6),
        "critic_warmup_steps": critic_steps,
    }


def kld_quality(
    source: Any, settings: Any = None
) -> Callable[[ModelTask, Mapping[str, str]], float]:
    """The paper's quality term for `AllocationEnv`: the measured mean KLD of the whole model.

    Each call assembles the episode's allocation into a real GGUF and runs it in llama.cpp on
    calibration tokens (`ramp_edge.evaluate.assembled.AssembledEvaluator`, WikiText-2
    validation, 4 x 512 tokens by default; cached per allocation). Returns the mean KLD divided
    by that of the reference file (every tensor at its legal non-source type nearest
    `reward.KLD_REF_BPW`, i.e. Q4_0 where it fits; measured once per model), so 1.0 means "as
    bad as uniform Q4_0" on every model: the scale is model-free, as the surrogate's was.
    """
    from ramp_edge.evaluate.assembled import AssembledEvaluator, EvalSettings

    evaluator = AssembledEvaluator(source, settings=settings or EvalSettings())
    specs = {s.name: s.source_type for s in source.specs}
    scale: list[float] = []

    def quality(task: ModelTask, types: Mapping[str, str]) -> float:
        if not scale:
            ref = {}
            for name, n, opts in zip(task.names, task.n_params, task.options, strict=True):
                paid = [o for o in opts if o[0] != specs[name]] or list(opts)
                ref[name] = paid[pick_option(paid, n, rw.KLD_REF_BPW)][0]
            scale.append(max(evaluator.evaluate(ref).mean_kld, 1e-9))
        kld = evaluator.evaluate(types).mean_kld
        logger.info("episode KLD %.5f (ratio %.4f)", kld, kld / scale[0])
        return kld / scale[0]

    quality.evaluator = evaluator  # type: ignore[attr-defined]
    return quality


def load_policy(path: str | Path) -> tuple[SAC, dict[str, Any]]:
    """The SAC model and its ramp-edge metadata (checked against this version)."""
    meta = read_metadata(path)
    try:
        model = SAC.load(str(path), device="cpu")
    except (ValueError, KeyError, RuntimeError) as err:
        raise ArtifactError(f"{path}: cannot load the policy ({err})") from None
    return model, meta


def _deterministic_episode(
    model: SAC,
    task: ModelTask,
    capacity: int,
    config: rw.RewardConfig = rw.DEFAULT_CONFIG,
    true_quality: Callable[[ModelTask, Mapping[str, str]], float] | None = None,
) -> tuple[dict[str, str], float]:
    """One deterministic episode: tensor name -> type (before repair), and the return."""
    env = AllocationEnv(
        [task],
        capacity=capacity,
        config=config,
        true_quality=true_quality,
        true_every=1 if true_quality is not None else 0,
    )
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, r, done, _, _ = env.step(action)
        total += r
    return env.types(), total


def rollout(model: SAC, task: ModelTask, capacity: int) -> dict[str, str]:
    """Run the policy deterministically over one model; tensor name -> type (before repair)."""
    return _deterministic_episode(model, task, capacity)[0]


@dataclass(frozen=True, slots=True)
class PolicyChoices:
    """What a policy chose for one model, before any budget repair (`allocate.repair`)."""

    types: Mapping[str, str]  # tensor -> type the policy picked
    target_bpw: Mapping[str, float]  # tensor -> bits per weight it asked for
    score: Mapping[str, float]  # tensor -> its action: bits above the base / SPAN_BPW, [-1, 1]
    policy_bytes: int  # bytes of the chosen tensors as picked
    capacity: int  # bytes the policy had for them
    features_seconds: float  # observation: weight + activation statistics (cached per model)
    policy_seconds: float  # loading the policy and the rollout
    meta: Mapping[str, Any]


def policy_choices(
    source: Any, table: Any, capacity: int, policy_path: str | Path
) -> PolicyChoices:
    """Run a trained policy on `source` zero shot: only its observation is computed.

    Args:
        source: an opened model.
        table: candidate types and exact bytes per tensor (errors are not read):
            `ramp_edge.allocate.repair.size_table`.
        capacity: bytes the chosen tensors may take (file budget - header - fixed tensors).
        policy_path: a policy zip written by `train`.
    """
    from ramp_edge.allocate.predicted import ErrorModel
    from ramp_edge.rl.prior import with_prior

    start = time.perf_counter()
    meta = read_metadata(policy_path)
    task = make_task(source, table, header_bytes=0, activations=True)
    features_done = time.perf_counter()
    model, meta = load_policy(policy_path)
    task = with_prior(task, ErrorModel.from_dict(meta["prior"]))
    capacity = max(min(capacity, task.max_bytes), task.min_bytes)
    env = AllocationEnv([task], capacity=capacity)
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, done, _, _ = env.step(action)
    return PolicyChoices(
        types=env.types(),
        target_bpw=dict(zip(task.names, env.targets, strict=True)),
        score=dict(zip(task.names, env.actions, strict=True)),
        policy_bytes=int(env.used),
        capacity=int(capacity),
        features_seconds=features_done - start,
        policy_seconds=time.perf_counter() - features_done,
        meta=meta,
    )
