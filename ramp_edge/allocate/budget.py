"""Budgets in bits per weight or in bytes. The exported file's size is what counts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ramp_edge.errors import BudgetError, ConfigError

_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(bpw|b|kb|mb|gb|kib|mib|gib)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Budget:
    """A size budget: `value` bits per weight (whole file / parameters) or bytes."""

    kind: str  # "bpw" | "bytes"
    value: float
    text: str

    def target_bytes(self, n_params: int) -> int:
        """The largest allowed file size in bytes for a model of n_params weights."""
        if self.kind == "bytes":
            return int(self.value)
        return int(self.value * n_params / 8)

    def __str__(self) -> str:
        return self.text


def parse_budget(text: str) -> Budget:
    """`4.6bpw`, `95MB` (10^6), `90MiB` (2^20), `120000000b`."""
    match = _PATTERN.match(str(text))
    if not match:
        raise ConfigError(f"bad budget {text!r}; use e.g. 4.6bpw, 95MB or 90MiB")
    value, unit = float(match.group(1)), match.group(2).lower()
    if value <= 0:
        raise ConfigError(f"budget must be positive, got {text!r}")
    if unit == "bpw":
        return Budget("bpw", value, text)
    return Budget("bytes", value * _UNITS[unit], text)


def below_smallest_file(budget: Budget, target: int, smallest: int, n_params: int) -> BudgetError:
    """The one error every allocator raises when no legal file fits the budget."""
    return BudgetError(
        f"budget {budget} ({target:,} bytes) is below the smallest legal file "
        f"({smallest:,} bytes, {smallest * 8 / n_params:.2f} bpw)"
    )
