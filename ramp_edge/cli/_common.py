"""Helpers shared by the CLI commands: JSON output, tables, model opening, identities.

Identities are resolved here, once, at the edge: a device name or alias becomes its canonical
profile id, `--host` becomes a `fleet.hosts.Host`, a budget text becomes a `Budget`. The core
receives only resolved values and stores canonical ids.
"""

from __future__ import annotations

import json
from typing import Any

import click


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def json_option(func):
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
    )(func)


def open_model(ref: str, tokenizer_from: str | None = None):
    """Resolve a model reference and open it (downloads built-in models on first use)."""
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    return open_source(resolve(ref), tokenizer_from)


def resolve_device(name: str) -> str:
    """A device profile id or alias -> the canonical profile id (ConfigError lists the known)."""
    from ramp_edge.device.profiles import resolve_name

    return resolve_name(name)


def device_or_host_name(name: str) -> str:
    """For queries: a profile id or alias -> its id; any other name (a host without a profile,
    stored under its own name) unchanged."""
    from ramp_edge.errors import ConfigError

    try:
        return resolve_device(name)
    except ConfigError:
        return name


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def calibrate_option(func):
    """--calibrate/--no-calibrate, shared by allocate and train: the same error table for both."""
    return click.option(
        "--calibrate/--no-calibrate",
        default=True,
        show_default=True,
        help="Scale the error table with one real KLD probe per tensor role "
        "(cached; ~1-2 min once).",
    )(func)


def method_option(func):
    """--method, shared by allocate and deploy (choices from ramp_edge.allocate.METHODS)."""
    from ramp_edge.allocate import METHODS

    return click.option(
        "--method",
        type=click.Choice(METHODS),
        default="knapsack",
        show_default=True,
        help="Allocation method.",
    )(func)


def gptq_option(func):
    """--gptq/--no-gptq, shared by allocate, export and deploy."""
    return click.option(
        "--gptq/--no-gptq",
        default=None,
        help="Encode blocks with GPTQ error compensation on the model's input Hessians from "
        "calibration text (WikiText-2 validation): the same types and bytes, lower KLD "
        "(bench/search.md). Default: on for --method measured and for recipes made with it; "
        "needs torch.",
    )(func)


def ray_address_option(func):
    """--ray-address, shared by allocate and train: measure the error table as Ray tasks."""
    return click.option(
        "--ray-address",
        metavar="auto|ray://HOST:PORT",
        help="Measure the per-tensor error table as Ray tasks on this cluster (same table as "
        "the local run; needs pip install 'ramp-edge[ray]'). Start one with: ray start --head.",
    )(func)
