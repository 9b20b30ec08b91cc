"""The RampEdgeError tree. Core code raises only these; `cli` maps them to exit codes."""

from __future__ import annotations


class RampEdgeError(Exception):
    """An expected failure with a one-line message that says what to do."""

    exit_code = 1


class ConfigError(RampEdgeError):
    """Bad TOML, inventory, recipe or an unknown name (device, model, preset, task)."""

    exit_code = 3


class BudgetError(RampEdgeError):
    """A budget that no legal allocation can meet."""

    exit_code = 4


class ArtifactError(RampEdgeError):
    """A corrupt or truncated file, a schema that is too new, a bad checksum."""

    exit_code = 5


class DependencyError(RampEdgeError):
    """An optional dependency is missing; the message names the pip extra."""

    exit_code = 6


class RemoteError(RampEdgeError):
    """SSH failures: host key, timeout, remote command failure."""

    exit_code = 7


def require(module: str, extra: str) -> None:
    """Raise DependencyError naming the extra when `module` cannot be imported."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DependencyError(f"{module} is not installed; run: pip install 'ramp-edge[{extra}]'")
