"""The probe models: pure requantization refuses types it cannot make."""

from __future__ import annotations

import pytest

from ramp_edge.device.probe_models import quantize_pure
from ramp_edge.errors import ConfigError


def test_quantize_pure_rejects_bad_types(tmp_path):
    with pytest.raises(ConfigError, match="unknown quant type"):
        quantize_pure(tmp_path / "a", tmp_path / "b", "Q9_9")
    with pytest.raises(ConfigError, match="importance matrix"):
        quantize_pure(tmp_path / "a", tmp_path / "b", "IQ2_XS")
