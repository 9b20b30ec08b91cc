"""`LocalConnection`: the `Transport` on this machine, for `--device localhost` (no SSH).

Stdlib only: a localhost deploy needs neither paramiko nor the `fleet` extra.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ramp_edge import paths
from ramp_edge.errors import ArtifactError, RemoteError
from ramp_edge.fleet.transport import (
    CHUNK_BYTES,
    CancelledError,
    LineFn,
    ProgressFn,
    PushResult,
    RemoteCommandError,
    RunResult,
    sha256_prefix,
)
from ramp_edge.fsutil import sha256_file


class LocalConnection:
    """The Connection interface on this machine, for `--device localhost` (no SSH).

    Relative remote paths are relative to `root` (default: RAMP_EDGE_HOME/localhost), which
    stands in for the device's login home.
    """

    def __init__(
        self, root: str | os.PathLike[str] | None = None, python: str | None = None
    ) -> None:
        if root is None:
            root = paths.home() / "localhost"
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = "localhost"
        self.address = "localhost"
        self.python = python or sys.executable
        self._cancel = threading.Event()

    def __enter__(self) -> LocalConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> LocalConnection:
        return self

    def close(self) -> None:
        return None

    def _path(self, path: str) -> Path:
        if path in ("~", "~/"):
            return self.root
        if path.startswith("~/"):
            path = path[2:]
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def cancel(self) -> None:
        """Stop the running command (from another thread): its process group is killed."""
        self._cancel.set()

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
        on_line: LineFn | None = None,
    ) -> RunResult:
        """Run argv in its own process group; a timeout, cancel() or Ctrl-C kills the group."""
        start = time.monotonic()
        args = [str(a) for a in argv]
        full_env = {**os.environ, "HOME": str(self.root), **(env or {})}
        if self._cancel.is_set():
            raise CancelledError("localhost: cancelled")
        proc = subprocess.Popen(
            args,
            cwd=str(self._path(cwd)) if cwd else str(self.root),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us, not it: we stop it deliberately
        )
        err_chunks: list[bytes] = []
        lines: queue.Queue[bytes | None] = queue.Queue()

        def read_err() -> None:
            err_chunks.append(proc.stderr.read() if proc.stderr else b"")

        def read_out() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                lines.put(raw)
            lines.put(None)

        readers = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
        for reader in readers:
            reader.start()
        out_lines: list[str] = []
        deadline = None if timeout is None else start + timeout
        try:
            while True:
                try:
                    raw = lines.get(timeout=0.1)
                except queue.Empty:
                    raw = b""
                if raw is None:
                    break
                if raw:
                    line = raw.decode("utf-8", "replace")
                    out_lines.append(line)
                    if on_line is not None:
                        on_line(line.rstrip("\n"))
                if self._cancel.is_set():
                    _kill_group(proc)
                    raise CancelledError(f"localhost: cancelled `{' '.join(args)}`")
                if deadline is not None and time.monotonic() > deadline:
                    _kill_group(proc)
                    raise RemoteError(
                        f"localhost: command timed out after {timeout:.0f} s and was stopped"
                    )
            rc = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        for reader in readers:
            reader.join(5)
        result = RunResult(
            argv=tuple(args),
            exit_code=128 - rc if rc < 0 else rc,  # -9 -> 137, as a shell would report it
            stdout="".join(out_lines),
            stderr=b"".join(err_chunks).decode("utf-8", "replace"),
            duration_s=time.monotonic() - start,
        )
        if check and not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or ["no stderr"]
            raise RemoteCommandError(
                f"localhost: `{' '.join(args)}` exited {result.exit_code}: {tail[0]}", result
            )
        return result

    def stat_size(self, path: str) -> int | None:
        p = self._path(path)
        return p.stat().st_size if p.is_file() else None

    def makedirs(self, path: str) -> None:
        self._path(path).mkdir(parents=True, exist_ok=True)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(path).unlink()

    def remote_sha256(self, path: str, nbytes: int | None = None) -> str | None:
        p = self._path(path)
        if not p.is_file():
            return None
        return sha256_file(p) if nbytes is None else sha256_prefix(p, nbytes)

    def remote_sha256_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        return {p: self.remote_sha256(p) for p in paths}

    def put(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        progress: ProgressFn | None = None,
        local_sha256: str | None = None,
    ) -> PushResult:
        """Copy with the same partial/verify/rename semantics as Connection.put."""
        local = Path(local)
        if not local.is_file():
            raise ArtifactError(f"cannot push {local}: no such file")
        start = time.monotonic()
        size = local.stat().st_size
        sha = local_sha256 or sha256_file(local)
        target = self._path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.stat().st_size == size and sha256_file(target) == sha:
            return PushResult(str(local), remote, size, sha, 0, 0, True, time.monotonic() - start)
        partial = target.with_name(target.name + ".partial")
        offset = 0
        if partial.is_file():
            have = partial.stat().st_size
            if 0 < have <= size and sha256_prefix(partial, have) == sha256_prefix(local, have):
                offset = have
        if not offset:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            try:  # same filesystem: a hard link costs nothing (artifacts are replaced, not edited)
                os.link(local, partial)
            except OSError:
                pass
            else:
                if progress:
                    progress(size, size, f"link {local.name}")
                return self._publish(local, remote, partial, target, size, sha, 0, 0, start)
        sent = 0
        with open(local, "rb") as src, open(partial, "r+b" if offset else "wb") as dst:
            src.seek(offset)
            dst.seek(offset)
            while block := src.read(CHUNK_BYTES):
                dst.write(block)
                sent += len(block)
                if progress:
                    progress(offset + sent, size, f"copy {local.name}")
            dst.truncate()
            dst.flush()
            os.fsync(dst.fileno())
        return self._publish(local, remote, partial, target, size, sha, sent, offset, start)

    @staticmethod
    def _publish(
        local: Path,
        remote: str,
        partial: Path,
        target: Path,
        size: int,
        sha: str,
        sent: int,
        offset: int,
        start: float,
    ) -> PushResult:
        if sha256_file(partial) != sha:
            partial.unlink()
            raise ArtifactError(f"localhost: copy of {local} has a different sha256; try again")
        os.replace(partial, target)
        return PushResult(
            str(local), remote, size, sha, sent, offset, False, time.monotonic() - start
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it after 2 s; reap the leader."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is not None:  # the leader is gone; stragglers of its group go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
