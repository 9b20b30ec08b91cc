"""Device lists as Ansible-style YAML inventories, read without Ansible.

The same file works with ``ansible-inventory -i fleet.yml``::

    all:
      vars:
        ansible_user: pi
        ansible_ssh_private_key_file: ~/.ssh/fleet_ed25519
      children:
        raspberry_pi:
          vars: {device: pi5}
          hosts:
            pi-lab-1: {ansible_host: 192.168.1.20}
            pi-lab-2: {ansible_host: 192.168.1.21, ansible_port: 2222}
        jetson:
          hosts:
            orin-1: {ansible_host: orin.local, device: jetson-orin}

Groups nest through ``children``; variables inherit parent -> child group -> host, and a host's
own variables always win. Recognised variables: ``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file`` (relative paths are relative to the
inventory file), ``ansible_python_interpreter`` and ``device`` (a device profile id); all
others are kept in `Host.vars`. Anything malformed raises ConfigError naming the file, the line
and the field.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ramp_edge.errors import ConfigError
from ramp_edge.fleet.hosts import Host, check_address, check_user, parse_port

logger = logging.getLogger(__name__)

GROUP_KEYS = ("hosts", "children", "vars")
_NAME = re.compile(r"^[A-Za-z0-9_.@:-][A-Za-z0-9_.@:+-]*$")


@dataclass(frozen=True, slots=True)
class Inventory:
    """Hosts in file order and group -> member host names."""

    path: str
    hosts: tuple[Host, ...]
    groups: Mapping[str, tuple[str, ...]]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise ConfigError(f"unknown host {name!r} in {self.path}; known: {self.names()}")

    def names(self) -> str:
        return ", ".join(h.name for h in self.hosts)

    def select(self, pattern: str | None = None) -> tuple[Host, ...]:
        """Hosts matching a comma-separated list of host or group names (None or 'all': all)."""
        if not pattern or pattern.strip() == "all":
            return self.hosts
        wanted: list[str] = []
        for part in (p.strip() for p in pattern.split(",")):
            if not part:
                continue
            if part in self.groups:
                wanted.extend(self.groups[part])
            elif any(h.name == part for h in self.hosts):
                wanted.append(part)
            else:
                raise ConfigError(
                    f"{part!r} is neither a host nor a group of {self.path}; "
                    f"hosts: {self.names()}; groups: {', '.join(self.groups)}"
                )
        selected = tuple(h for h in self.hosts if h.name in wanted)
        if not selected:
            raise ConfigError(
                f"no hosts matched {pattern!r} in {self.path}; hosts: {self.names()}; "
                f"groups: {', '.join(self.groups)}"
            )
        return selected


# --------------------------------------------------------------------------- parsing


class _Reader:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.loader = yaml.SafeLoader("")
        # host -> list of (group path, group vars with lines, host vars with lines, line)
        self.seen: dict[str, list[tuple[list[str], dict, dict, int]]] = {}
        self.groups: dict[str, list[str]] = {}

    def fail(self, node: yaml.Node | None, message: str) -> ConfigError:
        where = (
            f"{self.source} line {node.start_mark.line + 1}" if node is not None else self.source
        )
        return ConfigError(f"{where}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node) of a YAML mapping; keys must be unique strings."""
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return []
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, got {_kind(node)}")
        out = []
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, f"{what}: keys must be plain names")
            key = str(self.loader.construct_object(key_node))
            if key in keys:
                raise self.fail(key_node, f"{what}: duplicate key {key!r}")
            keys.add(key)
            out.append((key, key_node, value_node))
        return out

    def value(self, node: yaml.Node) -> Any:
        return self.loader.construct_object(node, deep=True)

    def vars(self, node: yaml.Node, what: str) -> dict[str, tuple[Any, yaml.Node]]:
        return {k: (self.value(v), v) for k, _, v in self.mapping(node, what)}

    def group(
        self, name: str, name_node: yaml.Node, node: yaml.Node, path: list[str], inherited: dict
    ) -> None:
        if not _NAME.match(name):
            raise self.fail(name_node, f"invalid group name {name!r}")
        if name in path:
            raise self.fail(name_node, f"group {name!r} contains itself")
        members = self.groups.setdefault(name, [])
        entries = self.mapping(node, f"group {name!r}")
        for key, key_node, _ in entries:
            if key not in GROUP_KEYS:
                raise self.fail(
                    key_node,
                    f"group {name!r}: unknown key {key!r} (expected hosts, children or vars)",
                )
        parts = {k: v for k, _, v in entries}
        merged = dict(inherited)
        if "vars" in parts:
            merged.update(self.vars(parts["vars"], f"group {name!r} vars"))
        for host, host_key_node, host_node in self.mapping(
            parts.get("hosts", _NULL), f"group {name!r} hosts"
        ):
            if "[" in host:
                raise self.fail(host_key_node, f"host {host!r}: host ranges are not supported")
            if not _NAME.match(host):
                raise self.fail(host_key_node, f"invalid host name {host!r}")
            if isinstance(host_node, yaml.ScalarNode) and host_node.tag != "tag:yaml.org,2002:null":
                raise self.fail(
                    host_node,
                    f"host {host!r}: expected a mapping of variables (e.g. "
                    f"{{ansible_host: {self.value(host_node)}}}), got a {_kind(host_node)}",
                )
            host_vars = self.vars(host_node, f"host {host!r}")
            self.seen.setdefault(host, []).append(
                ([*path, name], merged, host_vars, host_key_node.start_mark.line + 1)
            )
            if host not in members:
                members.append(host)
        for child, child_key_node, child_node in self.mapping(
            parts.get("children", _NULL), f"group {name!r} children"
        ):
            self.group(child, child_key_node, child_node, [*path, name], merged)

    def hosts(self) -> tuple[Host, ...]:
        out = []
        for name, occurrences in self.seen.items():
            merged: dict[str, tuple[Any, yaml.Node]] = {}
            for _, group_vars, _, _ in occurrences:
                merged.update(group_vars)
            for _, _, host_vars, _ in occurrences:
                merged.update(host_vars)
            groups: list[str] = []
            for path, _, _, _ in occurrences:
                groups.extend(g for g in path if g not in groups)
            out.append(self.host(name, merged, tuple(groups), occurrences[0][3]))
        # membership: a group contains its children's hosts too
        return tuple(out)

    def host(
        self,
        name: str,
        merged: dict[str, tuple[Any, yaml.Node]],
        groups: tuple[str, ...],
        line: int,
    ) -> Host:
        def text(field: str) -> str | None:
            if field not in merged:
                return None
            value, node = merged[field]
            if value is None:
                return None
            if (
                not isinstance(value, (str, int, float))
                or isinstance(value, bool)
                or str(value) == ""
            ):
                raise self.fail(
                    node, f"host {name!r}: {field} must be a non-empty string, got {value!r}"
                )
            return str(value)

        port = None
        if "ansible_port" in merged:
            value, node = merged["ansible_port"]
            try:
                port = parse_port(value, "ansible_port")
            except ConfigError as err:
                raise self.fail(node, f"host {name!r}: {err}") from None
        key_file = text("ansible_ssh_private_key_file") or text("ansible_private_key_file")
        if key_file is not None:
            field = (
                "ansible_ssh_private_key_file"
                if "ansible_ssh_private_key_file" in merged
                else "ansible_private_key_file"
            )
            path = Path(os.path.expanduser(key_file))
            if not path.is_absolute():
                path = self.base_dir / path
            if not path.is_file():
                raise self.fail(merged[field][1], f"host {name!r}: {field}: no such file {path}")
            key_file = str(path)
        address = text("ansible_host") or name
        user = text("ansible_user") or text("ansible_ssh_user")
        for field, value, check in (
            ("ansible_host", address, check_address),
            ("ansible_user" if "ansible_user" in merged else "ansible_ssh_user", user, check_user),
        ):
            if value is None:
                continue
            try:
                check(value, f"host {name!r}: {field}")
            except ConfigError as err:
                if field in merged:
                    raise self.fail(merged[field][1], f"{err}; refusing this entry") from None
                raise ConfigError(
                    f"{self.source} line {line}: {err}; refusing this entry"
                ) from None
        plain = {k: v for k, (v, _) in merged.items()}
        return Host(
            name=name,
            address=address,
            port=port,
            user=user,
            key_file=key_file,
            device=text("device"),
            python=text("ansible_python_interpreter"),
            groups=groups,
            vars=MappingProxyType(plain),
            line=line,
        )


_NULL = yaml.ScalarNode("tag:yaml.org,2002:null", "")


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return f"scalar {node.value!r}"


def parse_inventory(
    text: str, source: str = "<inventory>", base_dir: str | os.PathLike[str] = "."
) -> Inventory:
    """Parse inventory YAML text. Raises ConfigError naming the line and field on bad input."""
    reader = _Reader(source, Path(base_dir))
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{line}: invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from None
    if root is None:
        raise ConfigError(
            f"{source}: the inventory is empty; expected a top-level group such as 'all:'"
        )
    for name, name_node, node in reader.mapping(root, "the inventory top level"):
        reader.group(name, name_node, node, [], {})
    hosts = reader.hosts()
    if not hosts:
        raise ConfigError(f"{source}: no hosts; list them under a group's 'hosts:'")
    groups = _with_children(reader, root)
    return Inventory(path=source, hosts=hosts, groups=MappingProxyType(groups))


def _with_children(reader: _Reader, root: yaml.Node) -> dict[str, tuple[str, ...]]:
    """Group membership including hosts of child groups (so `select('all')` means all)."""
    members: dict[str, list[str]] = {g: list(h) for g, h in reader.groups.items()}
    for host, occurrences in reader.seen.items():
        for path, _, _, _ in occurrences:
            for group in path:
                if host not in members.setdefault(group, []):
                    members[group].append(host)
    order = list(reader.seen)
    return {g: tuple(sorted(h, key=order.index)) for g, h in members.items()}


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read an inventory file. Raises ConfigError (missing file, bad YAML, bad field)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"inventory not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read inventory {path}: {err}") from None
    return parse_inventory(text, source=str(path), base_dir=path.parent)
