"""SSH `Transport`: a paramiko `Connection` with verified, resumable pushes.

~/.ssh/config and known_hosts are honoured (`fleet.sshconfig`); remote command lines come from
`fleet.shell`; result types and the `Transport` Protocol live in `fleet.transport`.

A dead link must fail in seconds, not hang: the socket gets TCP_USER_TIMEOUT and TCP keepalive,
and a watchdog sends an SSH keepalive request
(`keepalive@openssh.com`, like ServerAliveInterval) every few seconds. When neither a reply nor
any data arrives for `stall_timeout` seconds, the watchdog shuts the socket down, which
unblocks every paramiko call stuck on it, and the operation raises `LinkStalledError`.

Push protocol: upload to `<remote>.partial`; when a partial exists, hash its prefix remotely and
continue from its size if the prefix matches the local file; hash the full file remotely
(`sha256sum`, or a python3 one-liner), then rename it into place atomically
(posix-rename@openssh.com). A remote file with the same sha256 is not uploaded again. Free
space is checked first (artifact + margin); a full disk is reported as DeviceFullError and
its partial upload removed.

Cancel: every remote command first reports its shell's pid and process group on stderr; a
timeout, `cancel()` (another thread) or Ctrl-C kills that process group on the device (TERM,
then KILL) before the channel closes, and a cancelled push removes its partial file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import paramiko

from ramp_edge.errors import ArtifactError, RampEdgeError, RemoteError
from ramp_edge.fleet.shell import _PY_FOLLOW, _parse_sha, build_command, quote_path, sha256_command
from ramp_edge.fleet.sshconfig import (
    RefuseUnknownHost,
    TrustNewHost,
    changed_key_message,
    read_known_hosts,
    resolve_target,
)
from ramp_edge.fleet.transport import (
    CHUNK_BYTES,
    CancelledError,
    DeviceFullError,
    HostKeyError,
    LineFn,
    LinkStalledError,
    ProgressFn,
    PushResult,
    RemoteCommandError,
    RunResult,
    second_interrupt_aborts,
    sha256_prefix,
)
from ramp_edge.fsutil import sha256_file

logger = logging.getLogger(__name__)

# OpenSSH's sftp-server accepts requests up to 256 KiB (SFTP_MAX_MSG_LENGTH) including the
# header; 255 KiB data per write measured as fast or faster than paramiko's 32 KiB default.
SFTP_REQUEST_BYTES = 255 * 1024

# Free space a push needs beyond the artifact itself: 1 MiB + 2 % (filesystem metadata, the
# agent's own writes). Below it the push is refused before a byte is sent.
PUSH_MARGIN_BYTES = 1 << 20
PUSH_MARGIN_FRACTION = 0.02

# First stderr line of every remote command: its shell's pid and process group, so a cancel or
# a timeout can stop the whole group (the agent and anything it started), not just the channel.
_PG_MARKER = "__ramp_pg__"
_PG_PREFIX = (
    f"printf '{_PG_MARKER} %s %s\\n' \"$$\" \"$(cut -d' ' -f5 /proc/$$/stat 2>/dev/null)\" >&2; "
)


# --------------------------------------------------------------------------- watchdog


class _Watchdog:
    """Fail a stalled link: SSH keepalive requests + a deadline; shut the socket down on expiry."""

    def __init__(
        self,
        transport: paramiko.Transport,
        sock: socket.socket | None,
        stall_timeout: float,
        interval: float,
        label: str,
    ) -> None:
        self.transport = transport
        self.sock = sock
        self.stall_timeout = stall_timeout
        self.interval = interval
        self.label = label
        self.last_alive = time.monotonic()
        self.stalled = False
        self._stop = threading.Event()
        self._pinger = threading.Thread(target=self._ping, name=f"ssh-ping {label}", daemon=True)
        self._guard = threading.Thread(target=self._watch, name=f"ssh-watch {label}", daemon=True)

    def start(self) -> None:
        self._pinger.start()
        self._guard.start()

    def alive(self) -> None:
        self.last_alive = time.monotonic()

    def _ping(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.transport.is_active():
                return
            try:
                # want_reply=True: OpenSSH answers REQUEST_FAILURE, which proves the link works.
                self.transport.global_request("keepalive@openssh.com", wait=True)
            except Exception:  # the transport died; the guard or the caller reports it
                return
            if self.transport.is_active():
                self.alive()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            if not self.transport.is_active():
                return
            silent = time.monotonic() - self.last_alive
            if silent > self.stall_timeout:
                self.stalled = True
                logger.warning(
                    "%s: no reply for %.0f s; closing the connection", self.label, silent
                )
                if self.sock is not None:
                    with contextlib.suppress(OSError):
                        self.sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(Exception):
                    self.transport.close()
                return

    def stop(self) -> None:
        self._stop.set()


def _tcp_socket(
    host: str, port: int, connect_timeout: float, user_timeout_s: float
) -> socket.socket:
    """A connected TCP socket whose unacknowledged data or silence fails in seconds (Linux).

    The name lookup runs under the same deadline: getaddrinfo has no timeout of its own and a
    dead resolver would otherwise hang the connect for minutes.
    """
    address = _resolve(host, port, connect_timeout)
    try:
        sock = socket.create_connection(address, timeout=connect_timeout)
    except TimeoutError:
        raise RemoteError(
            f"cannot reach {host}:{port}: connection timed out after {connect_timeout:.0f} s"
        ) from None
    except OSError as err:
        raise RemoteError(f"cannot reach {host}:{port}: {err.strerror or err}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_USER_TIMEOUT", int(user_timeout_s * 1000)),
        ("TCP_KEEPIDLE", 5),
        ("TCP_KEEPINTVL", 2),
        ("TCP_KEEPCNT", 3),
    ):
        if hasattr(socket, name):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    return sock


def _resolve(host: str, port: int, timeout: float) -> tuple[str, int]:
    """(ip, port) for `host`, or RemoteError after `timeout` seconds (lookup in a daemon thread)."""
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            box["info"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            box["error"] = err

    thread = threading.Thread(target=lookup, name=f"dns {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RemoteError(f"cannot resolve {host}: no answer from DNS in {timeout:.0f} s")
    if "error" in box:
        err = box["error"]
        raise RemoteError(f"cannot resolve {host}: {getattr(err, 'strerror', None) or err}")
    infos = box["info"]
    assert isinstance(infos, list) and infos
    return str(infos[0][4][0]), port


class _Transport(paramiko.Transport):
    """paramiko's Transport preferring AES-GCM: an AEAD cipher needs no separate HMAC pass,
    which is most of paramiko's per-packet cost on a fast link. Servers without it (older
    Dropbear) negotiate the CTR ciphers that follow."""

    _preferred_ciphers = (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        *(c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c),
    )


# --------------------------------------------------------------------------- Connection


class Connection:
    """One SSH connection to a device. Not thread-safe: use one per thread (fleet.group does).

    Args:
        host: address or ~/.ssh/config alias.
        port, user, key_filename: override ~/.ssh/config (inventory values win, like Ansible).
        name: label for logs and errors (the inventory host name); defaults to `host`.
        known_hosts: known_hosts files to trust; default the config's UserKnownHostsFile or
            ~/.ssh/known_hosts (plus /etc/ssh/ssh_known_hosts). New keys are saved to the first.
        ssh_config: path of an ssh config; None: ~/.ssh/config if present; False: none.
        trust_new_host: accept and save an unknown host key (a changed key is still refused).
        allow_agent, look_for_keys: use ssh-agent and ~/.ssh/id_* keys.
        connect_timeout: seconds for TCP connect, banner and authentication.
        stall_timeout: seconds without any reply before an operation fails with LinkStalledError.
        keepalive_s: seconds between SSH keepalive requests.
        python: the remote Python interpreter for the agent (None: harness decides).
    """

    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        user: str | None = None,
        key_filename: str | os.PathLike[str] | None = None,
        name: str | None = None,
        known_hosts: Sequence[str | os.PathLike[str]] | None = None,
        ssh_config: str | os.PathLike[str] | bool | None = None,
        trust_new_host: bool = False,
        allow_agent: bool = True,
        look_for_keys: bool = True,
        connect_timeout: float = 10.0,
        stall_timeout: float = 15.0,
        keepalive_s: float = 3.0,
        python: str | None = None,
    ) -> None:
        self.name = name or host
        self.python = python
        self.trust_new_host = trust_new_host
        self.allow_agent = allow_agent
        self.look_for_keys = look_for_keys
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self.keepalive_s = keepalive_s
        self._resolved = resolve_target(host, port, user, key_filename, known_hosts, ssh_config)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sock: socket.socket | None = None
        self._watchdog: _Watchdog | None = None
        self._cancel = threading.Event()

    # -- configuration

    @property
    def hostname(self) -> str:
        return self._resolved.hostname

    @property
    def port(self) -> int:
        return self._resolved.port

    @property
    def user(self) -> str:
        return self._resolved.user

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def __repr__(self) -> str:
        return f"Connection({self.name!r}, {self.address})"

    # -- connect / close

    def open(self) -> Connection:
        """Connect and authenticate (idempotent). Raises RemoteError / HostKeyError."""
        if self._client is not None and self._client.get_transport() is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self
        self.close()
        r = self._resolved
        client = paramiko.SSHClient()
        user_kh = r.known_hosts[0]
        known = read_known_hosts([*r.known_hosts, Path("/etc/ssh/ssh_known_hosts")])
        for name in known.keys.keys():
            for key_type, key in known.keys[name].items():
                client.get_host_keys().add(name, key_type, key)
        client.set_missing_host_key_policy(
            TrustNewHost(user_kh) if self.trust_new_host else RefuseUnknownHost()
        )
        if r.proxy_command:
            sock: socket.socket | paramiko.ProxyCommand = paramiko.ProxyCommand(r.proxy_command)
            raw = None
        else:
            try:
                raw = _tcp_socket(r.hostname, r.port, self.connect_timeout, self.stall_timeout)
            except RemoteError as err:
                raise RemoteError(f"{self.name}: {err}") from None
            sock = raw
        try:
            client.connect(
                r.hostname,
                port=r.port,
                username=r.user,
                key_filename=r.key_files or None,
                allow_agent=self.allow_agent,
                look_for_keys=self.look_for_keys,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                sock=sock,  # type: ignore[arg-type]
                transport_factory=_Transport,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as err:
            client.close()
            target = r.hostname if r.port == 22 else f"[{r.hostname}]:{r.port}"
            raise HostKeyError(
                f"{self.name}: " + changed_key_message(target, err.expected_key, err.key, user_kh)
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise RemoteError(
                f"{self.name}: private key {', '.join(r.key_files)} is encrypted; "
                "add it to ssh-agent (ssh-add) first"
            ) from None
        except paramiko.AuthenticationException as err:
            client.close()
            tried = ", ".join(r.key_files) or "default keys"
            raise RemoteError(
                f"{self.name}: authentication failed for {self.address} ({err}); tried {tried}"
                f"{' and ssh-agent' if self.allow_agent else ''}"
            ) from None
        except (paramiko.SSHException, EOFError, OSError) as err:
            client.close()
            raise RemoteError(
                f"{self.name}: SSH connection to {self.address} failed: {err}"
            ) from None
        transport = client.get_transport()
        assert transport is not None
        server_key = transport.get_remote_server_key()
        if (server_key.get_name(), server_key.get_base64()) in known.revoked:
            client.close()
            raise HostKeyError(
                f"{self.name}: the host key of {self.address} ({server_key.get_name()} "
                f"{server_key.fingerprint}) is marked @revoked in known_hosts; refusing it"
            )
        self._client = client
        self._sock = raw
        self._watchdog = _Watchdog(transport, raw, self.stall_timeout, self.keepalive_s, self.name)
        self._watchdog.start()
        logger.debug("%s: connected to %s", self.name, self.address)
        return self

    def cancel(self) -> None:
        """Ask the running operation (in another thread) to stop: the remote command's process
        group is killed, a partial upload removed, and the operation raises CancelledError."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise CancelledError(f"{self.name}: cancelled")

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self._sock = None

    def __enter__(self) -> Connection:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transport(self) -> paramiko.Transport:
        self.open()
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        return transport

    def _alive(self) -> None:
        if self._watchdog is not None:
            self._watchdog.alive()

    def _lost(self, err: BaseException, doing: str) -> RemoteError:
        """Turn a paramiko/socket failure into a RemoteError that says why."""
        stalled = self._watchdog is not None and self._watchdog.stalled
        self.close()
        if stalled:
            return LinkStalledError(
                f"{self.name}: link stalled while {doing}: no reply from {self.address} for "
                f"{self.stall_timeout:.0f} s (network down or device frozen)"
            )
        detail = str(err) or type(err).__name__
        return RemoteError(f"{self.name}: connection lost while {doing}: {detail}")

    # -- commands

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
        """Run argv on the device (quoted, never shell-interpreted) and collect its output.

        Args:
            on_line: called with each complete stdout line as it arrives (agent progress).
            timeout: overall seconds; None waits as long as the link is alive.
            check: raise RemoteCommandError on a non-zero exit.
        """
        command = build_command(argv, cwd=cwd, env=env)
        return self._exec(tuple(str(a) for a in argv), command, timeout, check, on_line)

    def run_shell(
        self, command: str, *, timeout: float | None = None, check: bool = True
    ) -> RunResult:
        """Run a shell snippet built by this module (not for user input)."""
        return self._exec(("sh", "-c", command), command, timeout, check, None)

    def _exec(
        self,
        argv: tuple[str, ...],
        command: str,
        timeout: float | None,
        check: bool,
        on_line: LineFn | None,
    ) -> RunResult:
        self._check_cancel()
        transport = self._transport()
        start = time.monotonic()
        out = bytearray()
        err = bytearray()
        pending = b""
        channel = None
        try:
            channel = transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(_PG_PREFIX + command)
            channel.shutdown_write()
            fileno = channel.fileno()
            while True:
                got = False
                if channel.recv_ready():
                    data = channel.recv(65536)
                    got = True
                    out += data
                    if on_line is not None:
                        pending += data
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            on_line(line.decode("utf-8", "replace"))
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    got = True
                if got:
                    self._alive()
                    continue
                if channel.exit_status_ready() or channel.closed:
                    if not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    continue
                if not transport.is_active():
                    raise EOFError("transport closed")
                if self._cancel.is_set():
                    self._stop_remote(channel, err)
                    raise CancelledError(f"{self.name}: cancelled `{' '.join(argv)}`")
                if timeout is not None and time.monotonic() - start > timeout:
                    self._stop_remote(channel, err)
                    raise RemoteError(
                        f"{self.name}: command timed out after {timeout:.0f} s and was stopped: "
                        f"{' '.join(argv)}"
                    )
                select.select([fileno], [], [], 0.05)
            status = channel.recv_exit_status()
            channel.close()
            if status == -1:
                # No exit-status: the link or the server died (a killed command still reports
                # 128+signal through the `; exit $?` wrapper).
                raise EOFError("the connection closed before the command finished")
        except RampEdgeError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(exc, f"running {argv[0]}") from None
        except KeyboardInterrupt:
            # Ctrl-C in this (main) thread: stop the remote side before giving up the link.
            if channel is not None:
                with second_interrupt_aborts("stopping the remote command"):
                    self._stop_remote(channel, err)
            raise
        err = _strip_marker(err)
        if on_line is not None and pending:
            on_line(pending.decode("utf-8", "replace"))
        result = RunResult(
            argv=argv,
            exit_code=None if status == -1 else status,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            duration_s=time.monotonic() - start,
        )
        if check and not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or ["no stderr"]
            raise RemoteCommandError(
                f"{self.name}: `{' '.join(argv)}` exited {result.exit_code}: {tail[0]}", result
            )
        return result

    def _stop_remote(self, channel: paramiko.Channel, err: bytearray) -> None:
        """Kill the remote command's process group (TERM, then KILL after 2 s); close the channel.

        Closing the channel alone leaves the process running on the device (no pty, so no
        SIGHUP): the agent would keep benchmarking until it next wrote to the closed pipe.
        """
        marker = _parse_marker(err)
        deadline = time.monotonic() + 1.0
        with contextlib.suppress(Exception):  # cancelled before the marker line was read
            while marker is None and time.monotonic() < deadline and not channel.closed:
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    marker = _parse_marker(err)
                else:
                    time.sleep(0.02)
        with contextlib.suppress(Exception):
            channel.close()
        if marker is None:
            logger.warning("%s: remote process id unknown; it may keep running", self.name)
            return
        pid, pgid = marker
        target = f"-{pgid}" if pgid and pgid > 1 else str(pid)
        # `kill -SIG -PGID` (no `--`: dash's kill refuses it); TERM first, KILL after 2 s.
        script = (
            f"kill -TERM {target} 2>/dev/null || kill -TERM {pid} 2>/dev/null; i=0; "
            f"while [ $i -lt 20 ] && kill -0 {target} 2>/dev/null; do sleep 0.1; i=$((i+1)); "
            f"done; kill -KILL {target} 2>/dev/null; exit 0"
        )
        try:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is None or not transport.is_active():
                raise EOFError("transport closed")
            killer = transport.open_session(timeout=self.connect_timeout)
            killer.settimeout(10.0)
            killer.exec_command(script)
            killer.recv_exit_status()
            killer.close()
            logger.info("%s: stopped remote process group %s", self.name, target)
        except Exception as exc:  # the link is gone: nothing more can be done from here
            logger.warning("%s: could not stop remote process %s: %s", self.name, target, exc)

    # -- files

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self._transport().open_sftp_client()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._lost(exc, "opening SFTP") from None
            assert self._sftp is not None
        return self._sftp

    @staticmethod
    def _sftp_path(path: str) -> str:
        """SFTP starts in the login home and does not expand `~`."""
        if path in ("~", "~/"):
            return "."
        return path[2:] if path.startswith("~/") else path

    def stat_size(self, path: str) -> int | None:
        """Size of a remote file in bytes, or None when it does not exist."""
        try:
            return int(self.sftp().stat(self._sftp_path(path)).st_size or 0)
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == 2:
                return None
            raise self._lost(exc, f"checking {path}") from None

    def makedirs(self, path: str) -> None:
        """mkdir -p over SFTP."""
        sftp = self.sftp()
        current = PurePosixPath(self._sftp_path(path))
        missing = []
        while str(current) not in ("", ".", "/"):
            try:
                sftp.stat(str(current))
                break
            except FileNotFoundError:
                missing.append(str(current))
                current = current.parent
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._lost(exc, f"creating {path}") from None
        for directory in reversed(missing):
            try:
                sftp.mkdir(directory)
            except OSError as exc:
                if not self._exists(directory):  # not a race with another process: a failure
                    raise RemoteError(
                        f"{self.name}: cannot create {directory}: {exc.strerror or exc}"
                    ) from None
            except (paramiko.SSHException, EOFError) as exc:
                raise self._lost(exc, f"creating {path}") from None

    def _exists(self, path: str) -> bool:
        try:
            self.sftp().stat(path)
            return True
        except OSError:
            return False

    def free_bytes(self, path: str) -> int | None:
        """Bytes available to this user on the filesystem holding `path` (None: unknown)."""
        result = self.run_shell(f"df -Pk {quote_path(path)} 2>/dev/null | tail -n 1", check=False)
        fields = result.stdout.split()
        if result.ok and len(fields) >= 4 and fields[3].isdigit():
            return int(fields[3]) * 1024
        return None

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.sftp().remove(self._sftp_path(path))

    def _discard_partial(self, partial: str) -> None:
        """Best effort: remove a partial upload after a cancel or a full disk."""
        try:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is not None and transport.is_active():
                self.remove(partial)
        except Exception as exc:
            logger.warning("%s: could not remove %s: %s", self.name, partial, exc)

    def remote_sha256(self, path: str, nbytes: int | None = None) -> str | None:
        """sha256 of a remote file (or of its first `nbytes`), computed on the device."""
        result = self.run_shell(sha256_command(path, nbytes, self.python or "python3"), check=False)
        return _parse_sha(result.stdout) if result.ok else None

    def remote_sha256_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        """sha256 of several remote files in one round trip (None for a missing file)."""
        if not paths:
            return {}
        python = self.python or "python3"
        script = "; ".join(
            f"printf '%s ' {i}; ({sha256_command(p, None, python)}) 2>/dev/null || echo missing"
            for i, p in enumerate(paths)
        )
        result = self.run_shell(script, check=False)
        found: dict[str, str | None] = dict.fromkeys(paths)
        for line in result.stdout.splitlines():
            index, _, rest = line.partition(" ")
            if index.isdigit() and int(index) < len(paths):
                found[paths[int(index)]] = _parse_sha(rest)
        return found

    def put(
        self,
        local: str | os.PathLike[str],
        remote: str,
        *,
        progress: ProgressFn | None = None,
        local_sha256: str | None = None,
    ) -> PushResult:
        """Upload `local` to `remote` resumably and verified; see the module docstring.

        Raises:
            RemoteError: the link failed (the partial upload stays for the next try).
            ArtifactError: the remote hash did not match after the upload.
        """
        local = Path(local)
        if not local.is_file():
            raise ArtifactError(f"cannot push {local}: no such file")
        start = time.monotonic()
        size = local.stat().st_size
        sha = local_sha256 or sha256_file(local)
        remote_final = self._sftp_path(remote)
        partial = remote_final + ".partial"
        parent = str(PurePosixPath(remote_final).parent)
        if parent not in ("", "."):
            self.makedirs(parent)

        if self.stat_size(remote_final) == size and self.remote_sha256(remote_final) == sha:
            logger.info("%s: %s already present (sha256 matches), not uploading", self.name, remote)
            if progress:
                progress(size, size, "already there")
            return PushResult(str(local), remote, size, sha, 0, 0, True, time.monotonic() - start)

        offset = 0
        have = self.stat_size(partial)
        if have:
            if have <= size and self.remote_sha256(partial, have) == sha256_prefix(local, have):
                offset = have
                logger.info("%s: resuming %s at %d of %d bytes", self.name, remote, have, size)
            else:
                logger.info("%s: discarding a stale partial upload of %s", self.name, remote)
                self.remove(partial)
                have = 0
        need = size - offset + PUSH_MARGIN_BYTES + int(PUSH_MARGIN_FRACTION * size)
        free = self.free_bytes(parent if parent not in ("", ".") else ".")
        if free is not None and free < need:
            raise DeviceFullError(
                f"{self.name}: not enough space for {local.name}: it needs {need:,} bytes "
                f"(with margin), {free:,} are free on the device; remove old artifacts with "
                "`ramp-edge fleet clean`"
            )
        try:
            sent, remote_sha = self._upload(local, partial, offset, size, progress)
        except (CancelledError, KeyboardInterrupt):
            with second_interrupt_aborts("removing the partial upload"):
                self._discard_partial(partial)
            raise
        except RemoteError as exc:
            # The server answers a write on a full disk with a bare "Failure": tell it apart.
            transport = self._client.get_transport() if self._client is not None else None
            if transport is not None and transport.is_active():
                free = self.free_bytes(parent if parent not in ("", ".") else ".")
                if free is not None and free < max(CHUNK_BYTES, SFTP_REQUEST_BYTES) * 2:
                    self._discard_partial(partial)
                    raise DeviceFullError(
                        f"{self.name}: the device ran out of disk space (ENOSPC) while pushing "
                        f"{local.name}; the partial upload was removed. Free space (e.g. "
                        "`ramp-edge fleet clean`) and push again"
                    ) from None
            raise exc
        if remote_sha is None:  # no python3 on the device for the follower: hash afterwards
            remote_sha = self.remote_sha256(partial)
        if remote_sha != sha:
            self.remove(partial)
            free = self.free_bytes(parent if parent not in ("", ".") else ".")
            if free is not None and free < max(CHUNK_BYTES, SFTP_REQUEST_BYTES) * 2 + size:
                # pipelined writes on a full disk can come back acknowledged but short
                written = self.stat_size(remote_final)
                if written is None or written != size:
                    raise DeviceFullError(
                        f"{self.name}: the device ran out of disk space (ENOSPC) while pushing "
                        f"{local.name} ({free:,} bytes free); the partial upload was removed. "
                        "Free space (e.g. `ramp-edge fleet clean`) and push again"
                    )
            raise ArtifactError(
                f"{self.name}: pushed {remote} but its sha256 is {remote_sha or 'unreadable'}, "
                f"expected {sha}; the partial file was removed, push again"
            )
        try:
            sftp = self.sftp()
            try:
                sftp.posix_rename(partial, remote_final)
            except OSError:  # server without posix-rename@openssh.com
                self.remove(remote_final)
                sftp.rename(partial, remote_final)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(exc, f"renaming {partial}") from None
        return PushResult(
            str(local), remote, size, sha, sent, offset, False, time.monotonic() - start
        )

    def _upload(
        self, local: Path, partial: str, offset: int, size: int, progress: ProgressFn | None
    ) -> tuple[int, str | None]:
        """Write local[offset:] into the remote partial; returns (bytes sent, remote sha256).

        The remote sha256 comes from a follower process started on the device next to the
        upload: it hashes the partial file as it grows, so verification costs no extra pass
        (hashing 128 MB afterwards took ~30 % of a loopback push). None when it could not run.
        """
        sent = 0
        desc = f"push {local.name}"
        follower = None
        try:
            with self.sftp().open(partial, "r+b" if offset else "wb") as remote_file:
                # The file exists (and is truncated for a fresh upload) before the follower starts.
                follower = self._start_follower(partial, size)
                # Instance attribute: paramiko's _write chunks by self.MAX_REQUEST_SIZE.
                remote_file.MAX_REQUEST_SIZE = SFTP_REQUEST_BYTES  # type: ignore[attr-defined]
                remote_file.set_pipelined(True)
                remote_file.seek(offset)
                with open(local, "rb") as source:
                    source.seek(offset)
                    while block := source.read(CHUNK_BYTES):
                        self._check_cancel()
                        remote_file.write(block)
                        sent += len(block)
                        self._alive()
                        if progress:
                            progress(offset + sent, size, desc)
            # close() returned: every write is acknowledged, so the file is complete.
            return sent, self._finish_follower(follower)
        except BaseException as exc:
            if follower is not None:
                with contextlib.suppress(Exception):
                    follower.close()
            if not isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                raise
            raise self._lost(
                exc, f"pushing {local.name} ({offset + sent} of {size} bytes)"
            ) from None

    def _start_follower(self, path: str, size: int) -> paramiko.Channel | None:
        python = self.python or "python3"
        idle = max(30.0, 2 * self.stall_timeout)
        command = (
            f"{shlex.quote(python)} -c {shlex.quote(_PY_FOLLOW)} {quote_path(path)} {size} {idle}"
        )
        try:
            channel = self._transport().open_session(timeout=self.connect_timeout)
            channel.exec_command(command)
            channel.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError):
            logger.debug("%s: no hash follower; hashing after the upload", self.name, exc_info=True)
            return None
        return channel

    def _finish_follower(self, channel: paramiko.Channel | None) -> str | None:
        if channel is None:
            return None
        out = bytearray()
        deadline = time.monotonic() + max(30.0, 2 * self.stall_timeout)
        try:
            while time.monotonic() < deadline:
                if channel.recv_ready():
                    out += channel.recv(4096)
                    continue
                if channel.exit_status_ready() and not channel.recv_ready():
                    break
                select.select([channel.fileno()], [], [], 0.05)
            status = channel.recv_exit_status() if channel.exit_status_ready() else None
        finally:
            channel.close()
        if status != 0:
            logger.debug("%s: hash follower ended with %s; hashing again", self.name, status)
            return None
        return _parse_sha(out.decode("ascii", "replace"))


def _parse_marker(err: bytes | bytearray) -> tuple[int, int | None] | None:
    """(pid, process group) from the first stderr line written by `_PG_PREFIX`."""
    first = bytes(err).split(b"\n", 1)[0].decode("ascii", "replace").split()
    if len(first) >= 2 and first[0] == _PG_MARKER and first[1].isdigit():
        pgid = int(first[2]) if len(first) >= 3 and first[2].isdigit() else None
        return int(first[1]), pgid
    return None


def _strip_marker(err: bytearray) -> bytearray:
    if err.startswith(_PG_MARKER.encode()):
        _, _, rest = bytes(err).partition(b"\n")
        return bytearray(rest)
    return err
