"""Our bytes against llama.cpp's own quantizer (`llama_model_quantize`), tensor by tensor."""

import numpy as np
import pytest
from gguf import GGUFReader

from ramp_edge.errors import ConfigError
from ramp_edge.models import ResolvedModel
from ramp_edge.quant.catalogue import CATALOGUE, get
from ramp_edge.quant.export import export_model
from ramp_edge.quant.llamacpp import llama_quantize
from ramp_edge.quant.presets import FTYPE_NAMES
from ramp_edge.quant.quantizer import dequantize, quantize, validate
from ramp_edge.recipe import uniform
from ramp_edge.source import open_source

BYTE_EXACT_TYPES = [
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "IQ4_NL",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_XS",
    "IQ3_S",
    "MXFP4",
]


def _tensor_bytes(path):
    return {
        t.name: (t.tensor_type.name, bytes(np.ascontiguousarray(t.data).view(np.uint8)))
        for t in GGUFReader(path).tensors
    }


@pytest.mark.llama
@pytest.mark.parametrize("qtype", BYTE_EXACT_TYPES)
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
def test_bytes_equal_llama_model_quantize(tmp_path, tiny_kquant_gguf, qtype, with_imatrix):
    source = open_source(ResolvedModel("tiny", "gguf", tiny_kquant_gguf))
    imatrix = None
    if with_imatrix:
        rng = np.random.default_rng(1)
        imatrix = {
            s.name: rng.uniform(0.1, 2.0, s.row_length).astype(np.float32)
            for s in source.specs
            if len(s.shape) == 2 and s.name != "token_embd.weight"
        }
    ref = tmp_path / "ref.gguf"
    preset = FTYPE_NAMES.get(get(qtype).ftype)
    if preset is None:  # MXFP4 has only an MoE preset: force the type with a --tensor-type override
        llama_quantize(
            tiny_kquant_gguf, ref, "Q8_0", imatrix=imatrix, pure=True, overrides={"weight": qtype}
        )
    else:
        llama_quantize(tiny_kquant_gguf, ref, preset, imatrix=imatrix, pure=True)
    ours = tmp_path / "ours.gguf"
    export_model(source, uniform(source, qtype), ours, imatrix=imatrix)
    theirs, mine = _tensor_bytes(ref), _tensor_bytes(ours)
    assert set(theirs) == set(mine)
    for name, (ttype, tbytes) in theirs.items():
        assert mine[name][0] == ttype, name
        assert mine[name][1] == tbytes, f"{name} ({ttype}) differs from llama.cpp"


@pytest.mark.parametrize(
    "qt", [t for t in CATALOGUE.values() if t.block_size > 1], ids=lambda t: t.name
)
def test_round_trip_through_gguf_dequantize(qt):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 512)) * 0.02).astype(np.float32)
    imatrix = np.ones(512, dtype=np.float32) if qt.needs_imatrix else None
    q = quantize(w, qt, imatrix)
    assert q.shape == (8, qt.row_bytes(512))
    assert validate(q, qt)
    back = dequantize(q, qt, 512)
    rel = np.linalg.norm(back - w) / np.linalg.norm(w)
    limit = {8: 0.01, 6: 0.05}.get(int(qt.bits_per_weight), 0.9)
    assert rel < limit, f"{qt.name}: relative error {rel:.3f}"


def test_block_size_is_checked_before_c_sees_it():
    with pytest.raises(ConfigError, match="divisible by 256"):
        quantize(np.zeros((2, 576), np.float32), "Q4_K")


def test_types_that_need_an_imatrix_raise_instead_of_aborting():
    with pytest.raises(ConfigError, match="importance matrix"):
        quantize(np.zeros((2, 256), np.float32), "IQ2_XXS")


def test_bad_imatrix_rejected():
    with pytest.raises(ConfigError, match="non-finite"):
        quantize(np.zeros((2, 32), np.float32), "Q4_0", np.full(32, np.nan, np.float32))
    with pytest.raises(ConfigError, match="shape"):
        quantize(np.zeros((2, 32), np.float32), "Q4_0", np.ones(16, np.float32))
