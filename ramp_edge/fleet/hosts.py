"""`Host`: one device's connection settings, and the one parser of `user@addr[:port]`.

Both `--host` on the command line and inventory entries become a `Host` here, so an address,
a port and a user are checked the same way wherever they come from. Stdlib only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ramp_edge.errors import ConfigError

# RFC 1123 host names (labels of letters, digits and inner hyphens; `_` too, which mDNS and
# ~/.ssh/config aliases use); IPv4 and IPv6 literals are checked by `ipaddress`.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
# POSIX portable user names, plus `@` for domain logins (user@domain); no shell metacharacters.
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?$")


def check_address(value: str, what: str = "address") -> str:
    """A host name, IPv4 or IPv6 address (no brackets), else ConfigError.

    Addresses reach ~/.ssh/config lookups and ProxyCommand's %h, so anything a shell would
    interpret (`;`, `$(...)`, spaces, quotes) is refused here, wherever the address came from.
    """
    text = str(value)
    try:
        ipaddress.ip_address(text.split("%", 1)[0] if ":" in text else text)
        if "%" not in text or re.fullmatch(r"[^%]+%[A-Za-z0-9_.-]+", text):
            return text
    except ValueError:
        pass
    host = text[:-1] if text.endswith(".") else text
    if 0 < len(host) <= 253 and all(_LABEL.match(label) for label in host.split(".")):
        return text
    raise ConfigError(f"{what} {text!r} is not a valid host name, IPv4 or IPv6 address")


def check_user(value: str, what: str = "user") -> str:
    """A login name without shell metacharacters, else ConfigError."""
    if not _USER.match(str(value)):
        raise ConfigError(
            f"{what} {value!r} is not a valid user name (letters, digits, '_', '.', '-', '@')"
        )
    return str(value)


def parse_port(value: Any, what: str = "port") -> int:
    """An integer TCP port in 1..65535 from an int or a digit string; ConfigError otherwise."""
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.isdigit())
    ):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    port = int(value)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what} {port} outside 1..65535")
    return port


@dataclass(frozen=True, slots=True)
class Host:
    """One device with its effective (merged) connection settings.

    Attributes:
        name: inventory host name (also the ~/.ssh/config alias when `address` is not set).
        address: ansible_host, or the name.
        port: ansible_port; None leaves it to ~/.ssh/config (default 22).
        user: ansible_user; None leaves it to ~/.ssh/config or the local user.
        key_file: absolute path of ansible_ssh_private_key_file, or None.
        device: device profile id (canonical, not an alias), or None.
        python: ansible_python_interpreter, or None (the agent client picks one).
        groups: the groups the host belongs to, outermost first.
        vars: every effective variable, read-only.
        line: line of the inventory where the host is first listed.
    """

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    device: str | None = None
    python: str | None = None
    groups: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    line: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("host name is empty")
        if self.port is not None and (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 1 <= self.port <= 65535
        ):
            raise ConfigError(f"host {self.name}: port {self.port!r} outside 1..65535")
        check_address(self.address, f"host {self.name}: address")
        if self.user is not None:
            check_user(self.user, f"host {self.name}: user")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "device": self.device,
            "python": self.python,
            "groups": list(self.groups),
            "vars": dict(self.vars),
        }


def parse_host(text: str, device: str | None = None, name: str | None = None) -> Host:
    """`[user@]addr[:port]` -> Host, named `name` or the address. ConfigError on a bad port.

    Example: `parse_host("pi@pi5.local:2222")` -> Host(name="pi5.local", user="pi", port=2222).
    """
    user, at, rest = text.strip().rpartition("@")
    if rest.startswith("["):  # [v6]:port or [v6]
        address, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ConfigError(f"--host {text!r}: expected [ipv6]:port")
        sep, port = (":", tail[1:]) if tail else ("", "")
    elif rest.count(":") > 1:  # a bare IPv6 address, no port
        address, sep, port = rest, "", ""
    else:
        address, sep, port = rest.partition(":")
    if not address:
        raise ConfigError(f"--host {text!r}: no address; expected user@addr[:port]")
    if at and not user:
        raise ConfigError(f"--host {text!r}: empty user before '@'")
    check_address(address, f"--host {text!r}: address")
    if user:
        check_user(user, f"--host {text!r}: user")
    return Host(
        name=name or address,
        address=address,
        port=parse_port(port, f"--host {text!r}: port") if sep else None,
        user=user or None,
        device=device,
    )
