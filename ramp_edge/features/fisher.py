"""What a weight's output error costs in KL divergence: the output Fisher of every linear layer.

For a small change e of a linear layer's output o (at every token), the model's mean KLD
against itself is, to second order, 1/2 E[e^T F e], where F = E_y[g g^T] and g is the gradient
of log p(y) with respect to o, y drawn from the model's own next-token distribution (the
Fisher information is the Hessian of the KLD at zero change). Keeping F's diagonal and
assuming the quantization error spreads over output channels like the output's energy, a
tensor's KLD is its relative output error r = E||e||^2 / E||o||^2 times

    sensitivity = 1/2 * sum_c F_cc * E[o_c^2]

one number per weight, measured by one forward and one backward pass per calibration window.
The error table multiplies each tensor's relative errors by it (allocate/sensitivity.py), so
the knapsack sees *where* a layer sits: on SmolLM2-135M the ffn_down of layer 11 costs 357x
the median ffn_down per unit of relative error (bench/fisher.md),
which a relative error (or one scale per role) cannot know.

Needs the whole model in float32 for the backward pass (torch); `output_sensitivity` returns
{} when that does not fit in memory, and callers fall back to per-role probes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable

import numpy as np

from ramp_edge import paths
from ramp_edge.fsutil import atomic_write_json
from ramp_edge.models import ResolvedModel

logger = logging.getLogger(__name__)
ProgressFn = Callable[[float, float, str], None]

FISHER_VERSION = 1
DEFAULT_N_SEQ = 8  # windows of 512 tokens (SmolLM2-135M: 4.5 min on 2 busy cores)
# float32 weights, their gradients and the activations of one window, with headroom
MEMORY_FACTOR = 3.0


def fits_in_memory(n_params: int) -> bool:
    import psutil

    return n_params * 4 * MEMORY_FACTOR < psutil.virtual_memory().available


def _cache_file(model: ResolvedModel, tokens: np.ndarray, seed: int):
    from ramp_edge.features.stats import _model_digest

    digest = hashlib.sha256()
    digest.update(f"ramp-edge-fisher-v{FISHER_VERSION};seed={seed};".encode())
    digest.update(_model_digest(model).encode())
    digest.update(str(tokens.shape).encode())
    digest.update(np.ascontiguousarray(tokens, dtype=np.int64).tobytes())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model.model_id)[:64]
    return paths.cache_dir("fisher") / f"{safe}-{digest.hexdigest()[:24]}.json"


def output_sensitivity(
    model: ResolvedModel,
    data: str | None = None,
    n_seq: int = DEFAULT_N_SEQ,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, float]:
    """GGUF weight name -> KLD per unit of relative output error (cached per model and tokens).

    A tied output head is reported under `token_embd.weight` too. Returns {} (and logs why)
    when the model does not fit in memory for a backward pass.
    """
    from ramp_edge.features.stats import DEFAULT_DATA, calibration_tokens
    from ramp_edge.source import open_source

    if not fits_in_memory(open_source(model).info.n_params):
        logger.info("output Fisher skipped: %s does not fit in memory in float32", model.model_id)
        return {}
    tokens = calibration_tokens(model, data or DEFAULT_DATA, n_seq)
    cache = _cache_file(model, tokens, seed)
    if cache.exists():
        try:
            return {str(k): float(v) for k, v in json.loads(cache.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            logger.warning("ignoring unreadable Fisher cache %s", cache)
    out = _measure(model, tokens, seed, progress)
    atomic_write_json(cache, out)
    return out


def _measure(
    model: ResolvedModel, tokens: np.ndarray, seed: int, progress: ProgressFn | None
) -> dict[str, float]:
    import torch

    from ramp_edge.features.stats import gguf_names, load_torch_model

    lm = load_torch_model(model)
    names = gguf_names(lm)
    fisher: dict[str, torch.Tensor] = {}
    energy: dict[str, torch.Tensor] = {}
    handles = []

    def forward_hook(name: str):
        def hook(module, inputs, output):
            o = output.detach().double().reshape(-1, output.shape[-1])
            energy[name] = energy.get(name, 0) + (o**2).sum(0)

        return hook

    def backward_hook(name: str):
        def hook(module, grad_input, grad_output):
            g = grad_output[0].detach().double().reshape(-1, grad_output[0].shape[-1])
            fisher[name] = fisher.get(name, 0) + (g**2).sum(0)

        return hook

    tied = lm.get_output_embeddings() is not None and (
        lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    )
    for module_name, module in lm.named_modules():
        gguf_name = names.get(f"{module_name}.weight")
        if gguf_name is None or not isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            continue
        if isinstance(module, torch.nn.Embedding):  # rows looked up: the output is the row
            gguf_name = f"{gguf_name}#lookup"
        handles.append(module.register_forward_hook(forward_hook(gguf_name)))
        handles.append(module.register_full_backward_hook(backward_hook(gguf_name)))
    generator = torch.Generator().manual_seed(seed)
    n_tokens = 0
    try:
        for i in range(tokens.shape[0]):
            if progress:
                progress(i, tokens.shape[0], f"output Fisher window {i + 1}/{tokens.shape[0]}")
            logits = lm(input_ids=torch.as_tensor(tokens[i : i + 1]), use_cache=False).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            with torch.no_grad():  # y from the model itself: the true Fisher, not the empirical
                y = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
            with warnings.catch_warnings():  # the embedding's input (token ids) has no gradient
                warnings.filterwarnings("ignore", "Full backward hook", UserWarning)
                logp[torch.arange(len(y)), y].sum().backward()
            lm.zero_grad(set_to_none=True)
            n_tokens += len(y)
    finally:
        for h in handles:
            h.remove()
        del lm
    if progress:
        progress(tokens.shape[0], tokens.shape[0], "output Fisher done")
    per_use = {
        name: float(0.5 * (fisher[name] * energy[name]).sum() / n_tokens**2)
        for name in fisher
        if name in energy
    }
    out: dict[str, float] = {}
    for name, value in per_use.items():
        weight = name.removesuffix("#lookup")
        if tied and weight == "output.weight":
            weight = "token_embd.weight"  # one matrix, read twice: both uses pay for its error
        out[weight] = out.get(weight, 0.0) + value
    return out
