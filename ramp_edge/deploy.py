"""The main job: quantize a model for a device and report what it costs and how good it is."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ramp_edge import paths

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]


@dataclass(frozen=True, slots=True)
class ReportRow:
    label: str
    size_bytes: int
    bpw: float
    ppl: float
    kld: float | None
    same_top_p: float | None
    tg_tps: float


@dataclass(frozen=True, slots=True)
class DeployReport:
    model_id: str
    device: str
    artifact: str
    rows: tuple[ReportRow, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "device": self.device, "artifact": self.artifact,
                "seconds": round(self.seconds, 2), "rows": [asdict(r) for r in self.rows]}


def generation_speed(path: str | Path, n_tokens: int = 64, threads: int | None = None) -> float:
    """Tokens/s of single-token decoding after a short prompt (llama-bench's tg, unbatched)."""
    from ramp_edge.evaluate.llama import LlamaLogits

    model = LlamaLogits(path, n_ctx=256, threads=threads)
    try:
        llm = model.llm
        llm.reset()
        llm.eval(model.tokenize("The capital of France is")[:8] or [model.bos])
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        start = time.perf_counter()
        for _ in range(n_tokens):
            llm.eval([token])
            token = int(llm.scores[llm.n_tokens - 1].argmax())
        return n_tokens / (time.perf_counter() - start)
    finally:
        model.close()


def deploy_local(
    model_ref: str,
    recipe_spec: str,
    n_chunks: int = 4,
    out: str | None = None,
    progress: ProgressFn | None = None,
) -> DeployReport:
    """Export `recipe_spec` of `model_ref`, then measure it against the source on this machine."""
    from ramp_edge import recipe as recipes
    from ramp_edge.evaluate.perplexity import kl_divergence, perplexity
    from ramp_edge.models import resolve
    from ramp_edge.quant.export import export_model
    from ramp_edge.source import open_source

    start = time.perf_counter()
    resolved = resolve(model_ref)
    source = open_source(resolved)
    recipe = recipes.build(source, recipe_spec)
    label = recipe.method.split(":", 1)[-1]
    target = Path(out) if out else paths.artifacts_dir() / f"{resolved.model_id}-{label}.gguf"
    step = lambda desc: progress(0, 0, desc) if progress else None  # noqa: E731
    step(f"export {label}")
    result = export_model(source, recipe, target, progress=progress)
    rows = []
    step("measure the source model")
    ref_ppl = perplexity(resolved.path, n_chunks=n_chunks)
    rows.append(ReportRow(f"source ({resolved.path.name})", resolved.path.stat().st_size,
                          _bpw(source), ref_ppl.ppl, None, None, generation_speed(resolved.path)))
    step(f"measure {label}")
    kld = kl_divergence(target, resolved.path, n_chunks=n_chunks)
    rows.append(ReportRow(label, result.plan.size_bytes, result.plan.bpw, kld.ppl_cand,
                          kld.mean_kld, kld.same_top_p, generation_speed(target)))
    return DeployReport(resolved.model_id, "localhost", str(target), tuple(rows),
                        time.perf_counter() - start)


def _bpw(source: Any) -> float:
    from ramp_edge.quant.catalogue import get

    bits = sum(get(s.source_type).tensor_bytes(s.shape) * 8 for s in source.specs)
    return bits / max(1, source.info.n_params)
