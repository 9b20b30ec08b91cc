"""Ray as the distributed engine: per-tensor sensitivity measurements as Ray tasks.

The only module that imports ray (an optional extra: `pip install 'ramp-edge[ray]'`).

One task per quantizable tensor runs `sensitivity.measure_tensor`, the same pure function as
the local loop, on the tensor's stored bytes; so the table, and every recipe built from it, is
identical to the local run's. Each tensor's bytes go into the object store once (`ray.put`)
and reach exactly the one node whose task needs them; the importance matrix (small) is put
once and shared. At most `2 x cluster CPUs` tasks are in flight, so the driver's memory and
the object store hold a bounded number of tensors. A task whose worker dies (OOM, node lost)
is resubmitted by Ray (`max_retries`); finished tasks' results are already on the driver and
are never recomputed.

Scaling (see bench/scale.md): per-task cost is ~n_params x n_types quantize+dequantize passes
(ms to seconds per tensor); data moved per task is the tensor's stored bytes in and ~1 KB of
options out; the serial part is the driver reading and putting each tensor (memory bandwidth)
plus the knapsack and export, which stay local.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ramp_edge.errors import ConfigError, DependencyError

logger = logging.getLogger(__name__)
ProgressFn = Callable[[float, float, str], None]

MAX_RETRIES = 3
INSTALL_HINT = "pip install 'ramp-edge[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise DependencyError(f"--ray-address needs Ray; run: {INSTALL_HINT}") from None
    return ray


def require_ray() -> None:
    """Raise DependencyError (exit 6) naming the extra when Ray is not installed."""
    _ray()


def connect(address: str) -> Any:
    """Join the Ray cluster at `address` (`auto`, `local`, `ray://HOST:PORT`); returns ray.

    Reuses a connection already made in this process (a test's or a notebook's ray.init).
    """
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ConfigError(f"cannot reach a Ray cluster at {address!r}: {err}") from None
    return ray


def _measure_task(
    raw: np.ndarray,
    stored: str,
    spec: tuple[str, tuple[int, ...], str],
    types: tuple[str, ...],
    imatrix: Mapping[str, np.ndarray] | None,
    threads: int,
) -> Any:
    """Runs on a worker: one tensor's TensorCosts (the local loop's function, same bytes)."""
    from ramp_edge.allocate.sensitivity import float_chunks, measure_tensor
    from ramp_edge.source.base import TensorSpec

    s = TensorSpec(*spec)
    imat = imatrix.get(s.name) if imatrix else None
    return measure_tensor(s, float_chunks(raw, stored, s.row_length), types, imat, threads)


def ray_measurer(address: str) -> Callable[..., list[Any]]:
    """A `measure_many` for ramp_edge.allocate.sensitivity.measure_sensitivity: Ray tasks."""

    def measure_many(source, specs, types, imatrix=None, progress=None):
        return measure_on_ray(address, source, specs, tuple(types), imatrix, progress)

    return measure_many


def measure_on_ray(
    address: str,
    source: Any,
    specs: Sequence[Any],
    types: tuple[str, ...],
    imatrix: Mapping[str, np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    task: Callable[..., Any] | None = None,
) -> list[Any]:
    """TensorCosts of `specs`, in their order, each measured by a Ray task.

    Args:
        address: the cluster (`auto`, `ray://HOST:PORT`).
        task: the function run remotely (tests inject a worker crash); default `_measure_task`.
    """
    ray = connect(address)
    threads = max(1, int(os.environ.get("RAMP_EDGE_RAY_TASK_THREADS", "1")))
    remote = ray.remote(num_cpus=threads, max_retries=MAX_RETRIES)(task or _measure_task)
    imat_ref = ray.put(dict(imatrix)) if imatrix else None
    cpus = int(ray.cluster_resources().get("CPU", 1))
    window = max(2, 2 * cpus)
    release = getattr(source, "release", None)
    pending: dict[Any, int] = {}
    results: list[Any] = [None] * len(specs)
    done = 0
    nxt = 0
    if progress:
        progress(0, len(specs), f"sensitivity on Ray ({cpus} CPUs)")
    while done < len(specs):
        while nxt < len(specs) and len(pending) < window:
            s = specs[nxt]
            raw, stored = source.raw(s.name)
            ref = ray.put(np.ascontiguousarray(raw))  # one copy into the object store
            del raw
            if release:
                release(s.name)
            spec = (s.name, tuple(s.shape), s.source_type)
            pending[remote.remote(ref, stored, spec, types, imat_ref, threads)] = nxt
            nxt += 1
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i = pending.pop(ref)
            results[i] = ray.get(ref)
            done += 1
            if progress:
                progress(done, len(specs), f"sensitivity {specs[i].name} (ray)")
    return results
