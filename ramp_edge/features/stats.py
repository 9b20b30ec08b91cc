"""Calibration statistics: stream token windows through the model in torch and record, per input
channel of every linear layer, max |x|, sum |x|, sum x^2, sum x^4 and a fixed row subsample.

The model is loaded with transformers, from a GGUF (`from_pretrained(gguf_file=...)`, which
dequantizes to float32 exactly as gguf-py does) or from a Hugging Face directory. Module
names are mapped to GGUF tensor names with `gguf.get_tensor_name_map`, so everything
downstream speaks GGUF. Text is tokenized by llama.cpp itself (vocab-only load) for GGUF
models, so the windows are the ones llama-perplexity / llama-imatrix would see: consecutive
non-overlapping windows of `seq_len` tokens, the first replaced by BOS where the model adds one.

Results are cached under `paths.cache_dir("stats")`, keyed by the model's bytes (sha256), the
token ids and the settings.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ramp_edge import paths
from ramp_edge.errors import ArtifactError, ConfigError, DependencyError

# llama.cpp logs to fd 2 from C even with verbose=False; one helper silences it everywhere.
from ramp_edge.evaluate.llama import _quiet_stderr as _quiet_fd2
from ramp_edge.features.naming import hf_to_gguf_name, tensor_name_map, to_hf_layout
from ramp_edge.features.records import STATS_VERSION, CalibrationStats, ChannelStats
from ramp_edge.fsutil import sha256_file
from ramp_edge.models import ModelInfo, ResolvedModel
from ramp_edge.source.hf import HF_TO_GGUF_ARCH

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, float, str], None]

DATASETS = {"wikitext2-valid": "wikitext2/valid.txt"}
DEFAULT_DATA = "wikitext2-valid"
DEFAULT_N_SEQ = 16
DEFAULT_SEQ_LEN = 512
DEFAULT_N_SAMPLE = 256


# --------------------------------------------------------------------------- text and tokens


def load_text(data: str) -> tuple[str, str]:
    """Text of a shipped calibration set (`wikitext2-valid`) or of a file; (text, sha256)."""
    from ramp_edge.evaluate.perplexity import DATASETS as EVAL_DATASETS
    from ramp_edge.evaluate.perplexity import load_text as _load

    if data in EVAL_DATASETS:  # never calibrate on evaluation text
        raise ConfigError(
            f"unknown calibration data {data!r}: {data} is evaluation data; use {DEFAULT_DATA}"
        )
    if data not in DATASETS and not Path(data).is_file():
        raise ConfigError(
            f"unknown calibration data {data!r}: not one of {', '.join(DATASETS)} nor a file"
        )
    return _load(data)


def _windows(ids: list[int], n_seq: int, seq_len: int, bos: int | None) -> np.ndarray:
    available = len(ids) // seq_len
    if available == 0:
        raise ConfigError(
            f"calibration text has {len(ids)} tokens, fewer than one window of {seq_len}"
        )
    if available < n_seq:
        logger.warning(
            "calibration text gives %d windows of %d tokens, not %d", available, seq_len, n_seq
        )
        n_seq = available
    out = np.asarray(ids[: n_seq * seq_len], dtype=np.int64).reshape(n_seq, seq_len)
    if bos is not None:
        out[:, 0] = bos  # as llama-perplexity / llama-imatrix do
    return out


def calibration_tokens(
    model: ResolvedModel,
    data: str = DEFAULT_DATA,
    n_seq: int = DEFAULT_N_SEQ,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> np.ndarray:
    """Token windows (n_seq, seq_len) int64 of the calibration text, tokenized like llama.cpp.

    Raises:
        ConfigError: unknown data, too little text, or an HF directory without a tokenizer.
    """
    text, _ = load_text(data)
    # Enough text for the windows (about 4 characters per token), doubled until it suffices.
    need = n_seq * seq_len
    chars = need * 6
    while True:
        piece = text[:chars]
        if model.kind == "gguf":
            ids, bos = _llama_tokenize(Path(model.path), piece)
        else:
            ids, bos = _hf_tokenize(Path(model.path), piece)
        if len(ids) >= need or chars >= len(text):
            return _windows(ids, n_seq, seq_len, bos)
        chars *= 2


def _llama_tokenize(path: Path, text: str) -> tuple[list[int], int | None]:
    import llama_cpp

    with _quiet_fd2():
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return list(ids), (int(llama_cpp.llama_vocab_bos(vocab)) if add_bos else None)
    finally:
        llm.close()


def _hf_tokenize(path: Path, text: str) -> tuple[list[int], int | None]:
    if not any(
        (path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        raise ConfigError(f"{path} has no tokenizer files; pass token ids explicitly (tokens=...)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    ids = tok(text, add_special_tokens=True)["input_ids"]
    bos = (
        tok.bos_token_id
        if ids and tok.bos_token_id is not None and ids[0] == tok.bos_token_id
        else None
    )
    return list(ids), bos


# --------------------------------------------------------------------------- model loading


def load_torch_model(model: ResolvedModel) -> Any:
    """A float32 transformers causal LM in eval mode, from a GGUF file or an HF directory."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as err:
        raise DependencyError(
            "transformers is not installed; run: pip install 'ramp-edge[torch]'"
        ) from err
    path = Path(model.path)
    try:
        if model.kind == "gguf":
            cfg = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
            # Some converters write pad_token_id = -1 (0xFFFFFFFF), which nn.Embedding rejects.
            pad = getattr(cfg, "pad_token_id", None)
            if pad is not None and not 0 <= pad < cfg.vocab_size:
                cfg.pad_token_id = None
            lm = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, config=cfg, dtype=torch.float32
            )
        else:
            lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise ArtifactError(f"transformers could not load {path}: {err}") from None
    lm.eval()
    return lm


def gguf_arch_of(lm: Any) -> str:
    model_type = str(lm.config.model_type)
    if model_type not in HF_TO_GGUF_ARCH:
        raise ConfigError(
            f"model_type {model_type!r} is not supported; "
            f"known: {', '.join(sorted(HF_TO_GGUF_ARCH))}"
        )
    return HF_TO_GGUF_ARCH[model_type]


def gguf_names(lm: Any) -> dict[str, str]:
    """HF parameter name -> GGUF tensor name for every parameter gguf-py can map."""
    arch = gguf_arch_of(lm)
    name_map = tensor_name_map(arch, int(lm.config.num_hidden_layers))
    out = {}
    for hf_name, _ in lm.named_parameters(remove_duplicate=False):
        gguf_name = hf_to_gguf_name(hf_name, name_map)
        if gguf_name is not None:
            out[hf_name] = gguf_name
    return out


def apply_gguf_tensors(lm: Any, tensors: Mapping[str, np.ndarray], info: ModelInfo) -> None:
    """Overwrite parameters of `lm` with GGUF-named, GGUF-layout float32 arrays (e.g. folded)."""
    arch = gguf_arch_of(lm)
    params = dict(lm.named_parameters(remove_duplicate=False))
    by_gguf: dict[str, list[str]] = {}
    for hf_name, gguf_name in gguf_names(lm).items():
        by_gguf.setdefault(gguf_name, []).append(hf_name)
    with torch.no_grad():
        for name, values in tensors.items():
            if name not in by_gguf:
                raise ConfigError(f"tensor {name} has no parameter in the transformers model")
            hf_values = torch.from_numpy(to_hf_layout(name, np.asarray(values), arch, info))
            for hf_name in by_gguf[name]:
                param = params[hf_name]
                if tuple(param.shape) != tuple(hf_values.shape):
                    raise ConfigError(
                        f"{name}: shape {tuple(hf_values.shape)} != {tuple(param.shape)}"
                    )
                param.copy_(hf_values)


def logits(lm: Any, tokens: np.ndarray) -> np.ndarray:
    """Full float32 logits (batch, seq, vocab) for int token ids (batch, seq)."""
    with torch.inference_mode():
        out = lm(input_ids=torch.as_tensor(np.asarray(tokens), dtype=torch.long), use_cache=False)
    return out.logits.float().numpy()


# --------------------------------------------------------------------------- collection


class _Accumulator:
    __slots__ = ("count", "gram", "max_abs", "rows", "sum2", "sum4", "sum_abs")

    def __init__(self, n_in: int, gram: bool = False):
        self.max_abs = torch.zeros(n_in, dtype=torch.float64)
        self.sum_abs = torch.zeros(n_in, dtype=torch.float64)
        self.sum2 = torch.zeros(n_in, dtype=torch.float64)
        self.sum4 = torch.zeros(n_in, dtype=torch.float64)
        self.count = 0
        self.rows: list[np.ndarray] = []
        self.gram = torch.zeros(n_in, n_in, dtype=torch.float64) if gram else None

    def add(self, x: torch.Tensor, positions: torch.Tensor) -> None:
        xd = x.reshape(-1, x.shape[-1]).to(torch.float64)
        a = xd.abs()
        self.max_abs = torch.maximum(self.max_abs, a.amax(dim=0))
        self.sum_abs += a.sum(dim=0)
        sq = xd * xd
        self.sum2 += sq.sum(dim=0)
        self.sum4 += (sq * sq).sum(dim=0)
        if self.gram is not None:
            self.gram += xd.T @ xd
        self.count += xd.shape[0]
        self.rows.append(x.reshape(-1, x.shape[-1])[positions].float().numpy().copy())

    def result(self) -> ChannelStats:
        return ChannelStats(
            max_abs=self.max_abs.numpy(),
            sum_abs=self.sum_abs.numpy(),
            sum2=self.sum2.numpy(),
            sum4=self.sum4.numpy(),
            count=self.count,
            sample=np.concatenate(self.rows, axis=0).astype(np.float32),
            gram=None if self.gram is None else self.gram.numpy().astype(np.float32),
        )


def collect_from_model(
    lm: Any,
    tokens: np.ndarray,
    n_sample: int = DEFAULT_N_SAMPLE,
    progress: ProgressFn | None = None,
    gram: bool = False,
) -> tuple[dict[str, ChannelStats], dict[str, str]]:
    """Run `tokens` (n_seq, seq_len) through `lm` one window at a time; record linear inputs.

    Returns:
        (inputs keyed by the first GGUF weight reading each input, GGUF weight -> that key).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 2 or tokens.size == 0:
        raise ConfigError(
            f"tokens must be a non-empty (n_seq, seq_len) array, got shape {tokens.shape}"
        )
    n_seq, seq_len = tokens.shape
    names = gguf_names(lm)
    # Rows at a fixed stride, centred in each stretch, so position 0 (BOS) is not over-represented.
    recorder = _Recorder(_positions(n_seq, seq_len, n_sample), gram)
    handles = recorder.install(lm, names)
    try:
        with torch.inference_mode():
            for i in range(n_seq):
                if progress:
                    progress(i, n_seq, f"calibration window {i + 1}/{n_seq}")
                recorder.new_call()
                lm(input_ids=torch.as_tensor(tokens[i : i + 1]), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if progress:
        progress(n_seq, n_seq, "calibration done")
    return recorder.result()


class _Recorder:
    """Forward pre-hooks on every GGUF-named Linear: statistics of the inputs they read."""

    def __init__(self, positions: torch.Tensor, gram: bool = False):
        self.positions = positions
        self.gram = gram
        self.acc: dict[str, _Accumulator] = {}
        self.weight_input: dict[str, str] = {}
        self.last: dict[str, Any] = {"x": None, "key": None}
        self.hooks: dict[int, Callable[..., None]] = {}  # id(module) -> its hook

    def new_call(self) -> None:
        self.last["x"] = self.last["key"] = None

    def install(self, lm: Any, names: Mapping[str, str]) -> list[Any]:
        handles = []
        for module_name, module in lm.named_modules():
            if isinstance(module, torch.nn.Linear):
                weight = names.get(f"{module_name}.weight")
                if weight is None:
                    logger.debug("linear %s has no GGUF name; not recorded", module_name)
                    continue
                hook = self._make_hook(weight)
                self.hooks[id(module)] = hook
                handles.append(module.register_forward_pre_hook(hook))
        if not handles:
            raise ConfigError("no linear layer of the model maps to a GGUF tensor name")
        return handles

    def _make_hook(self, weight: str) -> Callable[..., None]:
        acc, weight_input, last, positions = self.acc, self.weight_input, self.last, self.positions

        def hook(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0]
            # q/k/v (and gate/up) are called back to back on the same tensor object.
            if x is last["x"]:
                weight_input.setdefault(weight, last["key"])
                return
            last["x"], last["key"] = x, weight
            weight_input.setdefault(weight, weight)
            if weight_input[weight] != weight:
                raise ArtifactError(f"{weight}: input sharing changed between windows")
            if weight not in acc:
                acc[weight] = _Accumulator(int(x.shape[-1]), self.gram)
            acc[weight].add(x.detach(), positions)

        return hook

    def result(self) -> tuple[dict[str, ChannelStats], dict[str, str]]:
        return {k: a.result() for k, a in self.acc.items()}, self.weight_input


# transformers model types run block by block by `collect_streaming` (embed -> layers with one
# causal mask and one rope table -> norm -> lm_head), each checked bit-identical to the whole
# forward in tests/features/test_stats_streaming.py. Others (Gemma-3's sliding/global layers,
# Qwen's per-layer mask types) load whole (`collect_from_model`) until they are checked too.
STREAMED_TYPES = frozenset({"llama"})


def _positions(n_seq: int, seq_len: int, n_sample: int) -> torch.Tensor:
    per_seq = max(1, min(seq_len, n_sample // n_seq))
    return torch.as_tensor(((np.arange(per_seq) + 0.5) * seq_len / per_seq).astype(np.int64))


def _skeleton(model: ResolvedModel) -> Any:
    """The transformers model with every weight on the meta device (no memory), sdpa attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(model.path)
    if model.kind == "gguf":
        cfg = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        pad = getattr(cfg, "pad_token_id", None)
        if pad is not None and not 0 <= pad < cfg.vocab_size:
            cfg.pad_token_id = None
    else:
        cfg = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa")
    lm.eval()
    # rotary tables are computed in __init__: rebuild them for real on the CPU
    lm.model.rotary_emb = type(lm.model.rotary_emb)(config=lm.config)
    return lm


def collect_streaming(
    model: ResolvedModel,
    tokens: np.ndarray,
    n_sample: int = DEFAULT_N_SAMPLE,
    progress: ProgressFn | None = None,
    gram: bool = False,
) -> tuple[dict[str, ChannelStats], dict[str, str]]:
    """`collect_from_model`'s statistics, computed one decoder block at a time.

    Only one block's float32 weights exist at a time (read from the memory-mapped GGUF, or the
    safetensors, and dropped after the block), plus the hidden states of all windows
    (n_seq x seq_len x n_embd float32): peak memory follows a block, not the model. Every
    window goes through block i before block i+1; per window the arithmetic is the full
    forward's (same modules, same causal mask).
    """
    from transformers.masking_utils import create_causal_mask

    from ramp_edge.source import open_source

    tokens = np.asarray(tokens, dtype=np.int64)
    n_seq, seq_len = tokens.shape
    weights: Any = open_source(model)
    lm = _skeleton(model)
    arch = gguf_arch_of(lm)
    info = weights.info
    names = gguf_names(lm)
    by_module: dict[str, dict[str, str]] = {}  # module path -> {param name: gguf name}
    for hf_name, gguf_name in names.items():
        module_path, _, param = hf_name.rpartition(".")
        by_module.setdefault(module_path, {})[param] = gguf_name
    release = getattr(weights, "release", None)

    def materialize(root: str, module: Any) -> None:
        for sub_name, sub in module.named_modules():
            path = f"{root}.{sub_name}" if sub_name else root
            for param, gguf_name in by_module.get(path, {}).items():
                values = to_hf_layout(gguf_name, weights.tensor(gguf_name), arch, info)
                if release is not None:
                    release(gguf_name)
                sub._parameters[param] = torch.nn.Parameter(
                    torch.from_numpy(values).reshape(sub._parameters[param].shape),
                    requires_grad=False,
                )

    recorder = _Recorder(_positions(n_seq, seq_len, n_sample), gram)
    handles = recorder.install(lm, names)
    layers = lm.model.layers
    total = len(layers) + 2
    if progress:
        progress(0, n_seq, "calibration block 0")
    try:
        with torch.inference_mode():
            materialize("model.embed_tokens", lm.model.embed_tokens)
            hidden = [
                lm.model.embed_tokens(torch.as_tensor(tokens[i : i + 1])) for i in range(n_seq)
            ]
            lm.model.embed_tokens.to("meta")
            position_ids = torch.arange(seq_len)[None, :]
            rope = lm.model.rotary_emb(hidden[0], position_ids=position_ids)
            mask = create_causal_mask(
                config=lm.config,
                inputs_embeds=hidden[0],
                attention_mask=None,
                cache=None,
                position_ids=position_ids,
            )
            for li, layer in enumerate(layers):
                if progress:  # in windows, as the whole-model path reports
                    progress(n_seq * (li + 1) / total, n_seq, f"calibration block {li + 1}")
                materialize(f"model.layers.{li}", layer)
                for i in range(n_seq):
                    recorder.new_call()
                    out = layer(
                        hidden[i],
                        attention_mask=mask,
                        position_embeddings=rope,
                        position_ids=position_ids,
                        use_cache=False,
                    )
                    hidden[i] = out[0] if isinstance(out, tuple) else out
                layer.to("meta")  # drop this block's weights
            materialize("model.norm", lm.model.norm)
            head_hook = recorder.hooks.get(id(lm.lm_head))
            for i in range(n_seq):
                recorder.new_call()
                if head_hook is not None:  # the output matmul itself is not needed
                    head_hook(lm.lm_head, (lm.model.norm(hidden[i]),))
    finally:
        for h in handles:
            h.remove()
    if progress:
        progress(n_seq, n_seq, "calibration done")
    return recorder.result()


def _model_type(model: ResolvedModel) -> str:
    """transformers' model_type of a GGUF file or HF directory ("" when unknown)."""
    import json

    path = Path(model.path)
    try:
        if model.kind == "gguf":
            from ramp_edge.source.gguf import GGUFSource

            arch = GGUFSource(model).arch
            return {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}.get(arch, arch)
        return str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, ArtifactError):
        return ""


def _model_digest(model: ResolvedModel) -> str:
    path = Path(model.path)
    if model.kind == "gguf":
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted([path / "config.json", *path.glob("*.safetensors")]):
        digest.update(f.name.encode())
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def stats_key(model: ResolvedModel, tokens: np.ndarray, n_sample: int, gram: bool = False) -> str:
    digest = hashlib.sha256()
    digest.update(f"ramp-edge-stats-v{STATS_VERSION};n_sample={n_sample};".encode())
    if gram:
        digest.update(b"gram;")
    digest.update(_model_digest(model).encode())
    digest.update(str(tokens.shape).encode())
    digest.update(np.ascontiguousarray(tokens, dtype=np.int64).tobytes())
    return digest.hexdigest()


def cache_path(model: ResolvedModel, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model.model_id)[:64]
    return paths.cache_dir("stats") / f"{safe}-{key[:24]}.npz"


def collect_stats(
    model: ResolvedModel,
    data: str = DEFAULT_DATA,
    tokens: np.ndarray | None = None,
    n_seq: int = DEFAULT_N_SEQ,
    seq_len: int = DEFAULT_SEQ_LEN,
    n_sample: int = DEFAULT_N_SAMPLE,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    stream: bool = True,
    gram: bool = False,
) -> CalibrationStats:
    """Activation statistics of `model` on calibration text, from the cache when possible.

    Args:
        model: a resolved GGUF file or HF directory.
        data: shipped dataset name or a text file; ignored when `tokens` is given.
        tokens: explicit token windows (n_seq, seq_len); needed for HF dirs without a tokenizer.
        n_seq, seq_len: number and length of windows cut from `data`.
        n_sample: token rows kept per linear input for Scale Folding's error measurement.
        use_cache: read and write `cache_dir("stats")`.
        progress: callback(done, total, description).
        stream: run llama-family models block by block (`collect_streaming`; memory of one
            block, not the model); other architectures load whole.
        gram: also keep each input's full sum of x x^T (n_in^2 floats per input), which
            error-compensated quantization needs (ramp_edge.quant.compensate).

    Returns:
        CalibrationStats keyed by GGUF weight names.
    """
    if tokens is None:
        tokens = calibration_tokens(model, data, n_seq, seq_len)
        label = data
    else:
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        label = "tokens:" + hashlib.sha256(tokens.tobytes()).hexdigest()[:12]
    key = stats_key(model, tokens, n_sample, gram)
    path = cache_path(model, key)
    if use_cache and path.exists():
        try:
            stats = CalibrationStats.load(path)
            if stats.key == key:
                logger.info("calibration statistics from cache %s", path)
                return stats
        except ArtifactError as err:
            logger.warning("ignoring unreadable statistics cache %s (%s)", path, err)
    logger.info("collecting calibration statistics: %d windows of %d tokens", *tokens.shape)
    if stream and _model_type(model) in STREAMED_TYPES:
        inputs, weight_input = collect_streaming(model, tokens, n_sample, progress, gram)
    else:
        lm = load_torch_model(model)
        inputs, weight_input = collect_from_model(lm, tokens, n_sample, progress, gram)
        del lm
    stats = CalibrationStats(
        model_id=model.model_id,
        key=key,
        n_tokens=int(tokens.size),
        n_seq=int(tokens.shape[0]),
        seq_len=int(tokens.shape[1]),
        data=label,
        inputs=inputs,
        weight_input=weight_input,
    )
    if use_cache:
        stats.save(path)
    return stats
