"""Hardware-aware budgets: how big a model's weights may be on a device, how fast they decode.

Pure functions over a `DeviceProfile` and a model's shape; nothing here touches the disk.

Memory. llama.cpp holds, besides the weights: the KV cache for the context, the compute
buffers of the graph scheduler and the process itself. The weights may take

    ram_usable x headroom - kv_cache(ctx) - compute_buffers(ctx) - runtime_overhead

Latency. Generating one token reads every weight matrix once, so decode is memory-bound:

    seconds/token = sum over types t of bytes_read_t / bandwidth_t

`bandwidth_t` is the device's *effective* decode bandwidth for type t (the
same bytes decode at different speeds per type because of repacked kernels). It comes, in
order of preference, from llama.cpp speeds measured on the device per type (`ramp-edge
profile`), from the profile's published reference throughput times a per-type factor, or, for an
unmeasured localhost, from a copy-bandwidth probe times a decode efficiency. Fixed per-token
costs (graph launch, norms, attention at short depth) are folded into the fitted bandwidths: this
is exact for recipes of the measured model, and underestimates the speed of larger models
(conservative for a latency budget).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ramp_edge.device.profiles import DeviceProfile
from ramp_edge.errors import BudgetError, ConfigError
from ramp_edge.models import ModelInfo
from ramp_edge.quant.catalogue import CATALOGUE, legal_types

if TYPE_CHECKING:
    from ramp_edge.source.gguf_header import GGUFTensorInfo

logger = logging.getLogger(__name__)

MIB = 1 << 20

# Python interpreter + llama_cpp + numpy + the parsed vocabulary and graph metadata. Measured:
# 41 MiB RSS after `import llama_cpp` on x86-64; the tokenizer tables of a 50k-150k vocabulary
# and the ggml context add tens of MiB. Rounded up so a 4 GB board keeps a margin.
RUNTIME_OVERHEAD_BYTES = 128 * MIB

# llama.cpp's default micro-batch (llama-bench -ub 512, llama-cpp-python n_ubatch 512); the
# compute buffers scale with it.
DEFAULT_N_UBATCH = 512
DEFAULT_CTX = 2048
DEFAULT_HEADROOM = 0.85  # keep 15% of usable RAM free: page cache, allocator slack, spikes

# Effective decode bandwidth as a fraction of a numpy copy's bandwidth, for a host with no
# llama.cpp measurement yet. A Metal user saw 29-58% of peak by type (llama.cpp#27525); we take
# the middle. `ramp-edge profile` replaces this guess with measured per-type speeds.
DEFAULT_DECODE_EFFICIENCY = 0.5

# The type whose speed factor is 1.0: Q4_0 has repacked kernels on ARM (dotprod) and x86 (AVX2).
REFERENCE_TYPE = "Q4_0"

# Decode bandwidth of each type relative to Q4_0 on CPUs, from llama-bench tg128 of SmolLM2-135M
# on a 2-core AVX-512 x86-64 (toolchain.md section 8.2): tok/s x file MiB, divided by Q4_0's
# 180 x 85.8. Types not listed are assumed to decode at Q4_0's bandwidth until measured. Profiles
# override entries ([speed_factors]); measured per-type speeds override both.
DEFAULT_SPEED_FACTORS: dict[str, float] = {
    "Q4_0": 1.0,
    "Q8_0": 1.09,  # 123 tok/s x 136.4 MiB
    "Q4_1": 0.76,  # 128 x 92.1: no repacked kernel
    "F16": 1.61,  # 97 x 256.6: compute-light, bandwidth-heavy
}


class _Spec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


# ---------------------------------------------------------------------------------------------
# Latency model


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Predicts decode time from bytes read per token, per type.

    `measured` holds per-type effective bandwidths fitted from llama.cpp runs; other types use
    `reference_bandwidth_bytes_per_s` x their speed factor.
    """

    reference_bandwidth_bytes_per_s: float  # effective decode bandwidth of REFERENCE_TYPE
    source: str  # "measured" | "published" | "probe" | "placeholder"
    note: str = ""
    factors: tuple[tuple[str, float], ...] = ()
    measured: tuple[tuple[str, float], ...] = ()  # type -> bytes/s fitted from llama.cpp runs
    overhead_s_per_token: float = 0.0  # fixed cost per token (published profiles); fits fold it in

    def __post_init__(self) -> None:
        if not self.reference_bandwidth_bytes_per_s > 0:
            raise ConfigError("latency model: reference bandwidth must be > 0")

    def factor(self, qtype: str) -> float:
        return dict(self.factors).get(qtype.upper(), 1.0)

    def bandwidth_bytes_per_s(self, qtype: str) -> float:
        """Effective decode bandwidth for weights of `qtype`."""
        key = qtype.upper()
        measured = dict(self.measured)
        if key in measured:
            return measured[key]
        return self.reference_bandwidth_bytes_per_s * self.factor(key)

    def seconds_per_byte(self, qtype: str) -> float:
        """Decode time each byte of `qtype` costs: the allocator's per-tensor latency weight."""
        return 1.0 / self.bandwidth_bytes_per_s(qtype)

    def seconds_per_token(self, bytes_by_type: Mapping[str, float]) -> float:
        """Predicted decode seconds per token for the bytes read per token of each type."""
        return self.overhead_s_per_token + sum(
            b * self.seconds_per_byte(t) for t, b in bytes_by_type.items()
        )

    def tokens_per_s(self, bytes_by_type: Mapping[str, float]) -> float:
        seconds = self.seconds_per_token(bytes_by_type)
        return math.inf if seconds <= 0 else 1.0 / seconds

    def speed_table(self) -> dict[str, float]:
        """Every catalogue type -> effective bandwidth in bytes/s (what `allocate` consumes)."""
        return {name: self.bandwidth_bytes_per_s(name) for name in CATALOGUE}

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference_type": REFERENCE_TYPE,
            "reference_bandwidth_bytes_per_s": self.reference_bandwidth_bytes_per_s,
            "source": self.source,
            "note": self.note,
            "factors": dict(self.factors),
            "measured_bandwidth_bytes_per_s": dict(self.measured),
            "overhead_s_per_token": self.overhead_s_per_token,
        }


def speed_factors(profile: DeviceProfile) -> dict[str, float]:
    """Relative decode bandwidth per type: CPU priors (not GPUs), then the profile's overrides."""
    factors = dict(DEFAULT_SPEED_FACTORS) if profile.accelerator == "none" else {}
    factors.update(dict(profile.speed_factors))
    return factors


def fit_type_bandwidths(
    rows: Iterable[tuple[Mapping[str, int], float]], factors: Mapping[str, float]
) -> tuple[dict[str, float], float]:
    """Fit per-type effective bandwidths from (bytes read per token by type, tokens/s) runs.

    Solves seconds_r = sum_t bytes_rt / B_t by least squares for the types that make up at
    least half the bytes of some run; minor types (e.g. an embedding kept at Q8_0) are held at
    reference x factor, the reference being first estimated from whole-run bandwidths.

    Returns:
        (type -> bytes/s, reference bandwidth of REFERENCE_TYPE in bytes/s)
    """
    import numpy as np

    runs = [(dict(b), float(tps)) for b, tps in rows if tps > 0 and sum(b.values()) > 0]
    if not runs:
        raise ConfigError("no llama.cpp runs to fit a latency model from")

    def f(t: str) -> float:
        return float(factors.get(t, 1.0))

    dominant = {max(b, key=b.__getitem__) for b, _ in runs}
    dominant |= {t for b, _ in runs for t, n in b.items() if n >= 0.5 * sum(b.values())}
    # first estimate: each run's whole-mix bandwidth, normalized by its dominant type's factor
    ref0 = float(
        np.median([sum(b.values()) * tps / f(max(b, key=b.__getitem__)) for b, tps in runs])
    )
    unknown = sorted(dominant)
    a = np.zeros((len(runs), len(unknown)))
    y = np.zeros(len(runs))
    for r, (b, tps) in enumerate(runs):
        y[r] = 1.0 / tps
        for t, n in b.items():
            if t in unknown:
                a[r, unknown.index(t)] = n
            else:
                y[r] -= n / (ref0 * f(t))
    x, *_ = np.linalg.lstsq(a, y, rcond=None)
    fitted = {t: 1.0 / float(v) for t, v in zip(unknown, x, strict=True) if v > 0}
    if not fitted:
        return {}, ref0
    if REFERENCE_TYPE in fitted:
        reference = fitted[REFERENCE_TYPE]
    else:
        reference = float(np.median([bw / f(t) for t, bw in fitted.items()]))
    return fitted, reference


def latency_model(profile: DeviceProfile) -> LatencyModel:
    """The best latency model the profile supports (measured > published > probe)."""
    factors = speed_factors(profile)
    m = profile.measured
    if m is not None and m.type_speeds:
        rows = [(dict(s.bytes_by_type), s.tg_tokens_per_s) for s in m.type_speeds]
        fitted, reference = fit_type_bandwidths(rows, factors)
        types = ", ".join(sorted({s.qtype for s in m.type_speeds}))
        models = ", ".join(sorted({s.model for s in m.type_speeds}))
        return LatencyModel(
            reference_bandwidth_bytes_per_s=reference,
            source="measured",
            note=f"llama.cpp tg of {models} at {types} on {m.host}, {m.created_utc}",
            factors=tuple(sorted(factors.items())),
            measured=tuple(sorted(fitted.items())),
        )
    if profile.auto:
        if m is not None and m.bandwidth_copy_bytes_per_s:
            return LatencyModel(
                reference_bandwidth_bytes_per_s=m.bandwidth_copy_bytes_per_s
                * DEFAULT_DECODE_EFFICIENCY,
                source="probe",
                note=(
                    f"copy bandwidth {m.bandwidth_copy_bytes_per_s / 1e9:.1f} GB/s x decode "
                    f"efficiency {DEFAULT_DECODE_EFFICIENCY} (no llama.cpp measurement; run "
                    f"ramp-edge profile --device {profile.id})"
                ),
                factors=tuple(sorted(factors.items())),
            )
        return LatencyModel(
            profile.bandwidth_effective_bytes_per_s,
            "placeholder",
            f"{profile.id} has not been measured; run ramp-edge profile --device {profile.id}",
            tuple(sorted(factors.items())),
        )
    return LatencyModel(
        reference_bandwidth_bytes_per_s=profile.bandwidth_effective_bytes_per_s,
        source="published",
        note=profile.bandwidth_note,
        factors=tuple(sorted(factors.items())),
        overhead_s_per_token=profile.token_overhead_s,
    )


def predict_tps(
    profile: DeviceProfile,
    file_bytes: int,
    type_mix: Mapping[str, float] | None = None,
    model: LatencyModel | None = None,
) -> float:
    """Predicted generation tokens/s for `file_bytes` of weights read per token.

    Args:
        type_mix: ggml type -> share of the bytes (any non-negative weights, e.g. bytes per
            type); None means all bytes decode at the reference type's speed.
        model: a LatencyModel to reuse (default: `latency_model(profile)`).
    """
    lm = model or latency_model(profile)
    if not type_mix:
        return lm.tokens_per_s({REFERENCE_TYPE: file_bytes})
    total = sum(type_mix.values())
    if total <= 0 or any(v < 0 for v in type_mix.values()):
        raise ConfigError("type_mix needs non-negative shares that sum to more than 0")
    return lm.tokens_per_s({t: file_bytes * v / total for t, v in type_mix.items()})


def bytes_read_per_token(tensors: Sequence[GGUFTensorInfo]) -> dict[str, int]:
    """Weight-matrix bytes one decoded token reads, per ggml type.

    Every 2-D+ tensor is read once per token by its matmul, except `token_embd` when the model
    has a separate `output.weight`: then the embedding is a row lookup (ggml_get_rows) that
    reads one row. 1-D tensors (norms) are negligible and left out.
    """
    names = {t.name for t in tensors}
    untied = "output.weight" in names
    out: dict[str, int] = {}
    for t in tensors:
        if len(t.shape) < 2 or (untied and t.name == "token_embd.weight"):
            continue
        out[t.ggml_type] = out.get(t.ggml_type, 0) + t.n_bytes
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# Memory model


def compute_buffer_bytes(info: ModelInfo, n_ctx: int, n_ubatch: int = DEFAULT_N_UBATCH) -> int:
    """llama.cpp's CPU compute buffer for a context (flash attention off, as llama-cpp-python).

    The graph scheduler reuses memory between nodes, so the buffer is the larger of the two big
    intermediates plus what lives beside them (all F32):
      logits  n_ubatch x n_vocab           output of the last matmul
      KQ      n_ubatch x n_ctx x n_head    attention scores of one layer
      mask    n_ubatch x n_ctx
      acts    n_ubatch x (3 n_embd + n_ff)
    llama.cpp reports 98.3 / 99.4 / 166.4 MiB for SmolLM2-135M at ctx 512 / 2048 / 8192; this
    gives 103.4 / 106.4 / 166.4 MiB.
    """
    ub = max(1, min(n_ubatch, n_ctx))
    logits = ub * info.n_vocab * 4
    kq = ub * n_ctx * info.n_head * 4
    mask = ub * n_ctx * 4
    acts = ub * (3 * info.n_embd + info.n_ff) * 4
    return max(logits, kq) + mask + acts


@dataclass(frozen=True, slots=True)
class ModelGeometry:
    """What a budget needs to know about a model's tensors.

    bpw is measured over the quantizable (2-D+) weights; 1-D tensors stay F32 (`fixed_bytes`).
    """

    n_params_quantizable: int
    n_params_read: int  # quantizable params one decoded token reads (untied token_embd: 0)
    fixed_bytes: int
    min_weights_bytes: int  # every matrix at its smallest legal type that needs no imatrix
    max_weights_bytes: int  # every matrix at F16: more bits buy nothing

    def __post_init__(self) -> None:
        if self.n_params_quantizable <= 0 or self.n_params_read <= 0:
            raise ConfigError("model geometry: no quantizable weights")

    def weights_bytes(self, bpw: float) -> int:
        return int(self.fixed_bytes + self.n_params_quantizable * bpw / 8)

    def read_bytes(self, bpw: float) -> int:
        return int(self.fixed_bytes + self.n_params_read * bpw / 8)

    def bpw_for_weights(self, weights_bytes: float) -> float:
        return (weights_bytes - self.fixed_bytes) * 8 / self.n_params_quantizable

    def bpw_for_read(self, read_bytes: float) -> float:
        return (read_bytes - self.fixed_bytes) * 8 / self.n_params_read

    @property
    def min_bpw(self) -> float:
        return self.bpw_for_weights(self.min_weights_bytes)

    @property
    def max_bpw(self) -> float:
        return self.bpw_for_weights(self.max_weights_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _smallest_type_bytes(shape: tuple[int, ...]) -> int:
    types = [t for t in legal_types(shape[0], include_float=False) if not t.needs_imatrix]
    if not types:
        return CATALOGUE["F16"].tensor_bytes(shape)
    return min(t.tensor_bytes(shape) for t in types)


def geometry_from_specs(specs: Iterable[_Spec]) -> ModelGeometry:
    """Geometry from tensor specs (name + ggml shape), e.g. `open_source(m).specs`."""
    specs = list(specs)
    untied = any(s.name == "output.weight" for s in specs)
    n_q = n_read = fixed = min_b = max_b = 0
    for s in specs:
        n = math.prod(s.shape)
        if len(s.shape) < 2:
            fixed += 4 * n
            continue
        n_q += n
        if not (untied and s.name == "token_embd.weight"):
            n_read += n
        min_b += _smallest_type_bytes(tuple(s.shape))
        max_b += 2 * n
    return ModelGeometry(n_q, n_read, fixed, fixed + min_b, fixed + max_b)


def geometry_from_info(info: ModelInfo) -> ModelGeometry:
    """Approximate geometry from hyper-parameters (norms F32, every matrix read, 32-blocks)."""
    fixed = 4 * (info.n_layer * 2 * info.n_embd + info.n_embd)
    n_q = max(1, info.n_params - fixed // 4)
    smallest = min(
        t.bits_per_weight
        for t in CATALOGUE.values()
        if t.allocatable and t.block_size == 32 and not t.needs_imatrix
    )
    return ModelGeometry(n_q, n_q, fixed, fixed + int(n_q * smallest / 8), fixed + 2 * n_q)


# ---------------------------------------------------------------------------------------------
# Budget


@dataclass(frozen=True, slots=True)
class BudgetResult:
    """The largest weights a model may have on a device, which limit binds, and why."""

    device: str
    model: str
    n_ctx: int
    min_tps: float | None
    headroom: float
    ram_usable_bytes: int
    kv_cache_bytes: int
    compute_buffer_bytes: int
    runtime_overhead_bytes: int
    memory_limit_bytes: int  # weights allowed by memory
    latency_limit_bytes: int | None  # weights allowed by --min-tps (None: no target)
    max_useful_bytes: int  # the model at F16
    budget_bytes: int
    budget_bpw: float  # over the quantizable weights
    binding: str  # "memory" | "latency" | "none" (the whole model fits at F16)
    explanation: str
    n_params_quantizable: int
    fixed_bytes: int
    bandwidth_effective_bytes_per_s: float
    bandwidth_source: str
    bandwidth_note: str
    predicted_tokens_per_s: float  # at the budget, all weights at the reference type's speed

    @property
    def memory_limit_bpw(self) -> float:
        return (self.memory_limit_bytes - self.fixed_bytes) * 8 / self.n_params_quantizable

    @property
    def latency_budget_ms_per_token(self) -> float | None:
        return None if not self.min_tps else 1000.0 / self.min_tps

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["memory_limit_bpw"] = round(self.memory_limit_bpw, 4)
        d["latency_limit_bpw"] = (
            None
            if self.latency_limit_bytes is None
            else round(
                (self.latency_limit_bytes - self.fixed_bytes) * 8 / self.n_params_quantizable, 4
            )
        )
        d["latency_budget_ms_per_token"] = self.latency_budget_ms_per_token
        d["budget_bpw"] = round(self.budget_bpw, 4)
        d["predicted_tokens_per_s"] = round(self.predicted_tokens_per_s, 2)
        return d


class InfeasibleBudget(BudgetError):
    """No legal allocation meets the request; `nearest` holds the closest feasible settings."""

    def __init__(self, message: str, binding: str, nearest: dict[str, Any]):
        super().__init__(message)
        self.binding = binding
        self.nearest = nearest


def _fmt_bytes(n: float) -> str:
    if abs(n) >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / MIB:.1f} MiB"


def _memory_overheads(info: ModelInfo, n_ctx: int, n_ubatch: int) -> int:
    return (
        info.kv_cache_bytes(n_ctx)
        + compute_buffer_bytes(info, n_ctx, n_ubatch)
        + RUNTIME_OVERHEAD_BYTES
    )


def max_feasible_ctx(
    profile: DeviceProfile,
    info: ModelInfo,
    weights_bytes: int,
    headroom: float,
    n_ubatch: int = DEFAULT_N_UBATCH,
) -> int:
    """The largest ctx (a multiple of 256, <= n_ctx_train) at which `weights_bytes` fits, or 0."""
    allowed = profile.ram_usable_bytes * headroom - weights_bytes
    top = max(256, info.n_ctx_train or 131072)
    lo, hi = 0, top // 256
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _memory_overheads(info, mid * 256, n_ubatch) <= allowed:
            lo = mid
        else:
            hi = mid - 1
    return lo * 256


def compute_budget(
    profile: DeviceProfile,
    info: ModelInfo,
    geometry: ModelGeometry | None = None,
    *,
    n_ctx: int = DEFAULT_CTX,
    min_tps: float | None = None,
    headroom: float = DEFAULT_HEADROOM,
    model: str = "",
    n_ubatch: int = DEFAULT_N_UBATCH,
    latency: LatencyModel | None = None,
) -> BudgetResult:
    """The largest weights `info`'s model may have on `profile` at `n_ctx` and `min_tps`.

    Args:
        geometry: from `geometry_from_specs` (exact) or None for `geometry_from_info`.
        min_tps: required generation speed in tokens/s; None for memory only.
        headroom: fraction of usable RAM the process may fill (0 < headroom <= 1).
        latency: a LatencyModel to use instead of `latency_model(profile)`.

    Raises:
        InfeasibleBudget: even the smallest legal types miss the memory or speed target; the
            message and `.nearest` give the closest feasible option.
    """
    if not 0 < headroom <= 1:
        raise ConfigError(f"headroom must be in (0, 1], got {headroom}")
    if n_ctx < 1:
        raise ConfigError(f"ctx must be >= 1, got {n_ctx}")
    if min_tps is not None and not min_tps > 0:
        raise ConfigError(f"min-tps must be > 0, got {min_tps}")
    geo = geometry or geometry_from_info(info)
    lm = latency or latency_model(profile)
    name = model or info.arch
    bw = lm.reference_bandwidth_bytes_per_s

    kv = info.kv_cache_bytes(n_ctx)
    compute = compute_buffer_bytes(info, n_ctx, n_ubatch)
    allowed = profile.ram_usable_bytes * headroom
    memory_limit = int(allowed - kv - compute - RUNTIME_OVERHEAD_BYTES)

    latency_limit: int | None = None
    read_limit = 0.0
    if min_tps is not None:
        read_limit = bw * (1.0 / min_tps - lm.overhead_s_per_token)
        latency_limit = geo.weights_bytes(geo.bpw_for_read(read_limit)) if read_limit > 0 else 0

    problems: list[str] = []
    nearest: dict[str, Any] = {}
    if memory_limit < geo.min_weights_bytes:
        need = (geo.min_weights_bytes + kv + compute + RUNTIME_OVERHEAD_BYTES) / headroom
        ctx_ok = max_feasible_ctx(profile, info, geo.min_weights_bytes, headroom, n_ubatch)
        nearest["min_ram_usable_bytes"] = math.ceil(need)
        nearest["max_ctx"] = ctx_ok
        hint = f"--ctx {ctx_ok}" if ctx_ok >= 256 else "a smaller model"
        problems.append(
            f"{name} does not fit {profile.id} at ctx {n_ctx}: even at its smallest types "
            f"({geo.min_bpw:.2f} bpw, {_fmt_bytes(geo.min_weights_bytes)}) it needs "
            f"{_fmt_bytes(need)} of usable RAM at headroom {headroom}, the device has "
            f"{_fmt_bytes(profile.ram_usable_bytes)}; nearest feasible: {hint}"
        )
    if latency_limit is not None and latency_limit < geo.min_weights_bytes:
        max_tps = lm.tokens_per_s({REFERENCE_TYPE: geo.read_bytes(geo.min_bpw)})
        nearest["max_tps"] = round(max_tps, 2)
        problems.append(
            f"{name} cannot reach {min_tps:g} tok/s on {profile.id}: at its smallest types "
            f"({geo.min_bpw:.2f} bpw) the predicted speed is {max_tps:.1f} tok/s "
            f"({bw / 1e9:.1f} GB/s effective, {lm.source}); nearest feasible: "
            f"--min-tps {math.floor(max_tps * 10) / 10:g}"
        )
    if problems:
        binding = "memory" if "min_ram_usable_bytes" in nearest else "latency"
        if "min_ram_usable_bytes" in nearest and "max_tps" in nearest:
            binding = "memory+latency"
        raise InfeasibleBudget("; and ".join(problems), binding, nearest)

    limits = {"memory": memory_limit}
    if latency_limit is not None:
        limits["latency"] = latency_limit
    binding = min(limits, key=limits.__getitem__)
    budget = limits[binding]
    if budget >= geo.max_weights_bytes:
        budget = geo.max_weights_bytes
        binding = "none"
    bpw = geo.bpw_for_weights(budget)
    predicted = lm.tokens_per_s({REFERENCE_TYPE: geo.read_bytes(bpw)})

    mem_text = (
        f"memory allows {_fmt_bytes(memory_limit)} of weights "
        f"({_fmt_bytes(profile.ram_usable_bytes)} "
        f"usable x {headroom} headroom, minus KV cache {_fmt_bytes(kv)} at ctx {n_ctx}, compute "
        f"buffers {_fmt_bytes(compute)} and runtime {_fmt_bytes(RUNTIME_OVERHEAD_BYTES)})"
    )
    lat_text = (
        ""
        if latency_limit is None
        else (
            f"{min_tps:g} tok/s allows {_fmt_bytes(latency_limit)} ({_fmt_bytes(read_limit)} read "
            f"per token at {bw / 1e9:.1f} GB/s effective {REFERENCE_TYPE} decode bandwidth, "
            f"{lm.source}"
            + (
                f", after {lm.overhead_s_per_token * 1000:.1f} ms fixed cost per token)"
                if lm.overhead_s_per_token
                else ")"
            )
        )
    )
    if binding == "memory":
        lead = (
            "memory binds: " + mem_text + (f"; latency is looser: {lat_text}" if lat_text else "")
        )
    elif binding == "latency":
        lead = f"latency binds: {lat_text}; memory is looser: {mem_text}"
    else:
        lead = (
            f"nothing binds: the whole model fits at F16 ({_fmt_bytes(geo.max_weights_bytes)}); "
            + mem_text
            + (f"; {lat_text}" if lat_text else "")
        )
    explanation = (
        f"{lead}. Budget {_fmt_bytes(budget)} = {bpw:.2f} bpw over "
        f"{geo.n_params_quantizable:,} weights."
    )

    return BudgetResult(
        device=profile.id,
        model=name,
        n_ctx=n_ctx,
        min_tps=min_tps,
        headroom=headroom,
        ram_usable_bytes=profile.ram_usable_bytes,
        kv_cache_bytes=kv,
        compute_buffer_bytes=compute,
        runtime_overhead_bytes=RUNTIME_OVERHEAD_BYTES,
        memory_limit_bytes=memory_limit,
        latency_limit_bytes=latency_limit,
        max_useful_bytes=geo.max_weights_bytes,
        budget_bytes=budget,
        budget_bpw=bpw,
        binding=binding,
        explanation=explanation,
        n_params_quantizable=geo.n_params_quantizable,
        fixed_bytes=geo.fixed_bytes,
        bandwidth_effective_bytes_per_s=bw,
        bandwidth_source=lm.source,
        bandwidth_note=lm.note,
        predicted_tokens_per_s=predicted,
    )


def auto_gpu_layers(
    probe: Mapping[str, Any], model_bytes: int, n_layers: int, overhead_bytes: int = 0
) -> tuple[int, str]:
    """`--n-gpu-layers auto`: how many layers to offload, from the agent's probe, and why.

    All layers (-1) when the weights plus `overhead_bytes` (KV cache, compute buffers) fit the
    GPU's free memory; on unified memory (Jetson, Apple) the GPU and CPU share one RAM pool, so
    the memory is counted once: the available RAM. Fewer layers, in proportion, when only part
    fits; 0 with a CPU-only build of llama.cpp.
    """
    llama = dict(probe.get("llama_cpp") or {})
    if not llama.get("supports_gpu_offload"):
        return 0, "CPU-only build of llama.cpp (no GPU offload): runs on the CPU"
    gpu = dict(probe.get("gpu") or {})
    need = model_bytes + overhead_bytes
    if gpu.get("unified_memory"):
        free = int(dict(probe.get("memory") or {}).get("available_bytes") or 0)
        where = "unified memory (counted once)"
    else:
        free = int(gpu.get("memory_free_bytes") or 0)
        where = "GPU memory"
    if not free:
        return -1, "all layers on the GPU (its free memory is not reported)"
    usable = 0.9 * free  # headroom for the driver and fragmentation
    if need <= usable:
        return -1, f"all layers: {_fmt_bytes(need)} fit {_fmt_bytes(free)} free {where}"
    layers = max(0, int(n_layers * (usable - overhead_bytes) / max(1, model_bytes)))
    return layers, (
        f"{layers} of {n_layers} layers: {_fmt_bytes(need)} exceed {_fmt_bytes(free)} free {where}"
    )
