"""The output Fisher sensitivity predicts the KLD a weight's output error costs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def stories(stories_gguf):
    from ramp_edge.models import resolve

    return resolve(str(stories_gguf))


@pytest.fixture(scope="module")
def sensitivity(stories) -> dict[str, float]:
    from ramp_edge.features.fisher import output_sensitivity

    return output_sensitivity(stories, n_seq=8)


def _kld_and_relative_error(stories, name: str, eps: float) -> tuple[float, float]:
    """Mean KLD (nats/token) of the model with `name` perturbed by multiplicative noise of
    size eps, and that weight's relative output error, on the same calibration windows."""
    import torch

    from ramp_edge.features.stats import calibration_tokens, gguf_names, load_torch_model

    lm = load_torch_model(stories)
    tokens = torch.as_tensor(calibration_tokens(stories, n_seq=8))
    hf = next(k for k, v in gguf_names(lm).items() if v == name)
    module = lm.get_submodule(hf.removesuffix(".weight"))
    outputs: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda m, i, o: outputs.append(o.detach().double()))
    with torch.no_grad():
        ref = [torch.log_softmax(lm(input_ids=t[None]).logits[0].double(), -1) for t in tokens]
        clean = outputs[:]
        outputs.clear()
        gen = torch.Generator().manual_seed(1)
        w = module.weight
        w += eps * w.abs() * torch.randn(w.shape, generator=gen)
        cand = [torch.log_softmax(lm(input_ids=t[None]).logits[0].double(), -1) for t in tokens]
    hook.remove()
    kld = np.mean(
        [float((p.exp() * (p - q)).sum(-1).mean()) for p, q in zip(ref, cand, strict=True)]
    )
    err = sum(float(((a - b) ** 2).sum()) for a, b in zip(outputs, clean, strict=True))
    energy = sum(float((b**2).sum()) for b in clean)
    return kld, err / energy


def test_every_quantizable_weight_has_a_positive_sensitivity(stories, sensitivity):
    from ramp_edge.quant.presets import allows_quantization
    from ramp_edge.source import open_source

    names = {s.name for s in open_source(stories).specs if allows_quantization(s.name, s.shape)}
    assert names <= set(sensitivity), names - set(sensitivity)
    assert all(sensitivity[n] > 0 for n in names)


def test_sensitivity_predicts_the_measured_kld(stories, sensitivity):
    layer = [n for n in sensitivity if n.startswith("blk.")]
    most = max(layer, key=sensitivity.get)
    least = min(layer, key=sensitivity.get)
    assert sensitivity[most] > 3 * sensitivity[least]  # the model has a spread to predict
    measured = {}
    for name in (most, least):
        kld, rel = _kld_and_relative_error(stories, name, eps=0.05)
        predicted = sensitivity[name] * rel
        measured[name] = kld / rel
        # a second-order estimate from 8 windows and sampled labels: within a factor of 3
        assert predicted / 3 < kld < predicted * 3, (name, kld, predicted)
    assert measured[most] > measured[least]


def test_sensitivity_is_cached(stories, sensitivity):
    from ramp_edge.features.fisher import output_sensitivity

    assert output_sensitivity(stories, n_seq=8) == sensitivity
