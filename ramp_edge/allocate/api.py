"""One interface over every allocation method: knapsack, measured, greedy, sac, preset, uniform."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from ramp_edge import recipe as recipes
from ramp_edge.allocate import METHODS
from ramp_edge.allocate import knapsack as ks
from ramp_edge.allocate.budget import Budget, below_smallest_file
from ramp_edge.allocate.search import SearchSettings, measured_search
from ramp_edge.allocate.sensitivity import (
    DEFAULT_CANDIDATES,
    SensitivityTable,
    calibrate,
    measure_sensitivity,
    scale_by_sensitivity,
)
from ramp_edge.errors import BudgetError, ConfigError
from ramp_edge.evaluate.assembled import EvalSettings
from ramp_edge.quant.catalogue import CATALOGUE
from ramp_edge.quant.export import plan_export
from ramp_edge.quant.presets import IMATRIX_ADVISED, PRESETS
from ramp_edge.recipe import Recipe

logger = logging.getLogger(__name__)
ProgressFn = Callable[[float, float, str], None]

UNIFORM_TYPES = DEFAULT_CANDIDATES  # the same one-type-per-bit-width ladder
TOLERANCE = 0.005  # final file within 0.5% under the budget when reachable
DEFAULT_POLICY = "default.zip"  # ramp_edge/data/policies/: trained on every family we have


def _recipe_from_types(source, types: Mapping[str, str], method: str, budget: Budget) -> Recipe:
    allocation = tuple((s.name, types.get(s.name, s.source_type)) for s in source.specs)
    return Recipe(source.model.model_id, allocation, method, str(budget))


def _largest_fitting(
    source, specs: list[str], budget: Budget, method: str, has_imatrix: bool = False
) -> Recipe:
    target = budget.target_bytes(source.info.n_params)
    best: tuple[int, Recipe] | None = None
    for spec in specs:
        try:
            r = recipes.build(source, spec, has_imatrix=has_imatrix)
            if not has_imatrix and any(CATALOGUE[q].needs_imatrix for _, q in r.allocation):
                continue  # would need an importance matrix
            size = plan_export(source, r).size_bytes
        except ConfigError:
            continue
        if size <= target and (best is None or size > best[0]):
            best = (size, r)
    if best is None:
        raise BudgetError(f"no {method} fits {budget} ({target:,} bytes)")
    r = best[1]
    return Recipe(r.model_id, r.allocation, r.method, str(budget))


def check_feasible(source, budget: Budget, types: tuple[str, ...] | None = None) -> None:
    """BudgetError, before any measurement, when no allocation of `types` fits `budget`."""
    from ramp_edge.allocate.sensitivity import candidates_for
    from ramp_edge.quant.presets import allows_quantization

    candidates = check_types(types)
    target = budget.target_bytes(source.info.n_params)
    smallest = 0
    for s in source.specs:
        if allows_quantization(s.name, s.shape):
            smallest += min(
                q.tensor_bytes(s.shape)
                for q in candidates_for(s.shape[0], s.source_type, candidates)
            )
        else:
            smallest += CATALOGUE[s.source_type].tensor_bytes(s.shape)
    smallest += plan_export(source, _recipe_from_types(source, {}, "check", budget)).header_bytes
    if target < smallest:
        raise below_smallest_file(budget, target, smallest, source.info.n_params)


def fit_to_budget(
    source, table: SensitivityTable, choice: ks.Choice, budget: Budget, method: str
) -> Recipe:
    """Repair an allocation so the exported file is at or under the budget (within 0.5%)."""
    target = budget.target_bytes(source.info.n_params)
    header = plan_export(
        source, _recipe_from_types(source, ks.choice_types(table, choice), method, budget)
    ).header_bytes
    capacity = ks.capacity_for(table, target, header)
    lo, hi = ks.min_max_bytes(table)
    if capacity < lo:
        smallest = lo + header + table.fixed_bytes
        raise below_smallest_file(budget, target, smallest, source.info.n_params)
    if ks.choice_bytes(table, choice) > capacity:
        choice = ks.shrink(table, choice, capacity)
    choice = ks.fill(table, choice, capacity)
    recipe = _recipe_from_types(source, ks.choice_types(table, choice), method, budget)
    size = plan_export(source, recipe).size_bytes
    if size > target:  # header estimate drifted: shrink by the excess and retry once
        choice = ks.shrink(table, choice, capacity - (size - target))
        recipe = _recipe_from_types(source, ks.choice_types(table, choice), method, budget)
        size = plan_export(source, recipe).size_bytes
    notes = {
        "predicted_bytes": size,
        "target_bytes": target,
        "estimated_error": round(ks.choice_error(table, choice), 6),
    }
    if size < target * (1 - TOLERANCE) and capacity < hi:
        logger.info("allocation uses %.2f%% of the budget (type granularity)", 100 * size / target)
    return Recipe(recipe.model_id, recipe.allocation, method, str(budget), notes)


def error_table(
    source,
    types: tuple[str, ...] = DEFAULT_CANDIDATES,
    imatrix: Mapping[str, np.ndarray] | None = None,
    imatrix_id: str | None = None,
    calibrate_roles: bool = True,
    progress: ProgressFn | None = None,
    ray_address: str | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
    sensitivity: Mapping[str, float] | None = None,
) -> SensitivityTable:
    """The measured error table every table-based allocator uses (allocate, latency, train).

    Per tensor and candidate type: the ggml-quantized weights' relative output error, in KLD
    units: with `sensitivity` (each weight's output Fisher, ramp_edge.features.fisher) tensor
    by tensor; otherwise, with `calibrate_roles` (GGUF sources), by one real probe per role.
    """
    measure_many = None
    if ray_address:
        from ramp_edge.distributed import ray_measurer

        measure_many = ray_measurer(ray_address)
    table = measure_sensitivity(
        source,
        types,
        imatrix=imatrix,
        imatrix_id=imatrix_id,
        progress=progress,
        measure_many=measure_many,
        hessians=hessians,
    )
    probes = calibrate_roles and getattr(source.model, "kind", "gguf") == "gguf"
    # Role probes give one scale per role and cannot see depth (bench/fisher.md); rescaling
    # the Fisher scales to them undid the gain (SmolLM2-135M, 4.4 bpw +gptq: WikiText-2 test
    # KLD 0.33 vs 0.11), so with a sensitivity they only fill tensors it does not cover.
    if sensitivity and all(t.name in sensitivity for t in table.tensors):
        probes = False
    probed = (
        calibrate(
            source,
            table,
            progress=progress,
            imatrix=imatrix,
            imatrix_id=imatrix_id,
            hessians=hessians,
        )
        if probes
        else None
    )
    if sensitivity:
        return scale_by_sensitivity(table, sensitivity, probed)
    return probed if probed is not None else table


def allocate(
    source,
    budget: Budget,
    method: str = "knapsack",
    policy: str | None = None,
    imatrix: Mapping[str, np.ndarray] | None = None,
    imatrix_id: str | None = None,
    progress: ProgressFn | None = None,
    calibrate_roles: bool = True,
    types: tuple[str, ...] | None = None,
    search: SearchSettings | None = None,
    eval_settings: EvalSettings | None = None,
    ray_address: str | None = None,
    hessians: Mapping[str, np.ndarray] | None = None,
    sensitivity: Mapping[str, float] | None = None,
) -> Recipe:
    """Choose every tensor's type for `source` under `budget` with `method`.

    Args:
        types: candidate types (an allow-list for older llama.cpp builds); default all.
        search: evaluation budget of the `measured` method.
        eval_settings: the calibration tokens the `measured` method scores.
        ray_address: measure the error table as Ray tasks (ramp_edge.distributed); same table.
        hessians: input Hessians (ramp_edge.features.calibration): the recipe is encoded with
            GPTQ error compensation, and the `measured` method measures candidates so encoded.
        sensitivity: each weight's output Fisher (ramp_edge.features.fisher): the error
            table's KLD scale per tensor, instead of one probe per role.
    """
    recipe = _choose(
        source,
        budget,
        method,
        policy=policy,
        imatrix=imatrix,
        imatrix_id=imatrix_id,
        progress=progress,
        calibrate_roles=calibrate_roles,
        types=types,
        search=search,
        eval_settings=eval_settings,
        ray_address=ray_address,
        hessians=hessians,
        sensitivity=sensitivity,
    )
    if method in ("knapsack", "greedy", "measured"):  # the table-based ones: say how it was scaled
        scale = "fisher" if sensitivity else "role-probes" if calibrate_roles else "relative"
        recipe = replace(recipe, notes={**recipe.notes, "error_scale": scale})
    return replace(recipe, encoding="gptq") if hessians else recipe


def _choose(
    source,
    budget: Budget,
    method: str,
    policy: str | None,
    imatrix: Mapping[str, np.ndarray] | None,
    imatrix_id: str | None,
    progress: ProgressFn | None,
    calibrate_roles: bool,
    types: tuple[str, ...] | None,
    search: SearchSettings | None,
    eval_settings: EvalSettings | None,
    ray_address: str | None,
    hessians: Mapping[str, np.ndarray] | None,
    sensitivity: Mapping[str, float] | None = None,
) -> Recipe:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    candidates = check_types(types)
    if method == "uniform":
        return _largest_fitting(source, [f"uniform:{t}" for t in UNIFORM_TYPES], budget, method)
    if method == "preset":
        usable = [
            p
            for p in PRESETS
            if p not in ("F32", "BF16") and (imatrix is not None or p not in IMATRIX_ADVISED)
        ]
        return _largest_fitting(source, usable, budget, method, imatrix is not None)
    if method in ("sac", "predicted"):
        # Measurement-free: only the policy's observation is computed (issue 13).
        from ramp_edge.allocate.repair import allocate_with_policy

        if policy is None:
            from ramp_edge import paths

            policy = str(paths.data_dir() / "policies" / DEFAULT_POLICY)
        run = allocate_with_policy if method == "sac" else _predicted
        return run(source, budget, policy, candidates, imatrix is not None)
    table = error_table(
        source,
        candidates,
        imatrix,
        imatrix_id,
        calibrate_roles,
        progress,
        ray_address,
        hessians,
        sensitivity,
    )
    target = budget.target_bytes(source.info.n_params)
    # The header (metadata + tensor infos) does not depend on the types chosen: plan it once so
    # the search gets the exact capacity. A guess would be repaired by fit_to_budget's greedy
    # shrink instead, which undoes the optimum: Gemma-3's 262k-token vocabulary alone is MBs.
    header = plan_export(source, _recipe_from_types(source, {}, method, budget)).header_bytes
    capacity = ks.capacity_for(table, target, header)
    if method == "greedy":
        lo, _ = ks.min_max_bytes(table)
        choice = ks.allocate_greedy(table, max(capacity, lo))
    elif method == "knapsack":
        lo, _ = ks.min_max_bytes(table)
        choice = ks.allocate_knapsack(table, max(capacity, lo))
    else:  # measured
        return _measured(
            source,
            table,
            budget,
            capacity,
            imatrix,
            imatrix_id,
            search,
            eval_settings,
            progress,
            hessians,
        )
    return fit_to_budget(source, table, choice, budget, method)


def _predicted(
    source,
    budget,
    policy_path: str,
    types: tuple[str, ...] = DEFAULT_CANDIDATES,
    has_imatrix: bool = False,
):
    """`allocate --method predicted`: the knapsack over errors predicted by the policy's prior.

    The policy's own regression (`rl.prior`, in its metadata) predicts every candidate's error
    from the same observation the policy sees; the exact knapsack then allocates on those
    predictions, as the policy does with all actions 0. Nothing is measured on the target.
    """
    import time

    from ramp_edge.allocate.predicted import ErrorModel, source_types
    from ramp_edge.allocate.repair import size_table
    from ramp_edge.rl.env import make_task
    from ramp_edge.rl.sac import read_metadata

    start = time.perf_counter()
    meta = read_metadata(policy_path)
    table = size_table(source, types, has_imatrix)
    task = make_task(source, table, header_bytes=0, activations=True)
    features_done = time.perf_counter()
    obs = np.concatenate([task.features, task.extras], 1)
    predicted = ErrorModel.from_dict(meta["prior"]).predict_table(
        table, obs, source_types(source, table)
    )
    target = budget.target_bytes(source.info.n_params)
    header = plan_export(source, _recipe_from_types(source, {}, "predicted", budget)).header_bytes
    lo, _ = ks.min_max_bytes(predicted)
    capacity = max(ks.capacity_for(predicted, target, header), lo)
    recipe = fit_to_budget(
        source, predicted, ks.allocate_knapsack(predicted, capacity), budget, "predicted"
    )
    notes = {
        **recipe.notes,
        "target_measurements": 0,
        "policy": str(policy_path),
        "policy_models": list(meta.get("models", [])),
        "features_seconds": round(features_done - start, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return Recipe(recipe.model_id, recipe.allocation, "predicted", str(budget), notes)


def check_types(types: tuple[str, ...] | None) -> tuple[str, ...]:
    """The candidate allow-list, validated (unknown or non-allocatable names are refused)."""
    if not types:
        return DEFAULT_CANDIDATES
    out = []
    for name in types:
        key = name.strip().upper()
        if key not in CATALOGUE or not CATALOGUE[key].allocatable:
            raise ConfigError(
                f"unknown candidate type {name!r}; allocatable: "
                + ", ".join(t for t, q in CATALOGUE.items() if q.allocatable)
            )
        out.append(key)
    return tuple(dict.fromkeys(out))


def _squeezed_presets(
    source, table: SensitivityTable, capacity: int, has_imatrix: bool, n: int = 3
) -> list[tuple[str, ks.Choice]]:
    """The `n` smallest llama.cpp presets / uniform types at or above `capacity`, each shrunk
    into it by the error table's cheapest downgrades (starting points for the measured search)."""
    sized = []
    specs = [p for p in PRESETS if p not in ("F32", "BF16", "F16")]
    specs += [f"uniform:{t}" for t in UNIFORM_TYPES]
    for spec in specs:
        if not has_imatrix and spec in IMATRIX_ADVISED:
            continue
        try:
            types = recipes.build(source, spec, has_imatrix=has_imatrix).types
        except ConfigError:
            continue
        if not has_imatrix and any(CATALOGUE[q].needs_imatrix for q in types.values()):
            continue
        choice = {}
        for t in table.tensors:
            names = [o[0] for o in t.options]
            want = types.get(t.name, "")
            if want in names:
                choice[t.name] = names.index(want)
            else:  # a type outside the candidates: the option nearest in bytes
                nbytes = CATALOGUE[want].tensor_bytes(t.shape) if want in CATALOGUE else 0
                choice[t.name] = min(
                    range(len(t.options)), key=lambda j: abs(t.options[j][1] - nbytes)
                )
        nbytes = ks.choice_bytes(table, choice)
        if nbytes >= capacity:
            sized.append((nbytes, spec, choice))
    sized.sort(key=lambda x: x[0])
    out = []
    for _, spec, choice in sized[:n]:
        squeezed = ks.fill(table, ks.shrink(table, choice, capacity), capacity)
        out.append((f"{spec} squeezed", squeezed))
    return out


def _measured(
    source,
    table: SensitivityTable,
    budget: Budget,
    capacity: int,
    imatrix: Mapping[str, np.ndarray] | None,
    imatrix_id: str | None,
    search: SearchSettings | None,
    eval_settings: EvalSettings | None,
    progress: ProgressFn | None,
    hessians: Mapping[str, np.ndarray] | None = None,
) -> Recipe:
    """The knapsack, then the measured-quality search (ramp_edge.allocate.search)."""
    import time

    from ramp_edge.evaluate.assembled import AssembledEvaluator

    start_time = time.perf_counter()
    lo, _ = ks.min_max_bytes(table)
    if capacity < lo:
        return fit_to_budget(source, table, ks.allocate_knapsack(table, lo), budget, "measured")
    evaluator = AssembledEvaluator(
        source,
        imatrix=imatrix,
        variant=f"imatrix={imatrix_id}" + (":gptq" if hessians else ""),
        settings=eval_settings or EvalSettings(),
        hessians=hessians,
    )
    result = measured_search(
        table,
        capacity,
        evaluator,
        settings=search or SearchSettings(),
        progress=progress,
        alternatives=_squeezed_presets(source, table, capacity, imatrix is not None),
    )
    settings = evaluator.settings
    recipe = _recipe_from_types(source, ks.choice_types(table, result.choice), "measured", budget)
    size = plan_export(source, recipe).size_bytes
    if size > budget.target_bytes(source.info.n_params):  # cannot happen with an exact header
        return fit_to_budget(source, table, result.choice, budget, "measured")
    notes = {
        "predicted_bytes": size,
        "target_bytes": budget.target_bytes(source.info.n_params),
        **result.summary(),
        "model_runs": evaluator.model_runs,
        "eval_tokens": f"{settings.data} {settings.n_chunks}x{settings.n_ctx}",
        "seconds": round(time.perf_counter() - start_time, 1),
    }
    return Recipe(recipe.model_id, recipe.allocation, "measured", str(budget), notes)


def allocate_for_latency(
    source,
    latency,
    ms_per_token: float,
    method: str = "knapsack",
    progress: ProgressFn | None = None,
    calibrate_roles: bool = True,
) -> Recipe:
    """Choose types so the predicted generation time per token fits `ms_per_token`.

    `latency` is a device's LatencyModel (ramp_edge.budget): seconds per byte read, per type,
    because llama.cpp's CPU kernels differ in speed per type (repacked Q4_0 streams faster than
    Q5_0 on the same bytes). The knapsack runs on predicted nanoseconds instead of bytes.
    """
    from ramp_edge.allocate.sensitivity import TensorCosts

    table = error_table(source, calibrate_roles=calibrate_roles, progress=progress)
    tied = "output.weight" not in {s.name for s in source.specs}

    def ns(name: str, qtype: str, nbytes: int) -> int:
        if name == "token_embd.weight" and not tied:
            return 0  # a row lookup per token, not a full read
        return int(nbytes * latency.seconds_per_byte(qtype) * 1e9)

    timed = SensitivityTable(
        table.model_id,
        tuple(
            TensorCosts(
                t.name,
                t.shape,
                t.n_params,
                tuple(
                    sorted(
                        ((q, ns(t.name, q, b), e) for q, b, e in t.options),
                        key=lambda o: (-o[1], o[2]),
                    )
                ),
            )
            for t in table.tensors
        ),
        0,
    )
    capacity = int((ms_per_token / 1000 - latency.overhead_s_per_token) * 1e9)
    lo, _ = ks.min_max_bytes(timed)
    if capacity < lo:
        fastest = (lo / 1e9 + latency.overhead_s_per_token) * 1000
        raise BudgetError(
            f"{ms_per_token} ms/token is faster than any allocation can run "
            f"here (fastest: {fastest:.2f} ms/token)"
        )
    choice = (ks.allocate_greedy if method == "greedy" else ks.allocate_knapsack)(timed, capacity)
    types = ks.choice_types(timed, choice)
    predicted_ms = (ks.choice_bytes(timed, choice) / 1e9 + latency.overhead_s_per_token) * 1000
    allocation = tuple((s.name, types.get(s.name, s.source_type)) for s in source.specs)
    return Recipe(
        source.model.model_id,
        allocation,
        f"{method}-latency",
        f"{ms_per_token}ms/token",
        {
            "predicted_ms_per_token": round(predicted_ms, 3),
            "estimated_error": round(ks.choice_error(timed, choice), 6),
        },
    )
