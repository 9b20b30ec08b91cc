"""The policy observation: activation statistics (format-2 policies) or zeros (format 1)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.mark.torch
def test_activation_features_present_only_when_asked(stories_gguf, home):
    from ramp_edge.allocate.sensitivity import measure_sensitivity
    from ramp_edge.models import resolve
    from ramp_edge.rl.features_adapter import tensor_features
    from ramp_edge.source import open_source

    source = open_source(resolve(str(stories_gguf)))
    table = measure_sensitivity(source)
    with_act = tensor_features(source, table, activations=True)
    without = tensor_features(source, table, activations=False)
    assert with_act.shape == without.shape == (len(table.tensors), 11)
    assert np.all(without[:, :3] == 0)
    # block tensors get real activation statistics: the outlier ratio is > 0 for every one
    blocks = [i for i, t in enumerate(table.tensors) if t.name.startswith("blk.")]
    assert np.all(with_act[blocks, 1] > 0)
    # the rest of the embedding is the same either way (and both came back from their caches)
    np.testing.assert_allclose(with_act[:, 3:], without[:, 3:])
    np.testing.assert_array_equal(tensor_features(source, table, activations=True), with_act)
