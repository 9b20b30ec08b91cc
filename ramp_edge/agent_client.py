"""The host side of the device agent: its files, its protocol, and calls to it.

`Agent` drives agents/ramp_agent.py over any `fleet.transport.Transport` (an SSH `Connection`
or a `LocalConnection`); `bootstrap` gives a device the venv the agent needs; `agent_bundle`
lists the files pushed with it. The protocol constants below must equal the agent's
(tests/agent_client pins them).

Remote layout, relative to the login home:

    .ramp-edge/agent/ramp_agent.py                 the agent (agents/ramp_agent.py)
    .ramp-edge/agent/ramp_edge/...                 the scorer it imports for `eval`
    .ramp-edge/artifacts/<sha12>-<file name>       pushed GGUFs (resumable, sha256-checked)
    .ramp-edge/tasks/<sha12>.json                  task items for `eval`
    .ramp-edge/venv/                               created by `bootstrap` (--bootstrap)

The agent speaks a versioned JSON-lines protocol (see agents/ramp_agent.py); `Agent.call`
parses it, forwards progress lines, and turns failures into `AgentError` with a `kind`
("out_of_memory", "killed", "missing_dependency", ...).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge import __version__, paths
from ramp_edge.errors import DependencyError, RampEdgeError, RemoteError
from ramp_edge.fleet.transport import Transport
from ramp_edge.fsutil import atomic_write_text, sha256_file
from ramp_edge.results import utc_now

logger = logging.getLogger(__name__)

PROTOCOL = 1
REMOTE_ROOT = ".ramp-edge"
AGENT_DIR = f"{REMOTE_ROOT}/agent"
ARTIFACT_DIR = f"{REMOTE_ROOT}/artifacts"
TASK_DIR = f"{REMOTE_ROOT}/tasks"
VENV_DIR = f"{REMOTE_ROOT}/venv"
TASK_SCHEMA = "ramp-edge/task-items"


def remote_artifact_path(name: str, sha256: str) -> str:
    """Where an artifact lands on a device: named by content and file name, so two different
    files called model.gguf never overwrite each other there (fleet clean --keep takes the
    plain file name)."""
    return f"{ARTIFACT_DIR}/{sha256[:12]}-{name}"


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

    @property
    def signal(self) -> int | None:
        """The signal a crashed worker died from (11 for SIGSEGV), else None."""
        value = self.detail.get("signal")
        return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """llama-bench style settings: pp<n_prompt>, tg<n_gen>, `reps` timed repetitions."""

    threads: int | None = None
    n_prompt: int = 512
    n_gen: int = 128
    reps: int = 5
    ctx_size: int | None = None
    timeout_s: float | None = 3600.0
    n_gpu_layers: int = 0  # -1: all layers; resolved from "auto" by the pipeline
    extra_bufts: bool = True  # False: llama.cpp --no-repack (the canary's fallback)

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
        return args + load_args(self.n_gpu_layers, self.extra_bufts)


def load_args(n_gpu_layers: int, extra_bufts: bool) -> list[str]:
    """The agent's model-load flags, the same for bench, eval and canary."""
    args = ["--n-gpu-layers", str(n_gpu_layers)] if n_gpu_layers else []
    return args + ([] if extra_bufts else ["--no-extra-bufts"])


# --------------------------------------------------------------------------- agent files


def agent_source() -> Path:
    """agents/ramp_agent.py of this checkout (RAMP_EDGE_AGENT overrides)."""
    override = os.environ.get("RAMP_EDGE_AGENT")
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[1] / "agents" / "ramp_agent.py")
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
    from ramp_edge.evaluate import taskfile as task_mod

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
        conn: Transport,
        *,
        python: str | None = None,
        heartbeat_s: float = 2.0,
        on_event: EventFn | None = None,
    ) -> None:
        self.conn = conn
        self.name = conn.name
        self._python = python or conn.python
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

    def bandwidth(self, size_mib: int = 128, repeats: int = 5) -> dict[str, Any]:
        return self.call(
            "bandwidth", ["--size-mib", str(size_mib), "--repeats", str(repeats)], timeout=300
        )

    def canary(self, remote_model: str, n_gpu_layers: int = 0) -> dict[str, Any]:
        """A canary decode of `remote_model` in a subprocess on the device.

        Returns the env-check's `canary` dict: ok, extra_bufts (False when the decode only
        survived without CPU extra buffer types), fallback, reason, tries (with signals).
        """
        args = ["--canary-model", remote_model]
        if n_gpu_layers:
            args += ["--n-gpu-layers", str(n_gpu_layers)]
        data = self.call("env-check", args, timeout=600)
        return dict(data.get("canary") or {"ok": False, "reason": "llama-cpp-python missing"})

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
        n_gpu_layers: int = 0,
        extra_bufts: bool = True,
    ) -> dict[str, Any]:
        args = ["--model", remote_model, "--tasks", remote_tasks]
        if limit:
            args += ["--limit", str(limit)]
        if threads:
            args += ["--threads", str(threads)]
        if n_ctx:
            args += ["--n-ctx", str(n_ctx)]
        args += load_args(n_gpu_layers, extra_bufts)
        return self.call("eval", args, timeout=timeout)


def bootstrap(
    conn: Transport,
    *,
    python: str = "python3",
    requirements: Sequence[str] = DEFAULT_REQUIREMENTS,
    pip_args: Sequence[str] = (),
    timeout: float | None = 3600.0,
    find_links: str | None = None,
) -> str:
    """Create `.ramp-edge/venv` on the device and pip-install the agent's dependencies.

    llama-cpp-python builds llama.cpp from source where no wheel fits (10+ minutes on a
    Raspberry Pi); the link watchdog keeps the connection checked meanwhile. The build is
    portable: agents/llama_build.py, pushed and run on the device, gives CMAKE_ARGS for that
    CPU (GGML_NATIVE=OFF, its own ISA flags, AMX off: ggml's AMX path segfaults on the first
    decode). `find_links` (a folder on the device) lets pip take a wheel built before.
    Returns the venv's python path (relative to the login home).
    """
    venv_python = f"{VENV_DIR}/bin/python"
    logger.info("%s: creating %s", conn.name, VENV_DIR)
    result = conn.run([python, "-m", "venv", VENV_DIR], check=False, timeout=300)
    if not result.ok:
        hint = (
            " (on Debian/Ubuntu: apt install python3-venv)" if "ensurepip" in result.stderr else ""
        )
        raise DependencyError(
            f"{conn.name}: cannot create a venv with {python}{hint}: "
            f"{result.stderr.strip().splitlines()[-1:] or result.exit_code}"
        )
    env: dict[str, str] = {}
    if any(r.startswith("llama-cpp-python") for r in requirements):
        build_py = Path(__file__).resolve().parents[1] / "agents" / "llama_build.py"
        remote_build = f"{AGENT_DIR}/llama_build.py"
        conn.put(build_py, remote_build, local_sha256=sha256_file(build_py))
        flags = conn.run([venv_python, remote_build], check=False, timeout=60)
        if not flags.ok:
            raise DependencyError(
                f"{conn.name}: agents/llama_build.py failed on the device: "
                f"{flags.stderr.strip().splitlines()[-1:] or flags.exit_code}"
            )
        env = {"CMAKE_ARGS": flags.stdout.strip(), "FORCE_CMAKE": "1"}
        logger.info("%s: llama-cpp-python build flags: %s", conn.name, env["CMAKE_ARGS"])
    extra = ["--find-links", find_links] if find_links else []
    if requirements:
        result = conn.run(
            [
                venv_python,
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                *extra,
                *pip_args,
                *requirements,
            ],
            check=False,
            timeout=timeout,
            env=env or None,
        )
        if not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
            raise DependencyError(
                f"{conn.name}: pip install {' '.join(requirements)} failed: {tail[0]}"
            )
    return venv_python
