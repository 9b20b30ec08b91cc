"""The OpenSSH files a connection honours: ~/.ssh/config lookup and known_hosts policies.

Safety defaults follow OpenSSH: an unknown host key is refused unless the user said
--trust-new-host, and a changed host key is always refused (`fleet.ssh.Connection.open`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ramp_edge.errors import ConfigError
from ramp_edge.fleet.transport import HostKeyError

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SSHTarget:
    """A host as ~/.ssh/config and the caller's overrides resolve it."""

    hostname: str
    port: int
    user: str
    key_files: list[str] = field(default_factory=list)
    known_hosts: list[Path] = field(default_factory=list)
    proxy_command: str | None = None


def resolve_target(
    host: str,
    port: int | None,
    user: str | None,
    key_filename: str | os.PathLike[str] | None,
    known_hosts: Sequence[str | os.PathLike[str]] | None,
    ssh_config: str | os.PathLike[str] | bool | None,
) -> SSHTarget:
    """Where `host` really is: ~/.ssh/config (HostName, Port, User, IdentityFile,
    UserKnownHostsFile, ProxyCommand) under explicit overrides, which win like Ansible's."""
    cfg: dict[str, object] = {}
    if ssh_config is not False:
        path = Path(ssh_config) if isinstance(ssh_config, (str, os.PathLike)) else None
        path = path or Path.home() / ".ssh" / "config"
        if path.is_file():
            try:
                cfg = dict(paramiko.SSHConfig.from_path(str(path)).lookup(host))
            except Exception as err:  # paramiko raises several types for bad configs
                raise ConfigError(f"cannot read ssh config {path}: {err}") from None
        elif ssh_config not in (None, True):
            raise ConfigError(f"ssh config not found: {path}")
    hostname = str(cfg.get("hostname", host))
    resolved_port = int(port or cfg.get("port", 22))
    resolved_user = user or str(cfg.get("user") or _local_user())
    keys: list[str] = []
    if key_filename:
        key = Path(key_filename).expanduser()
        if not key.is_file():
            raise ConfigError(f"private key file not found: {key}")
        keys.append(str(key))
    for item in cfg.get("identityfile", []) or []:  # type: ignore[union-attr]
        path = Path(str(item)).expanduser()
        if path.is_file() and str(path) not in keys:
            keys.append(str(path))
    if known_hosts is not None:
        kh = [Path(p).expanduser() for p in known_hosts]
    elif cfg.get("userknownhostsfile"):
        kh = [Path(p).expanduser() for p in str(cfg["userknownhostsfile"]).split()]
    else:
        kh = [Path.home() / ".ssh" / "known_hosts"]
    proxy = cfg.get("proxycommand")
    return SSHTarget(
        hostname=hostname,
        port=resolved_port,
        user=resolved_user,
        key_files=keys,
        known_hosts=kh,
        proxy_command=str(proxy) if proxy and str(proxy).lower() != "none" else None,
    )


def _local_user() -> str:
    import getpass

    return getpass.getuser()


_KNOWN_HOSTS_LOCK = threading.Lock()


@dataclass(slots=True)
class KnownHosts:
    """What the known_hosts files say, read leniently like OpenSSH reads them.

    `keys` is a paramiko HostKeys with every usable entry; `revoked` holds the keys listed
    under `@revoked` (refused for any host); `hashed` tells whether the first file hashes its
    host names (new entries are then hashed too).
    """

    keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)
    revoked: set[tuple[str, str]] = field(default_factory=set)
    hashed: bool = False


def read_known_hosts(paths: Sequence[Path], strict_first: bool = True) -> KnownHosts:
    """Parse known_hosts files line by line; never let one odd line break the rest.

    `@cert-authority` lines (host certificates, which paramiko cannot verify) and unknown
    markers are skipped with a warning naming the file and line; `@revoked` keys are kept for
    refusal; key types paramiko does not know are skipped quietly, as OpenSSH skips them.
    ConfigError only when the first (user) file cannot be read at all.
    """
    from paramiko.hostkeys import HostKeyEntry

    known = KnownHosts()
    for index, path in enumerate(paths):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            if index == 0 and strict_first:
                raise ConfigError(f"cannot read known_hosts {path}: {err.strerror}") from None
            continue
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = None
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                line = line.strip()
                if marker not in ("@revoked", "@cert-authority"):
                    logger.warning("%s:%d: unknown marker %s; line skipped", path, lineno, marker)
                    continue
                if marker == "@cert-authority":
                    logger.warning(
                        "%s:%d: @cert-authority (host certificates) is not supported; line skipped",
                        path,
                        lineno,
                    )
                    continue
            if index == 0 and line.startswith("|1|"):
                known.hashed = True
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except Exception as err:  # bad base64, truncated key, ...
                logger.warning("%s:%d: unreadable entry skipped (%s)", path, lineno, err)
                continue
            if entry is None or entry.key is None:  # a key type paramiko does not know
                logger.debug("%s:%d: key type not supported; skipped", path, lineno)
                continue
            if marker == "@revoked":
                known.revoked.add((entry.key.get_name(), entry.key.get_base64()))
                continue
            for name in entry.hostnames:
                known.keys.add(name, entry.key.get_name(), entry.key)
    return known


def known_hosts_line(hostname: str, key: paramiko.PKey, hashed: bool) -> str:
    """One known_hosts line for `hostname` (already `[host]:port` for other ports)."""
    name = paramiko.HostKeys.hash_host(hostname) if hashed else hostname
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> bool:
    """Add one line for `hostname` to `path` atomically, keeping every other byte as it was.

    Hashed when the file already hashes names. Threads serialize on a lock and processes on
    an flock of the directory; the file is rewritten to a temp file (fsync) and renamed, so a
    crash leaves the old or the new file, never half of one. Returns False when another writer
    already added this key.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _KNOWN_HOSTS_LOCK:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            try:
                old = path.read_bytes() if path.is_file() else b""
            except OSError as err:
                raise ConfigError(f"cannot read known_hosts {path}: {err.strerror}") from None
            current = read_known_hosts([path])
            if current.keys.check(hostname, key):
                return False
            line = known_hosts_line(hostname, key, current.hashed).encode()
            if old and not old.endswith(b"\n"):
                old += b"\n"
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(old + line)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return True
        finally:
            os.close(dir_fd)  # releases the flock


class TrustNewHost(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key once and save it (only when the user said --trust-new-host)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        append_known_host(self.known_hosts, hostname, key)
        logger.warning(
            "trusting new host key for %s: %s %s (saved to %s)",
            hostname,
            key.get_name(),
            key.fingerprint,
            self.known_hosts,
        )


class RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise HostKeyError(
            f"host key for {hostname} is not in known_hosts ({key.get_name()} {key.fingerprint}); "
            "check the fingerprint and rerun with --trust-new-host, or add it with ssh-keyscan"
        )


def changed_key_message(target: str, expected: paramiko.PKey, got: paramiko.PKey, kh: Path) -> str:
    """OpenSSH's wording for a changed host key, on one line."""
    return (
        f"WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The {got.get_name()} key sent by "
        f"{target} is {got.fingerprint}, but {kh} has {expected.get_name()} "
        f"{expected.fingerprint}. Someone could be eavesdropping on you right now "
        f"(man-in-the-middle attack), or the device was reinstalled. Host key verification "
        f"failed. If the change is expected: ssh-keygen -R '{target}' -f {kh}"
    )
