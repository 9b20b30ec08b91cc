"""The allocation reward: quality first, an asymmetric budget penalty and a cliff past budget.

An episode assigns a type to every quantizable tensor. Its return is

    R = -Q  -  budget_penalty(bytes_used / capacity)

* Quality Q, two modes.
  - Measured (the paper's reward; `train --reward kld`): Q = TRUE_COEF * KLD / KLD_ref, paid at
    the episode's end. KLD is the mean KL divergence of the whole assembled mixed-precision
    model against the source on calibration tokens (WikiText-2 validation, 4 x 512 tokens,
    `evaluate.assembled.AssembledEvaluator`: the real GGUF run by llama.cpp), KLD_ref that of
    the ~uniform KLD_REF_BPW (Q4_0) file of the same model, measured once; so Q = 1 means "as bad as
    uniform Q4_0" on every model, which zero-shot transfer needs.
  - Surrogate (`--reward surrogate`, fast): Q = sum_i err_i / err_scale, paid per step, with
    ``err_i`` the tensor's relative output error at the chosen type from the measured
    SensitivityTable and ``err_scale`` the summed error with every tensor at its type nearest
    4.5 bpw (`env.quality_scale`). Its exact optimum is the knapsack's: RL cannot beat the
    knapsack on it, only imitate it.
* Budget. ``budget_penalty`` of the overrun fraction ``x = bytes / capacity - 1``:
  ``OVER_COEF * x`` above the budget, ``UNDER_COEF * (-x)`` below it, and a fixed ``CLIFF`` once
  ``x > EPS``. It is handed out densely (see `shaped_budget_reward`): each step pays the change
  of the penalty of the *projected* final size (bytes so far + the rest at the par bpw), a
  potential-based shaping whose sum telescopes to exactly the terminal penalty (undiscounted),
  so it changes credit assignment, not the optimum (Ng, Harada & Russell 1999).

Every allocation is repaired to the budget afterwards (`ramp_edge.allocate.repair`, by the
policy's own preferences), so the penalty only has to keep the policy near it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Cost per unit of relative overrun (x = 0.01 -> 0.2). At SmolLM2-135M's 4-6 bpw, 1% more bytes
# buys about 3% less summed error, i.e. ~0.03 in quality units: overspending must cost several
# times what it buys, or the policy learns to overshoot and let repair clean up.
OVER_COEF = 20.0
# Cost per unit of relative under-use (x = -0.01 -> 0.01): below the ~0.03 that 1% of bytes buys,
# so the quality term itself pulls the policy towards the budget; this only breaks ties.
UNDER_COEF = 1.0
# Overrun fraction past which the cliff applies: 1%, twice the 0.5% repair tolerance.
EPS = 0.01
# Fixed penalty past budget x (1 + EPS): five times the whole quality term of a uniform
# allocation, so no quality gain can pay for a file far over budget.
CLIFF = 5.0
# Weight of the measured quality term (KLD over KLD_ref, 1.0 = as bad as uniform Q4_0): equal
# to the surrogate's weight, so the budget constants above mean the same in both modes. At
# SmolLM2's 4.5-5.5 bpw 1% more bytes buys ~3-5% less KLD (0.03-0.05 in these units), below
# the 0.2 that 1% of overrun costs.
TRUE_COEF = 1.0
# The measured quality term's per-model unit is the KLD of the file with every tensor at its
# legal type nearest this many bits per weight (Q4_0 / IQ4_NL: 4.5), the source type excluded.
KLD_REF_BPW = 4.5


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """The reward constants (module-level defaults, documented above)."""

    over_coef: float = OVER_COEF
    under_coef: float = UNDER_COEF
    eps: float = EPS
    cliff: float = CLIFF
    true_coef: float = TRUE_COEF

    def __post_init__(self) -> None:
        from ramp_edge.errors import ConfigError

        if min(self.over_coef, self.under_coef, self.eps, self.cliff, self.true_coef) < 0:
            raise ConfigError("reward constants must be non-negative")
        if self.over_coef <= self.under_coef:
            raise ConfigError("over_coef must exceed under_coef: over-budget costs more")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RewardConfig:
        return cls(**{k: float(v) for k, v in doc.items() if k in cls.__dataclass_fields__})


DEFAULT_CONFIG = RewardConfig()


def budget_penalty(
    used_bytes: float, capacity_bytes: float, cfg: RewardConfig | None = None
) -> float:
    """Penalty (>= 0) of ending at `used_bytes` against `capacity_bytes`; 0 exactly at budget."""
    cfg = cfg or DEFAULT_CONFIG
    x = used_bytes / max(capacity_bytes, 1.0) - 1.0
    if x <= 0:
        return cfg.under_coef * -x
    return cfg.over_coef * x + (cfg.cliff if x > cfg.eps else 0.0)


def quality_reward(err: float, err_scale: float) -> float:
    """One step's quality term: the tensor's error as a share of the par allocation's total."""
    return -err / max(err_scale, 1e-30)


def shaped_budget_reward(
    projected_before: float,
    projected_after: float,
    capacity_bytes: float,
    cfg: RewardConfig | None = None,
) -> float:
    """Budget term of one step: the change in penalty of the projected final size."""
    return budget_penalty(projected_before, capacity_bytes, cfg) - budget_penalty(
        projected_after, capacity_bytes, cfg
    )
