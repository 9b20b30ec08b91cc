"""What every connection to a device offers, and what its operations return.

A `Transport` runs argument lists and pushes files with verify-then-rename semantics. Two
implementations sit beside this module: `fleet.ssh.Connection` (paramiko, the `fleet` extra) and
`fleet.local.LocalConnection` (this machine, stdlib only). Code that drives a device (the agent
client, the pipeline) is typed against `Transport` and never imports paramiko.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ramp_edge.errors import RampEdgeError, RemoteError

# (bytes done, bytes total, description)
ProgressFn = Callable[[float, float, str], None]
LineFn = Callable[[str], None]

CHUNK_BYTES = 1 << 20


class HostKeyError(RemoteError):
    """The server's host key is unknown (and not trusted) or differs from known_hosts."""


class LinkStalledError(RemoteError):
    """Nothing came back from the host for `stall_timeout` seconds."""


class DeviceFullError(RemoteError):
    """The device has no room for an upload (checked before pushing, or ENOSPC while writing)."""


class CancelledError(RampEdgeError):
    """The operator cancelled (Ctrl-C): remote processes were stopped, temp files removed."""

    exit_code = 130


EXIT_INTERRUPTED = 130


@contextlib.contextmanager
def second_interrupt_aborts(what: str = "cleaning up") -> Iterator[None]:
    """While cleaning up after a Ctrl-C, a second Ctrl-C exits at once (status 130).

    Only the main thread can own signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def abort(signum: int, frame: object) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"\nAborted while {what}.\n")
            sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    try:
        previous = signal.signal(signal.SIGINT, abort)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class RemoteCommandError(RemoteError):
    """A remote command exited non-zero; `result` holds its output."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class RunResult:
    """One remote command. `exit_code` is None when the server reported no status (a signal)."""

    argv: tuple[str, ...]
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def killed(self) -> bool:
        """Killed by SIGKILL (the kernel's OOM killer sends it): 137 via `sh`, or no status."""
        return self.exit_code in (None, 137)

    def to_dict(self) -> dict[str, object]:
        return {
            "argv": list(self.argv),
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True, slots=True)
class PushResult:
    """One verified upload (or a skip because the same bytes were already there)."""

    local_path: str
    remote_path: str
    size_bytes: int
    sha256: str
    bytes_sent: int
    resumed_from: int
    skipped: bool
    duration_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.resumed_from <= self.size_bytes:
            raise ValueError(f"resumed_from {self.resumed_from} outside 0..{self.size_bytes}")

    @property
    def throughput_bytes_per_s(self) -> float:
        return self.bytes_sent / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "local_path": self.local_path,
            "remote_path": self.remote_path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "bytes_sent": self.bytes_sent,
            "resumed_from": self.resumed_from,
            "skipped": self.skipped,
            "duration_s": self.duration_s,
        }


def sha256_prefix(path: str | os.PathLike[str], nbytes: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        left = nbytes
        while left > 0:
            block = handle.read(min(CHUNK_BYTES, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


@runtime_checkable
class Transport(Protocol):
    """A device reached through SSH or locally. Remote paths are relative to the login home."""

    name: str
    python: str | None

    def open(self) -> Transport: ...

    def close(self) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
        on_line: LineFn | None = None,
    ) -> RunResult: ...

    def put(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        progress: ProgressFn | None = None,
        local_sha256: str | None = None,
    ) -> PushResult: ...

    def stat_size(self, path: str) -> int | None: ...

    def remote_sha256_many(self, paths: Sequence[str]) -> dict[str, str | None]: ...
