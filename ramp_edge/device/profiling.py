"""Measure a device into a `MeasuredProfile` through its agent, over SSH or on this machine.

One path for every host (`profile_host`): the agent (agents/ramp_agent.py) probes RAM, cgroup
cap, CPU and ISA flags, Python and llama.cpp versions, backends and loadable ggml types, GPU or
unified memory, free disk and thermal state; measures copy bandwidth; and times the probe models
(`probe_models`, made here and pushed once) with its llama-bench-style `bench`: pp = n_prompt
tokens in one batch, tg = n_gen single-token decodes, mean over repetitions. Facts about the
machine this runs on, read without the agent, are in `host`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ramp_edge.device.budget import bytes_read_per_token
from ramp_edge.device.host import parse_cpu_features
from ramp_edge.device.probe_models import DEFAULT_TYPES, ProgressFn, no_progress, probe_models
from ramp_edge.device.profiles import (
    LOCALHOST,
    DeviceProfile,
    MeasuredProfile,
    TypeSpeed,
    normalize_arch,
)
from ramp_edge.errors import DependencyError, RampEdgeError
from ramp_edge.source.gguf_header import read_gguf_tensors

if TYPE_CHECKING:
    from ramp_edge.fleet.transport import Transport

logger = logging.getLogger(__name__)

# Bump when what the probe measures or how changes; stored with every measurement.
PROBE_VERSION = 1

# A stored measurement younger than this (with llama.cpp speeds) spares `deploy --host` a profile.
FRESH_DAYS = 7.0


@dataclass(frozen=True, slots=True)
class ProbeOptions:
    """How long to measure. `FAST` is for tests (under a few seconds on SmolLM2-135M)."""

    n_prompt: int = 128
    n_gen: int = 64
    repetitions: int = 3
    # Each type is benched once per round, the types interleaved, and its speed is the median
    # of all its samples: a burst of load from other jobs then hits one sample of each type,
    # not every sample of one type (one noisy run left a type 15% slow on a shared VM).
    rounds: int = 2
    bandwidth_bytes: int = 128 << 20  # per array; two arrays are allocated
    bandwidth_repeats: int = 5


DEFAULT_OPTIONS = ProbeOptions()
FAST_OPTIONS = ProbeOptions(
    n_prompt=16, n_gen=8, repetitions=1, rounds=1, bandwidth_bytes=16 << 20, bandwidth_repeats=2
)


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Profiling through the device agent: one path for localhost and SSH hosts


def _type_speed_from_bench(path: Path, qtype: str, model: str, runs: Sequence[dict]) -> TypeSpeed:
    """One type's speed from the agent's bench runs of its probe file: the median of every
    run's samples (each run's mean where it reports no samples)."""

    def samples(prefix: str) -> list[float]:
        out: list[float] = []
        for data in runs:
            test = next((v for k, v in data.get("tests", {}).items() if k.startswith(prefix)), {})
            out += [float(x) for x in test.get("samples_ts") or ()] or (
                [float(test["avg_ts"])] if "avg_ts" in test else []
            )
        return out

    data = runs[0]
    tests = data.get("tests", {})
    pp = next((v for k, v in tests.items() if k.startswith("pp")), None)
    tg = next((v for k, v in tests.items() if k.startswith("tg")), None)
    if tg is None:
        raise RampEdgeError(f"the agent's bench of {path.name} has no tg result")
    tg_samples, pp_samples = samples("tg"), samples("pp")
    return TypeSpeed(
        qtype=qtype,
        model=model,
        file_bytes=path.stat().st_size,
        bytes_by_type=tuple(bytes_read_per_token(read_gguf_tensors(path)).items()),
        n_threads=int(data["threads"]),
        n_prompt=int(pp["n_tokens"]) if pp else 0,
        n_gen=int(tg["n_tokens"]),
        pp_tokens_per_s=round(statistics.median(pp_samples), 3) if pp and pp_samples else 0.0,
        tg_tokens_per_s=round(statistics.median(tg_samples), 3),
        tg_samples_tokens_per_s=tuple(round(x, 3) for x in tg_samples),
    )


def profile_from_probe(
    device: str,
    probe: Mapping[str, Any],
    *,
    bandwidth_bytes_per_s: float | None,
    type_speeds: Sequence[TypeSpeed] = (),
    source: str = "",
) -> MeasuredProfile:
    """A MeasuredProfile from the agent's `probe` data (and bandwidth, speeds)."""
    cpu = dict(probe.get("cpu") or {})
    memory = dict(probe.get("memory") or {})
    llama = dict(probe.get("llama_cpp") or {})
    total = int(memory.get("total_bytes") or 0)
    available = int(memory.get("available_bytes") or total)
    cap = probe.get("cgroup_memory_limit_bytes")
    if cap:  # a container's cap is the RAM a model can really get
        total, available = min(total, int(cap)), min(available, int(cap))
    logical = int(cpu.get("logical_cores") or 1)
    os_facts = dict(probe.get("os") or {})
    facts = {
        "python": dict(probe.get("python") or {}),
        "os": os_facts,
        "llama_cpp": {k: v for k, v in llama.items() if k != "system_info"} or None,
        "gpu": dict(probe.get("gpu") or {}),
        "disk_free_bytes": probe.get("disk_free_bytes"),
        "thermal": dict(probe.get("thermal") or {}),
        "cgroup_memory_limit_bytes": cap,
        "ram_total_bytes_physical": memory.get("total_bytes"),
        "swap_total_bytes": memory.get("swap_total_bytes"),
        "cpu_flags_raw_count": len(cpu.get("flags") or ()),
        "cpu_max_mhz": cpu.get("max_mhz"),
    }
    return MeasuredProfile(
        device=device,
        host=str(probe.get("hostname") or ""),
        created_utc=_now_utc(),
        agent_version=f"{probe.get('agent_version', '?')}+probe.{PROBE_VERSION}",
        arch=normalize_arch(str(os_facts.get("machine") or "")),
        cpu=str(cpu.get("model") or ""),
        cores=int(cpu.get("physical_cores") or logical),
        logical_cpus=logical,
        cpu_features=parse_cpu_features("flags: " + " ".join(cpu.get("flags") or ())),
        ram_total_bytes=total,
        ram_available_bytes=available,
        bandwidth_copy_bytes_per_s=(
            None if bandwidth_bytes_per_s is None else round(bandwidth_bytes_per_s)
        ),
        llama_system_info=str(llama.get("system_info") or ""),
        llama_cpp_version=str(llama.get("version") or ""),
        type_speeds=tuple(type_speeds),
        load_avg_1m=(
            None if probe.get("load_avg_1m") is None else round(float(probe["load_avg_1m"]), 2)
        ),
        source=source,
        facts=facts,
    )


def profile_host(
    conn: Transport,
    device: str,
    *,
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    options: ProbeOptions = DEFAULT_OPTIONS,
    llama: bool = True,
    n_threads: int | None = None,
    bootstrap_env: bool = False,
    progress: ProgressFn = no_progress,
) -> MeasuredProfile:
    """Measure the device behind `conn` (SSH or this machine) through its agent.

    The same steps for every host: push the agent, probe (RAM, cgroup cap, CPU, backends, GPU,
    disk, thermal), copy bandwidth, then llama.cpp pp/tg of the probe models (made here, pushed
    once) with the agent's llama-bench-style `bench`.

    Raises:
        RemoteError (link, agent failures), DependencyError (no llama-cpp-python on the device
        and no `bootstrap_env`).
    """
    from ramp_edge.agent_client import ARTIFACT_DIR, Agent, BenchOptions, bootstrap

    rounds = max(1, options.rounds)
    steps = 3 + ((1 + rounds) * len(types) if llama else 0)
    progress(0, steps, "agent")
    agent = Agent(conn)
    agent.install()
    if llama:
        env = agent.env_check()
        if not env.get("ready", {}).get("bench"):
            if not bootstrap_env:
                raise DependencyError(
                    f"{conn.name}: the device lacks {', '.join(env.get('missing') or [])}; "
                    "rerun with --bootstrap, or profile with --no-llama"
                )
            agent = Agent(conn, python=bootstrap(conn, python=agent.python))
    progress(1, steps, "probe")
    probe = agent.probe()
    progress(2, steps, "memory bandwidth")
    size_mib = max(1, options.bandwidth_bytes >> 20)
    bw = float(agent.bandwidth(size_mib, options.bandwidth_repeats)["copy_bytes_per_s"])
    speeds: list[TypeSpeed] = []
    if llama:
        model_id, files = probe_models(
            model, types, progress=lambda i, n, d: progress(3 + i, steps, d)
        )
        opts = BenchOptions(
            threads=n_threads,
            n_prompt=options.n_prompt,
            n_gen=options.n_gen,
            reps=options.repetitions,
            timeout_s=900.0,
        )
        runs: dict[str, list[dict]] = {qtype: [] for qtype, _ in files}
        for round_ in range(rounds):
            for i, (qtype, path) in enumerate(files):
                remote = f"{ARTIFACT_DIR}/probe/{path.name}"
                done = 3 + len(types) * (1 + round_) + i
                progress(done, steps, f"llama.cpp speed {qtype} (round {round_ + 1})")
                if round_ == 0:
                    conn.put(path, remote)
                runs[qtype].append(agent.bench(remote, opts))
        for qtype, path in files:
            speed = _type_speed_from_bench(path, qtype, model_id, runs[qtype])
            logger.info(
                "%s %s: pp %.1f t/s, tg %.1f t/s",
                conn.name,
                qtype,
                speed.pp_tokens_per_s,
                speed.tg_tokens_per_s,
            )
            speeds.append(speed)
    progress(steps, steps, "done")
    where = "localhost" if conn.name in ("localhost", LOCALHOST) else conn.name
    kind = "ssh" if type(conn).__name__ == "Connection" else "local"
    measured = profile_from_probe(
        device,
        probe,
        bandwidth_bytes_per_s=bw,
        type_speeds=speeds,
        source=f"agent over {kind} {where}",
    )
    load = measured.load_avg_1m
    if load is not None and load > 0.5 * measured.logical_cpus:
        # llama.cpp's threads meet at a barrier per graph node; one descheduled thread stalls
        # all of them (on a shared 2-core VM, 2 threads fell from ~120 to ~5 tok/s).
        logger.warning(
            "%s: load average %.1f on %d CPUs while profiling: other jobs compete, so speeds "
            "are low and noisy",
            conn.name,
            load,
            measured.logical_cpus,
        )
    return measured


def profile_localhost(
    device: str = LOCALHOST,
    model: str = "smollm2-135m",
    types: Sequence[str] = DEFAULT_TYPES,
    fast: bool = False,
    llama: bool = True,
    n_threads: int | None = None,
    progress: ProgressFn = no_progress,
) -> MeasuredProfile:
    """`profile_host` on this machine (the agent as a local subprocess, no SSH)."""
    from ramp_edge.fleet.local import LocalConnection

    with LocalConnection() as conn:
        return profile_host(
            conn,
            device,
            model=model,
            types=types,
            options=FAST_OPTIONS if fast else DEFAULT_OPTIONS,
            llama=llama,
            n_threads=n_threads,
            progress=progress,
        )


def quick_probe(device: str = LOCALHOST) -> MeasuredProfile:
    """Host facts plus a short bandwidth test through the local agent; no llama.cpp run."""
    return profile_localhost(device, llama=False, fast=True)


def is_fresh(measured: MeasuredProfile | None, max_age_days: float = FRESH_DAYS) -> bool:
    """Whether a stored measurement is recent and has llama.cpp speeds."""
    if measured is None or not measured.type_speeds:
        return False
    try:
        when = _dt.datetime.strptime(measured.created_utc, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=_dt.UTC
        )
    except ValueError:
        return False
    return (_dt.datetime.now(_dt.UTC) - when).total_seconds() < max_age_days * 86400


def ensure_measured(profile: DeviceProfile, progress: ProgressFn = no_progress) -> DeviceProfile:
    """An `auto` profile (localhost) that was never measured gets a quick probe merged over it."""
    if not profile.auto or profile.measured is not None:
        return profile
    logger.warning(
        "%s has no stored measurement; using a quick probe (no llama.cpp speeds). "
        "For measured speeds run: ramp-edge profile --device %s",
        profile.id,
        profile.id,
    )
    return profile.merged(quick_probe(profile.id))
