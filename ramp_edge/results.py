"""Measurement records: one host, one artifact, one run. Stdlib only.

`BenchResult` holds llama-bench style throughput (pp = prompt processing, tg = generation, in
tokens/s: mean and sample standard deviation over repetitions), model load time and peak RSS.
`EvalResult` holds one task's multiple-choice accuracy. Both carry a `status`: "ok", or
"oom" (out of memory: a MemoryError or allocation failure reported by the agent, or the agent
killed by SIGKILL, which is what the kernel's OOM killer sends), or "error"; failed records keep
what is known (host, artifact, message) so a fleet report shows every host.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("ok", "oom", "error")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in (values or ()))


@dataclass(frozen=True, slots=True)
class BenchResult:
    """Throughput of one artifact on one host (llama-bench terms: pp512 / tg128).

    Attributes:
        pp_tps, tg_tps: mean tokens/s over `reps` repetitions; None when not measured/failed.
        pp_tps_std, tg_tps_std: sample standard deviation (n-1) of the per-repetition t/s.
        load_time_s: seconds for llama.cpp to load the model (mmap).
        peak_rss_bytes: the agent process's peak resident set size.
        status: "ok" | "oom" | "error"; `error` says what happened when not ok.
    """

    host: str
    device: str | None
    artifact: str
    artifact_sha256: str
    artifact_bytes: int
    threads: int
    n_prompt: int
    n_gen: int
    reps: int
    pp_tps: float | None = None
    pp_tps_std: float | None = None
    tg_tps: float | None = None
    tg_tps_std: float | None = None
    pp_samples_tps: tuple[float, ...] = ()
    tg_samples_tps: tuple[float, ...] = ()
    load_time_s: float | None = None
    peak_rss_bytes: int | None = None
    llama_cpp_version: str | None = None
    system_info: str | None = None
    status: str = "ok"
    error: str | None = None
    measured_at: str = field(default_factory=utc_now)
    n_gpu_layers: int | None = None  # layers llama.cpp offloaded (-1: all); 0 on CPU
    signal: int | None = None  # the signal a native crash died from (11: SIGSEGV)
    # (offloaded, total) layers as llama.cpp reported loading the model; None: not reported
    layers_offloaded: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "ok" and self.pp_tps is None and self.tg_tps is None:
            raise ValueError("an ok BenchResult needs pp_tps or tg_tps")
        if self.status != "ok" and not self.error:
            raise ValueError("a failed BenchResult needs an error message")
        if self.reps < 0 or self.threads < 0:
            raise ValueError("reps and threads must be >= 0")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "device": self.device,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "artifact_bytes": self.artifact_bytes,
            "threads": self.threads,
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "reps": self.reps,
            "pp_tps": self.pp_tps,
            "pp_tps_std": self.pp_tps_std,
            "tg_tps": self.tg_tps,
            "tg_tps_std": self.tg_tps_std,
            "pp_samples_tps": list(self.pp_samples_tps),
            "tg_samples_tps": list(self.tg_samples_tps),
            "load_time_s": self.load_time_s,
            "peak_rss_bytes": self.peak_rss_bytes,
            "llama_cpp_version": self.llama_cpp_version,
            "system_info": self.system_info,
            "status": self.status,
            "error": self.error,
            "measured_at": self.measured_at,
            "n_gpu_layers": self.n_gpu_layers,
            "signal": self.signal,
            "layers_offloaded": list(self.layers_offloaded) if self.layers_offloaded else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        values = {name: data.get(name) for name in cls.__dataclass_fields__ if name in data}
        values["pp_samples_tps"] = _floats(data.get("pp_samples_tps"))
        values["tg_samples_tps"] = _floats(data.get("tg_samples_tps"))
        values["layers_offloaded"] = _layer_pair(data.get("layers_offloaded"))
        return cls(**values)

    @classmethod
    def from_agent(
        cls,
        data: dict[str, Any],
        *,
        host: str,
        device: str | None,
        artifact: str,
        artifact_sha256: str,
        artifact_bytes: int,
        llama_cpp_version: str | None = None,
        system_info: str | None = None,
    ) -> BenchResult:
        """Build from the agent's `bench` result data (protocol v1)."""
        tests = data.get("tests", {})
        pp = next((v for k, v in tests.items() if k.startswith("pp")), None)
        tg = next((v for k, v in tests.items() if k.startswith("tg")), None)
        return cls(
            host=host,
            device=device,
            artifact=artifact,
            artifact_sha256=artifact_sha256,
            artifact_bytes=artifact_bytes,
            threads=int(data["threads"]),
            n_prompt=int(pp["n_tokens"]) if pp else 0,
            n_gen=int(tg["n_tokens"]) if tg else 0,
            reps=int(data["reps"]),
            pp_tps=float(pp["avg_ts"]) if pp else None,
            pp_tps_std=float(pp["stddev_ts"]) if pp else None,
            tg_tps=float(tg["avg_ts"]) if tg else None,
            tg_tps_std=float(tg["stddev_ts"]) if tg else None,
            pp_samples_tps=_floats(pp["samples_ts"]) if pp else (),
            tg_samples_tps=_floats(tg["samples_ts"]) if tg else (),
            load_time_s=float(data["load_time_s"]) if data.get("load_time_s") is not None else None,
            peak_rss_bytes=int(data["peak_rss_bytes"]) if data.get("peak_rss_bytes") else None,
            llama_cpp_version=llama_cpp_version,
            system_info=system_info,
            n_gpu_layers=(
                int(data["n_gpu_layers"]) if data.get("n_gpu_layers") is not None else None
            ),
            layers_offloaded=_layer_pair(data.get("layers_offloaded")),
        )

    @classmethod
    def failure(
        cls,
        *,
        host: str,
        device: str | None,
        artifact: str,
        artifact_sha256: str = "",
        artifact_bytes: int = 0,
        status: str,
        error: str,
        threads: int = 0,
        n_prompt: int = 0,
        n_gen: int = 0,
        reps: int = 0,
        peak_rss_bytes: int | None = None,
        n_gpu_layers: int | None = None,
        signal: int | None = None,
    ) -> BenchResult:
        return cls(
            host=host,
            device=device,
            artifact=artifact,
            artifact_sha256=artifact_sha256,
            artifact_bytes=artifact_bytes,
            threads=threads,
            n_prompt=n_prompt,
            n_gen=n_gen,
            reps=reps,
            peak_rss_bytes=peak_rss_bytes,
            status=status,
            error=error,
            n_gpu_layers=n_gpu_layers,
            signal=signal,
        )


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Zero-shot multiple-choice accuracy of one artifact on one task on one host."""

    host: str
    device: str | None
    artifact: str
    artifact_sha256: str
    task: str
    task_version: int
    n: int
    acc: float | None = None
    acc_stderr: float | None = None
    acc_norm: float | None = None
    acc_norm_stderr: float | None = None
    items_per_s: float | None = None
    status: str = "ok"
    error: str | None = None
    measured_at: str = field(default_factory=utc_now)
    n_gpu_layers: int | None = None  # the same offload as the bench of the same artifact
    signal: int | None = None  # the signal a native crash died from

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status == "ok" and (self.acc is None or not 0.0 <= self.acc <= 1.0 or self.n < 1):
            raise ValueError(f"an ok EvalResult needs n >= 1 and 0 <= acc <= 1 (task {self.task})")
        if self.status != "ok" and not self.error:
            raise ValueError("a failed EvalResult needs an error message")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    @classmethod
    def from_agent(
        cls,
        task_data: dict[str, Any],
        *,
        host: str,
        device: str | None,
        artifact: str,
        artifact_sha256: str,
        n_gpu_layers: int | None = None,
    ) -> EvalResult:
        """Build from one entry of the agent's `eval` result (a TaskResult.to_dict())."""
        return cls(
            host=host,
            device=device,
            artifact=artifact,
            artifact_sha256=artifact_sha256,
            task=str(task_data["task"]),
            task_version=int(task_data["version"]),
            n=int(task_data["n"]),
            acc=float(task_data["acc"]),
            acc_stderr=task_data.get("acc_stderr"),
            acc_norm=task_data.get("acc_norm"),
            acc_norm_stderr=task_data.get("acc_norm_stderr"),
            items_per_s=task_data.get("items_per_s"),
            n_gpu_layers=n_gpu_layers,
        )


def _layer_pair(value: Any) -> tuple[int, int] | None:
    """[offloaded, total] from the agent or a stored payload -> a tuple, or None."""
    if not value or len(value) != 2:
        return None
    return int(value[0]), int(value[1])
