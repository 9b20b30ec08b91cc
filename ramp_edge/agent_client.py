"""Drive the on-device agent over a connection: push, check, bench, eval, parse.

Works with anything that has the `fleet.ssh` connection interface (`run`, `put`,
`remote_sha256_many`, `name`, `python`): an SSH `Connection` or a `LocalConnection`.

Remote layout, relative to the login home:

    .ramp-edge/agent/ramp_agent.py                 the agent (agents/ramp_agent.py)
    .ramp-edge/agent/ramp_edge/...                 the scorer it imports for `eval`
    .ramp-edge/artifacts/<file name>               pushed GGUFs (resumable, sha256-checked)
    .ramp-edge/tasks/<sha12>.json                  task items for `eval`
    .ramp-edge/venv/                               created by `bootstrap` (--bootstrap)

The agent speaks a versioned JSON-lines protocol (see agents/ramp_agent.py); `Agent.call`
parses it, forwards progress lines, and turns failures into `AgentError` with a `kind`
("out_of_memory", "killed", "missing_dependency", ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramp_edge import __version__, paths
from ramp_edge.bench.records import BenchResult, EvalResult, utc_now
from ramp_edge.errors import ArtifactError, DependencyError, RampEdgeError, RemoteError
from ramp_edge.fsutil import atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

PROTOCOL = 1
REMOTE_ROOT = ".ramp-edge"
AGENT_DIR = f"{REMOTE_ROOT}/agent"
ARTIFACT_DIR = f"{REMOTE_ROOT}/artifacts"
TASK_DIR = f"{REMOTE_ROOT}/tasks"
VENV_DIR = f"{REMOTE_ROOT}/venv"
TASK_SCHEMA = "ramp-edge/task-items"
DEFAULT_REQUIREMENTS = ("llama-cpp-python==0.3.36", "psutil", "numpy")

# Scorer modules the agent imports for `eval`: package path -> source module.
_SCORER = {
    "ramp_edge/errors.py": "ramp_edge.errors",
    "ramp_edge/evaluate/tasks.py": "ramp_edge.evaluate.tasks",
    "ramp_edge/evaluate/runner.py": "ramp_edge.evaluate.runner",
    "ramp_edge/evaluate/loglik.py": "ramp_edge.evaluate.loglik",
}
_STUBS = {
    "ramp_edge/__init__.py": '"""The ramp-edge scorer subset shipped with the device agent."""\n',
    "ramp_edge/evaluate/__init__.py": "",
}

EventFn = Callable[[dict[str, Any]], None]
StatusFn = Callable[[str], None]
ProgressFn = Callable[[float, float, str], None]


class AgentError(RemoteError):
    """The agent reported an error or died. `kind` is the protocol's error kind."""

    def __init__(
        self, message: str, kind: str, exit_code: int | None, detail: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.agent_exit_code = exit_code
        self.detail = dict(detail)

    @property
    def oom(self) -> bool:
        return self.kind in ("out_of_memory", "killed")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """llama-bench style settings: pp<n_prompt>, tg<n_gen>, `reps` timed repetitions."""

    threads: int | None = None
    n_prompt: int = 512
    n_gen: int = 128
    reps: int = 5
    ctx_size: int | None = None
    timeout_s: float | None = 3600.0

    def __post_init__(self) -> None:
        if self.reps < 1 or self.n_prompt < 0 or self.n_gen < 0 or self.n_prompt + self.n_gen == 0:
            raise ValueError("need reps >= 1 and n_prompt or n_gen > 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")

    def agent_args(self) -> list[str]:
        args = [
            "--n-prompt",
            str(self.n_prompt),
            "--n-gen",
            str(self.n_gen),
            "--reps",
            str(self.reps),
        ]
        if self.threads:
            args += ["--threads", str(self.threads)]
        if self.ctx_size:
            args += ["--ctx-size", str(self.ctx_size)]
        return args


@dataclass(frozen=True, slots=True)
class DeployReport:
    """Everything one host produced for one artifact: push, probe, bench, evals."""

    host: str
    device: str | None
    artifact: str
    artifact_sha256: str
    push: Any  # fleet.ssh.PushResult
    probe: Mapping[str, Any]
    bench: BenchResult | None
    evals: tuple[EvalResult, ...] = ()
    duration_s: float = 0.0
    finished_at: str = field(default_factory=utc_now)

    @property
    def status(self) -> str:
        statuses = [r.status for r in ([self.bench] if self.bench else []) + list(self.evals)]
        if "oom" in statuses:
            return "oom"
        return "error" if "error" in statuses else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "device": self.device,
            "artifact": self.artifact,
            "artifact_sha256": self.artifact_sha256,
            "status": self.status,
            "push": self.push.to_dict() if hasattr(self.push, "to_dict") else None,
            "probe": dict(self.probe),
            "bench": self.bench.to_dict() if self.bench else None,
            "evals": [e.to_dict() for e in self.evals],
            "duration_s": round(self.duration_s, 3),
            "finished_at": self.finished_at,
        }


# --------------------------------------------------------------------------- agent files


def agent_source() -> Path:
    """agents/ramp_agent.py of this checkout (RAMP_EDGE_AGENT overrides)."""
    override = os.environ.get("RAMP_EDGE_AGENT")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "agents" / "ramp_agent.py")
    for path in candidates:
        if path.is_file():
            return path
    raise RampEdgeError(
        "the device agent agents/ramp_agent.py was not found; run ramp-edge from a source "
        "checkout or set RAMP_EDGE_AGENT to its path"
    )


def agent_bundle() -> list[tuple[Path, str]]:
    """(local file, remote path) of the agent and the scorer modules it imports."""
    import importlib.util

    files = [(agent_source(), f"{AGENT_DIR}/ramp_agent.py")]
    stub_dir = paths.cache_dir("agent-stubs")
    for rel, text in _STUBS.items():
        stub = stub_dir / rel.replace("/", "__")
        if not stub.is_file() or stub.read_text() != text:
            atomic_write_text(stub, text)
        files.append((stub, f"{AGENT_DIR}/{rel}"))
    for rel, module in _SCORER.items():
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            logger.warning("scorer module %s not found; eval will not work on devices", module)
            continue
        files.append((Path(spec.origin), f"{AGENT_DIR}/{rel}"))
    return files


def build_task_payload(
    task_names: str | Sequence[str], limit: int | None = None, data_dir: Path | None = None
) -> dict[str, Any]:
    """Task items for the agent's `eval`, built here so devices need no task data files."""
    from ramp_edge.evaluate import tasks as task_mod

    entries = []
    for name in task_mod.parse_task_names(task_names):
        task = task_mod.get_task(name)
        items = task.load(limit, data_dir)
        entries.append(
            {
                "name": task.name,
                "version": task.version,
                "metrics": list(task.metrics),
                "limit": limit,
                "items": [
                    {
                        "requests": [list(pair) for pair in item.requests],
                        "gold": item.gold,
                        "choice_chars": list(item.choice_chars),
                    }
                    for item in items
                ],
            }
        )
    return {
        "schema": TASK_SCHEMA,
        "schema_version": 1,
        "provenance": {"ramp_edge": __version__, "created_at": utc_now()},
        "tasks": entries,
    }


# --------------------------------------------------------------------------- agent client


def parse_agent_output(stdout: str) -> dict[str, Any] | None:
    """The final result/error line of an agent run, or None when there is none."""
    final = None
    for line in stdout.splitlines():
        message = _protocol_line(line)
        if message is not None and message.get("type") in ("result", "error"):
            final = message
    return final


def _protocol_line(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or "ramp_agent" not in message:
        return None
    if message["ramp_agent"] != PROTOCOL:
        raise RemoteError(
            f"the device agent speaks protocol {message['ramp_agent']}, this ramp-edge speaks "
            f"{PROTOCOL}; push the matching agent"
        )
    return message


class Agent:
    """The agent on one device, reached through a connection."""

    def __init__(
        self,
        conn: Any,
        *,
        python: str | None = None,
        heartbeat_s: float = 2.0,
        on_event: EventFn | None = None,
    ) -> None:
        self.conn = conn
        self.name = getattr(conn, "name", "device")
        self._python = python or getattr(conn, "python", None)
        self.heartbeat_s = heartbeat_s
        self.on_event = on_event

    @property
    def python(self) -> str:
        if self._python is None:
            venv_python = f"{VENV_DIR}/bin/python"
            self._python = (
                venv_python if self.conn.stat_size(venv_python) is not None else "python3"
            )
        return self._python

    def install(self) -> int:
        """Push the agent and scorer files that differ on the device; returns how many."""
        bundle = agent_bundle()
        remote = self.conn.remote_sha256_many([dst for _, dst in bundle])
        pushed = 0
        for local, dst in bundle:
            sha = sha256_file(local)
            if remote.get(dst) != sha:
                self.conn.put(local, dst, local_sha256=sha)
                pushed += 1
        logger.debug("%s: agent files pushed: %d of %d", self.name, pushed, len(bundle))
        return pushed

    def call(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        timeout: float | None = None,
        on_event: EventFn | None = None,
    ) -> dict[str, Any]:
        """Run one agent command; return its result data or raise AgentError."""
        argv = [
            self.python,
            f"{AGENT_DIR}/ramp_agent.py",
            "--heartbeat",
            str(self.heartbeat_s),
            command,
            *args,
        ]
        listener = on_event or self.on_event

        def on_line(line: str) -> None:
            message = _protocol_line(line)
            if (
                message is not None
                and listener is not None
                and message.get("type")
                in (
                    "progress",
                    "heartbeat",
                )
            ):
                listener(message)

        result = self.conn.run(argv, timeout=timeout, check=False, on_line=on_line)
        final = parse_agent_output(result.stdout)
        if final is not None and final.get("ok"):
            return dict(final.get("data") or {})
        if final is not None:
            error = dict(final.get("error") or {})
            kind = str(error.get("kind", "unknown"))
            message = f"{self.name}: agent {command} failed ({kind}): {error.get('message', '')}"
            raise AgentError(message, kind, result.exit_code, error)
        if result.exit_code in (None, 137):
            raise AgentError(
                f"{self.name}: agent {command} was killed (exit "
                f"{result.exit_code if result.exit_code is not None else 'by a signal'}), most "
                "likely by the out-of-memory killer",
                "killed",
                result.exit_code,
                {"stderr_tail": result.stderr.strip().splitlines()[-5:]},
            )
        tail = result.stderr.strip().splitlines()[-3:]
        if result.exit_code == 127 or any("No such file" in t or "not found" in t for t in tail):
            raise AgentError(
                f"{self.name}: cannot start the agent with {self.python!r} (exit "
                f"{result.exit_code}): {' '.join(tail) or 'no output'}; set "
                "ansible_python_interpreter or rerun with --bootstrap",
                "no_python",
                result.exit_code,
                {"stderr_tail": tail},
            )
        raise AgentError(
            f"{self.name}: agent {command} exited {result.exit_code} without a result: "
            f"{' '.join(tail) or 'no output'}",
            "no_result",
            result.exit_code,
            {"stderr_tail": tail},
        )

    def env_check(self) -> dict[str, Any]:
        return self.call("env-check", timeout=120)

    def probe(self) -> dict[str, Any]:
        return self.call("probe", timeout=120)

    def bench(self, remote_model: str, options: BenchOptions) -> dict[str, Any]:
        return self.call(
            "bench", ["--model", remote_model, *options.agent_args()], timeout=options.timeout_s
        )

    def eval(
        self,
        remote_model: str,
        remote_tasks: str,
        *,
        limit: int | None = None,
        threads: int | None = None,
        n_ctx: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        args = ["--model", remote_model, "--tasks", remote_tasks]
        if limit:
            args += ["--limit", str(limit)]
        if threads:
            args += ["--threads", str(threads)]
        if n_ctx:
            args += ["--n-ctx", str(n_ctx)]
        return self.call("eval", args, timeout=timeout)


def bootstrap(
    conn: Any,
    *,
    python: str = "python3",
    requirements: Sequence[str] = DEFAULT_REQUIREMENTS,
    pip_args: Sequence[str] = (),
    timeout: float | None = 3600.0,
) -> str:
    """Create `.ramp-edge/venv` on the device and pip-install the agent's dependencies.

    llama-cpp-python builds llama.cpp from source where no wheel fits (10+ minutes on a
    Raspberry Pi); the link watchdog keeps the connection checked meanwhile. Returns the venv's
    python path (relative to the login home).
    """
    venv_python = f"{VENV_DIR}/bin/python"
    logger.info("%s: creating %s", getattr(conn, "name", "device"), VENV_DIR)
    result = conn.run([python, "-m", "venv", VENV_DIR], check=False, timeout=300)
    if not result.ok:
        hint = (
            " (on Debian/Ubuntu: apt install python3-venv)" if "ensurepip" in result.stderr else ""
        )
        raise DependencyError(
            f"{getattr(conn, 'name', 'device')}: cannot create a venv with {python}{hint}: "
            f"{result.stderr.strip().splitlines()[-1:] or result.exit_code}"
        )
    if requirements:
        result = conn.run(
            [
                venv_python,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *pip_args,
                *requirements,
            ],
            check=False,
            timeout=timeout,
        )
        if not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
            raise DependencyError(
                f"{getattr(conn, 'name', 'device')}: pip install {' '.join(requirements)} "
                f"failed: {tail[0]}"
            )
    return venv_python


# --------------------------------------------------------------------------- deploy


def _bench_failure(err: AgentError, **fields: Any) -> BenchResult:
    return BenchResult.failure(
        status="oom" if err.oom else "error",
        error=str(err),
        peak_rss_bytes=err.detail.get("peak_rss_bytes"),
        **fields,
    )


def deploy_to_host(
    conn: Any,
    artifact_path: str | os.PathLike[str],
    tasks: str | Sequence[str] | Mapping[str, Any] | None = None,
    limit: int | None = None,
    bench_opts: BenchOptions | None = None,
    *,
    device: str | None = None,
    bootstrap_env: bool = False,
    artifact_sha256: str | None = None,
    eval_n_ctx: int | None = None,
    on_status: StatusFn | None = None,
    progress: ProgressFn | None = None,
) -> DeployReport:
    """Push an artifact plus the agent to one device, then bench (and eval) it there.

    Args:
        conn: a fleet.ssh Connection or LocalConnection.
        artifact_path: local GGUF.
        tasks: task names ("arc_easy,piqa"), or a payload from `build_task_payload`; None: no eval.
        limit: items per task when `tasks` are names.
        bench_opts: llama-bench style options; defaults pp512/tg128 x 5.
        device: device profile id recorded with the results.
        bootstrap_env: create a venv and pip-install what the agent misses.
        on_status: short status texts for a live view ("push 40%", "bench tg128 3/5").
        progress: push progress callback (bytes done, total, description).

    Returns:
        DeployReport. An out-of-memory or failed benchmark/eval is recorded in the report with
        status "oom"/"error"; a broken link, a failed push or a missing dependency raises.

    Raises:
        RemoteError, ArtifactError, DependencyError.
    """
    start = time.monotonic()
    options = bench_opts or BenchOptions()
    status = on_status or (lambda text: None)
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    sha = artifact_sha256 or sha256_file(artifact)
    size = artifact.stat().st_size
    name = getattr(conn, "name", "device")

    def on_event(message: dict[str, Any]) -> None:
        if message.get("type") == "progress":
            status(f"{message.get('phase')} {message.get('done')}/{message.get('total')}")

    agent = Agent(conn, on_event=on_event)
    status("push agent")
    agent.install()
    status("env-check")
    env = agent.env_check()
    if not env.get("ready", {}).get("bench"):
        missing = ", ".join(env.get("missing") or ["llama-cpp-python"])
        if not bootstrap_env:
            raise DependencyError(
                f"{name}: the device lacks {missing} (python {env.get('python')}); rerun with "
                f"--bootstrap to install them into {VENV_DIR}, or: {env.get('install_hint')}"
            )
        status("bootstrap")
        agent = Agent(conn, python=bootstrap(conn, python=agent.python), on_event=on_event)
        env = agent.env_check()
        if not env.get("ready", {}).get("bench"):
            raise DependencyError(f"{name}: still missing after --bootstrap: {env.get('missing')}")
    probe = agent.probe()
    llama = probe.get("llama_cpp") or {}

    def push_progress(done: float, total: float, desc: str) -> None:
        status(f"push {100 * done / total:.0f}%" if total else "push")
        if progress is not None:
            progress(done, total, desc)

    status("push 0%")
    remote_model = f"{ARTIFACT_DIR}/{artifact.name}"
    push = conn.put(artifact, remote_model, progress=push_progress, local_sha256=sha)
    fields = {
        "host": name,
        "device": device,
        "artifact": artifact.name,
        "artifact_sha256": sha,
    }
    status("bench")
    try:
        data = agent.bench(remote_model, options)
        bench = BenchResult.from_agent(
            data,
            artifact_bytes=size,
            llama_cpp_version=llama.get("version"),
            system_info=llama.get("system_info"),
            **fields,
        )
    except AgentError as err:
        if err.kind in ("missing_dependency", "no_python", "usage"):
            raise
        logger.warning("%s", err)
        bench = _bench_failure(
            err,
            artifact_bytes=size,
            threads=options.threads or 0,
            n_prompt=options.n_prompt,
            n_gen=options.n_gen,
            reps=options.reps,
            **fields,
        )
    evals: list[EvalResult] = []
    if tasks:
        payload = dict(tasks) if isinstance(tasks, Mapping) else build_task_payload(tasks, limit)
        text = json.dumps(payload, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        local_tasks = paths.cache_dir("task-items") / f"{digest[:12]}.json"
        if not local_tasks.is_file():
            atomic_write_text(local_tasks, text)
        remote_tasks = f"{TASK_DIR}/{digest[:12]}.json"
        conn.put(local_tasks, remote_tasks, local_sha256=digest)
        status("eval")
        try:
            data = agent.eval(
                remote_model,
                remote_tasks,
                threads=options.threads,
                n_ctx=eval_n_ctx,
                timeout=options.timeout_s,
            )
            evals = [EvalResult.from_agent(t, **fields) for t in data.get("tasks", [])]
        except AgentError as err:
            if err.kind in ("missing_dependency", "missing_scorer", "no_python", "usage"):
                raise
            logger.warning("%s", err)
            evals = [
                EvalResult(
                    task=t["name"],
                    task_version=int(t["version"]),
                    n=len(t["items"]),
                    status="oom" if err.oom else "error",
                    error=str(err),
                    **fields,
                )
                for t in payload["tasks"]
            ]
    status("done")
    return DeployReport(
        host=name,
        device=device,
        artifact=artifact.name,
        artifact_sha256=sha,
        push=push,
        probe=probe,
        bench=bench,
        evals=tuple(evals),
        duration_s=time.monotonic() - start,
    )


def store_report(store: Any, report: DeployReport) -> list[int]:
    """Commit a report's bench and eval records to a `ramp_edge.store.Store`; returns row ids.

    The device column is the profile id, or the host name when the host names no profile.
    """
    device = report.device or report.host
    ids = []
    if report.bench is not None:
        ids.append(
            store.add_result("bench", device, report.host, report.artifact, report.bench.to_dict())
        )
    for result in report.evals:
        ids.append(store.add_result("eval", device, report.host, report.artifact, result.to_dict()))
    return ids


def bench_fleet(
    hosts: Sequence[Any],
    artifact_path: str | os.PathLike[str],
    *,
    tasks: str | Sequence[str] | None = None,
    limit: int | None = None,
    bench_opts: BenchOptions | None = None,
    forks: int = 5,
    store: Any | None = None,
    connect: Callable[[Any], Any] | None = None,
    connect_options: Mapping[str, Any] | None = None,
    bootstrap_env: bool = False,
    on_status: Callable[[str, str], None] | None = None,
    on_report: Callable[[DeployReport], None] | None = None,
) -> Any:
    """`deploy_to_host` on every inventory host, at most `forks` at once.

    Each host's records are committed to `store` as soon as that host finishes, so a crash or a
    dead host later never loses finished results. Returns a fleet.group.FleetResult whose
    values are DeployReports.
    """
    from ramp_edge.fleet.group import connect_host, run_on_hosts

    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ArtifactError(f"artifact not found: {artifact}")
    sha = sha256_file(artifact)
    payload = build_task_payload(tasks, limit) if tasks else None
    options = dict(connect_options or {})
    status = on_status or (lambda host, text: None)

    def connect_one(host: Any) -> Any:
        conn = connect(host) if connect is not None else connect_host(host, **options)
        conn.host = host
        return conn

    def work(conn: Any) -> DeployReport:
        host = conn.host
        return deploy_to_host(
            conn,
            artifact,
            payload,
            bench_opts=bench_opts,
            device=host.device,
            bootstrap_env=bootstrap_env,
            artifact_sha256=sha,
            on_status=lambda text: status(host.name, text),
        )

    def done(host: Any, outcome: Any) -> None:
        if outcome.ok:
            if store is not None:
                store_report(store, outcome.value)
            if on_report is not None:
                on_report(outcome.value)

    return run_on_hosts(
        hosts, work, forks=forks, connect=connect_one, on_done=done, on_status=on_status
    )
