"""The OpenSSH files a connection honours: ~/.ssh/config lookup and known_hosts policies.

Safety defaults follow OpenSSH: an unknown host key is refused unless the user said
--trust-new-host, and a changed host key is always refused (`fleet.ssh.Connection.open`).
"""

from __future__ import annotations

import logging
import os
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


class TrustNewHost(paramiko.MissingHostKeyPolicy):
    """Accept an unknown key once and save it (only when the user said --trust-new-host)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        # Hosts connect in parallel: merge into the file as it is now, under a lock, instead of
        # overwriting it with this client's view (which would drop keys other threads added).
        with _KNOWN_HOSTS_LOCK:
            self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            current = paramiko.HostKeys()
            if self.known_hosts.is_file():
                current.load(str(self.known_hosts))
            current.add(hostname, key.get_name(), key)
            current.save(str(self.known_hosts))
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
