"""JSON artifact envelopes: `schema`, integer `schema_version`, `provenance`.

Also upgraders for old versions.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramp_edge import __version__
from ramp_edge.errors import ArtifactError

# kind -> current version
CURRENT: dict[str, int] = {
    "ramp-edge/recipe": 1,
    "ramp-edge/export": 1,
    "ramp-edge/eval": 1,
    "ramp-edge/device-profile": 1,
    "ramp-edge/bench": 1,
    "ramp-edge/policy": 1,
}

# (kind, from_version) -> function turning a version-N document into version N+1
_UPGRADERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upgrader(kind: str, from_version: int):
    def register(func: Callable[[dict[str, Any]], dict[str, Any]]):
        _UPGRADERS[(kind, from_version)] = func
        return func

    return register


def _git_hash() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict[str, Any]:
    versions: dict[str, str] = {"ramp-edge": __version__, "python": platform.python_version()}
    for module in ("gguf", "llama_cpp", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            continue
    return {
        "versions": versions,
        "git": _git_hash(),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": platform.node(),
    }


def wrap(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"schema": kind, "schema_version": CURRENT[kind], "provenance": provenance(), **body}


def unwrap(kind: str, doc: Any, source: str = "document") -> dict[str, Any]:
    """Check kind and version, upgrading older documents; refuse newer ones."""
    if not isinstance(doc, dict) or doc.get("schema") != kind:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ArtifactError(f"{source} is not a {kind} document (schema: {found!r})")
    version = doc.get("schema_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{source} has no integer schema_version")
    current = CURRENT[kind]
    if version > current:
        raise ArtifactError(
            f"{source} has {kind} version {version}, newer than this ramp-edge supports "
            f"({current}); upgrade ramp-edge"
        )
    while version < current:
        step = _UPGRADERS.get((kind, version))
        if step is None:
            raise ArtifactError(f"{source}: no upgrader from {kind} version {version}")
        doc = step(doc)
        version += 1
        doc["schema_version"] = version
    return doc
