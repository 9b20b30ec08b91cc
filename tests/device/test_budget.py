"""Budget arithmetic against hand-computed cases; the latency model and its fit."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ramp_edge.device import budget as b
from ramp_edge.device.profiles import DeviceProfile, MeasuredProfile, TypeSpeed, load_profile
from ramp_edge.errors import BudgetError, ConfigError
from ramp_edge.models import ModelInfo
from ramp_edge.source import TensorSpec

MIB = 1 << 20
GIB = 1 << 30

# SmolLM2-135M's hyper-parameters (llama, tied embeddings)
SMOL = ModelInfo(
    arch="llama",
    n_layer=30,
    n_embd=576,
    n_ff=1536,
    n_head=9,
    n_head_kv=3,
    head_dim=64,
    n_ctx_train=8192,
    n_vocab=49152,
    n_params=134_515_008,
)


def device(**kw) -> DeviceProfile:
    base = dict(
        id="testdev",
        name="Test",
        arch="aarch64",
        cpu="cpu",
        cores=4,
        threads=4,
        cpu_features=(),
        accelerator="none",
        ram_total_bytes=8 * GIB,
        ram_usable_bytes=1 * GIB,
        bandwidth_effective_bytes_per_s=10e9,
    )
    base.update(kw)
    return DeviceProfile(**base)  # type: ignore[arg-type]


# a toy model: 1e6 quantizable weights in 32-wide rows, 1000 F32 norm values
GEO = b.ModelGeometry(
    n_params_quantizable=1_000_000,
    n_params_read=1_000_000,
    fixed_bytes=4000,
    min_weights_bytes=4000 + 531_250,  # 4.25 bpw (MXFP4)
    max_weights_bytes=4000 + 2_000_000,  # F16
)


def test_compute_buffer_hand_computed():
    # max(logits 512*49152*4, KQ 512*2048*9*4) + mask 512*2048*4 + acts 512*(3*576+1536)*4
    expected = 100_663_296 + 4_194_304 + 6_684_672
    assert b.compute_buffer_bytes(SMOL, 2048) == expected
    # at 8192 the attention scores dominate: 512*8192*9*4
    assert b.compute_buffer_bytes(SMOL, 8192) == 150_994_944 + 16_777_216 + 6_684_672
    # within 6% of llama.cpp's reported 99.38 / 166.38 MiB
    assert b.compute_buffer_bytes(SMOL, 2048) / MIB == pytest.approx(99.38, rel=0.08)
    assert b.compute_buffer_bytes(SMOL, 8192) / MIB == pytest.approx(166.38, rel=0.02)


def test_kv_cache_is_f16_k_and_v():
    assert SMOL.kv_cache_bytes(2048) == 2 * 30 * 2048 * 3 * 64 * 2 == 45 * MIB


def test_memory_limit_hand_computed():
    prof = device(ram_usable_bytes=1 * GIB)
    r = b.compute_budget(prof, SMOL, GEO, n_ctx=2048, min_tps=None, headroom=0.5)
    # 0.5 GiB - KV 47,185,920 - compute 111,542,272 - runtime 134,217,728
    assert (
        r.memory_limit_bytes == 536_870_912 - 47_185_920 - 111_542_272 - 134_217_728 == 243_924_992
    )
    assert (r.kv_cache_bytes, r.compute_buffer_bytes) == (47_185_920, 111_542_272)
    assert r.latency_limit_bytes is None
    assert r.memory_limit_bpw == pytest.approx((243_924_992 - 4000) * 8 / 1e6)


def test_memory_binds_feasible():
    prof = device(ram_usable_bytes=2 * GIB)
    r = b.compute_budget(prof, SMOL, GEO, n_ctx=512, min_tps=None, headroom=0.25)
    kv = SMOL.kv_cache_bytes(512)
    compute = b.compute_buffer_bytes(SMOL, 512)
    limit = int(0.25 * 2 * GIB - kv - compute - b.RUNTIME_OVERHEAD_BYTES)
    assert r.memory_limit_bytes == limit
    # the toy model is far smaller than the limit: nothing binds, budget = F16 size
    assert r.binding == "none" and r.budget_bytes == GEO.max_weights_bytes and r.budget_bpw == 16.0


def test_latency_binds_hand_computed():
    # 10 GB/s and 20000 tok/s -> 500,000 bytes read per token; minus 4000 fixed -> 496,000 bytes
    # for 1e6 weights = 3.968 bpw: below the 4.25 bpw floor, so 15000 tok/s instead:
    # 666,666.67 bytes -> (666,666.67 - 4000) * 8 / 1e6 = 5.3013 bpw
    prof = device(ram_usable_bytes=4 * GIB)
    r = b.compute_budget(prof, SMOL, GEO, n_ctx=512, min_tps=15000, headroom=0.85)
    assert r.binding == "latency"
    assert r.budget_bpw == pytest.approx((1e10 / 15000 - 4000) * 8 / 1e6, abs=1e-4)  # whole bytes
    assert r.budget_bytes == r.latency_limit_bytes == GEO.weights_bytes(r.budget_bpw)
    assert r.predicted_tokens_per_s == pytest.approx(15000, rel=1e-4)
    assert "latency binds" in r.explanation and "memory is looser" in r.explanation
    assert r.to_dict()["latency_budget_ms_per_token"] == pytest.approx(1000 / 15000)


def test_memory_binds_before_latency():
    prof = device(ram_usable_bytes=int(0.6 * GIB))
    r = b.compute_budget(prof, SMOL, GEO, n_ctx=256, min_tps=10, headroom=1.0)
    assert r.binding in ("memory", "none")
    small = dataclasses.replace(GEO, max_weights_bytes=10**12)
    r = b.compute_budget(prof, SMOL, small, n_ctx=256, min_tps=10, headroom=1.0)
    assert r.binding == "memory" and r.budget_bytes == r.memory_limit_bytes
    assert "memory binds" in r.explanation and "latency is looser" in r.explanation


def test_infeasible_memory_suggests_ram_and_ctx():
    prof = device(ram_usable_bytes=256 * MIB)
    with pytest.raises(b.InfeasibleBudget) as err:
        b.compute_budget(prof, SMOL, GEO, n_ctx=8192, min_tps=None, headroom=0.5, model="toy")
    e = err.value
    assert isinstance(e, BudgetError) and e.exit_code == 4 and e.binding == "memory"
    need = (
        GEO.min_weights_bytes
        + SMOL.kv_cache_bytes(8192)
        + b.compute_buffer_bytes(SMOL, 8192)
        + b.RUNTIME_OVERHEAD_BYTES
    ) / 0.5
    assert e.nearest["min_ram_usable_bytes"] == math.ceil(need)
    assert e.nearest["max_ctx"] == 0  # the 128 MiB runtime alone fills 256 MiB x 0.5
    assert "a smaller model" in str(e)
    assert "toy does not fit testdev at ctx 8192" in str(e)


def test_infeasible_memory_nearest_ctx():
    prof = device(ram_usable_bytes=1 * GIB)
    with pytest.raises(b.InfeasibleBudget) as err:
        b.compute_budget(prof, SMOL, GEO, n_ctx=32768, headroom=0.85, min_tps=None)
    ctx = err.value.nearest["max_ctx"]
    assert 256 <= ctx < 32768 and f"--ctx {ctx}" in str(err.value)
    r = b.compute_budget(prof, SMOL, GEO, n_ctx=ctx, headroom=0.85, min_tps=None)
    assert r.memory_limit_bytes >= GEO.min_weights_bytes


def test_infeasible_latency_suggests_max_tps():
    prof = device(ram_usable_bytes=4 * GIB)
    with pytest.raises(b.InfeasibleBudget) as err:
        b.compute_budget(prof, SMOL, GEO, n_ctx=512, min_tps=50000)
    max_tps = 1e10 / GEO.read_bytes(GEO.min_bpw)
    assert err.value.nearest["max_tps"] == pytest.approx(max_tps, abs=0.01)
    assert f"--min-tps {math.floor(max_tps * 10) / 10:g}" in str(err.value)


def test_overhead_reduces_latency_budget():
    prof = device(ram_usable_bytes=4 * GIB, token_overhead_s=0.01)
    r = b.compute_budget(prof, SMOL, GEO, n_ctx=512, min_tps=50)
    # 1/50 s - 10 ms = 10 ms -> 100 MB read per token; far above the F16 size
    assert r.latency_limit_bytes == GEO.weights_bytes(GEO.bpw_for_read(1e10 * 0.01))
    with pytest.raises(b.InfeasibleBudget):
        b.compute_budget(prof, SMOL, GEO, n_ctx=512, min_tps=100)  # 10 ms budget = overhead


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"headroom": 0}, "headroom"),
        ({"headroom": 1.5}, "headroom"),
        ({"n_ctx": 0}, "ctx"),
        ({"min_tps": -1}, "min-tps"),
    ],
)
def test_bad_arguments(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        b.compute_budget(device(), SMOL, GEO, **kw)


# --- geometry -------------------------------------------------------------------------------


def test_geometry_from_specs_tied_and_untied():
    tied = [
        TensorSpec("token_embd.weight", (64, 100), "F32"),
        TensorSpec("blk.0.ffn_down.weight", (256, 64), "F32"),
        TensorSpec("blk.0.attn_norm.weight", (64,), "F32"),
    ]
    g = b.geometry_from_specs(tied)
    assert g.n_params_quantizable == 6400 + 16384 and g.n_params_read == g.n_params_quantizable
    assert g.fixed_bytes == 256 and g.max_weights_bytes == 256 + 2 * 22784
    # smallest non-imatrix types: 64-wide rows -> MXFP4 (17 B / 32); 256-wide -> IQ1_M (56 B / 256)
    assert g.min_weights_bytes == 256 + 100 * 2 * 17 + 64 * 56
    untied = [*tied, TensorSpec("output.weight", (64, 100), "F32")]
    g2 = b.geometry_from_specs(untied)
    assert g2.n_params_read == g2.n_params_quantizable - 6400  # embedding rows are looked up


def test_geometry_from_info_close_to_specs(smollm2):
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    src = open_source(resolve("smollm2-135m"))
    exact = b.geometry_from_specs(src.specs)
    approx = b.geometry_from_info(src.info)
    assert exact.n_params_quantizable == approx.n_params_quantizable == 134_479_872
    assert exact.fixed_bytes == approx.fixed_bytes == 4 * 35_136
    assert exact.max_weights_bytes == approx.max_weights_bytes


# --- latency model --------------------------------------------------------------------------


def test_fit_recovers_per_type_bandwidths():
    true = {"Q4_0": 15e9, "Q8_0": 16e9, "Q4_1": 11e9}
    rows = [
        ({t: n}, bw / n)
        for t, bw, n in [("Q4_0", 15e9, 75e6), ("Q8_0", 16e9, 140e6), ("Q4_1", 11e9, 80e6)]
    ]
    fitted, reference = b.fit_type_bandwidths(rows, b.DEFAULT_SPEED_FACTORS)
    assert fitted == pytest.approx(true) and reference == pytest.approx(15e9)
    # a mixed run predicted from the uniform fit: seconds add per type
    lm = b.LatencyModel(reference, "measured", measured=tuple(fitted.items()))
    mix = {"Q4_0": 40e6, "Q8_0": 30e6}
    assert lm.seconds_per_token(mix) == pytest.approx(40e6 / 15e9 + 30e6 / 16e9)


def test_fit_with_minor_types_and_mixes():
    # runs whose embedding stays Q8_0: the minor type is held at reference x factor
    factors = {"Q4_0": 1.0, "Q8_0": 1.0}
    rows = [({"Q4_0": 60e6, "Q8_0": 30e6}, 1 / (60e6 / 10e9 + 30e6 / 10e9))]
    fitted, reference = b.fit_type_bandwidths(rows, factors)
    assert fitted["Q4_0"] == pytest.approx(10e9) and reference == pytest.approx(10e9)
    with pytest.raises(ConfigError):
        b.fit_type_bandwidths([], factors)


def test_predict_tps_published_with_factors():
    prof = device(bandwidth_effective_bytes_per_s=9.3e9, speed_factors=(("IQ4_XS", 1.16),))
    assert b.predict_tps(prof, 93_000_000) == pytest.approx(100.0)
    # half the bytes Q4_1 (factor 0.76 on CPUs), half IQ4_XS (profile override 1.16)
    expected = 1 / (46.5e6 / (9.3e9 * 0.76) + 46.5e6 / (9.3e9 * 1.16))
    assert b.predict_tps(prof, 93_000_000, {"Q4_1": 1, "IQ4_XS": 1}) == pytest.approx(expected)
    with pytest.raises(ConfigError):
        b.predict_tps(prof, 1000, {"Q4_0": -1})


def test_gpu_profiles_skip_cpu_priors():
    assert b.speed_factors(device(accelerator="cuda")) == {}
    assert b.speed_factors(device())["Q4_1"] == 0.76


def _measured(**kw) -> MeasuredProfile:
    base = dict(
        device="localhost",
        host="box",
        created_utc="2026-01-01T00:00:00Z",
        agent_version="x",
        arch="x86_64",
        cpu="c",
        cores=2,
        logical_cpus=2,
        cpu_features=(),
        ram_total_bytes=8 * GIB,
        ram_available_bytes=6 * GIB,
        bandwidth_copy_bytes_per_s=30e9,
        type_speeds=(),
    )
    base.update(kw)
    return MeasuredProfile(**base)  # type: ignore[arg-type]


def test_latency_model_sources():
    assert b.latency_model(load_profile("pi5")).source == "published"
    local = load_profile("localhost")
    assert b.latency_model(local).source == "placeholder"
    probe = b.latency_model(local.merged(_measured()))
    assert probe.source == "probe"
    assert probe.reference_bandwidth_bytes_per_s == pytest.approx(
        30e9 * b.DEFAULT_DECODE_EFFICIENCY
    )
    speeds = (
        TypeSpeed("Q4_0", "m", 0, (("Q4_0", 75_000_000),), 2, 64, 64, 500.0, 200.0),
        TypeSpeed("Q8_0", "m", 0, (("Q8_0", 140_000_000),), 2, 64, 64, 500.0, 120.0),
    )
    lm = b.latency_model(local.merged(_measured(type_speeds=speeds)))
    assert lm.source == "measured"
    assert lm.bandwidth_bytes_per_s("Q4_0") == pytest.approx(15e9)
    assert lm.bandwidth_bytes_per_s("Q8_0") == pytest.approx(16.8e9)
    assert lm.bandwidth_bytes_per_s("Q4_1") == pytest.approx(15e9 * 0.76)  # unmeasured: prior
    assert set(lm.speed_table()) >= {"Q4_K", "IQ4_NL", "F16"}


def test_budget_for_real_model_on_pi5(smollm2):
    from ramp_edge.models import resolve
    from ramp_edge.source import open_source

    src = open_source(resolve("smollm2-135m"))
    geo = b.geometry_from_specs(src.specs)
    r = b.compute_budget(
        load_profile("pi5"), src.info, geo, n_ctx=2048, min_tps=20, model="smollm2-135m"
    )
    assert r.binding == "none" and r.budget_bytes == geo.max_weights_bytes
    assert r.latency_limit_bytes == geo.weights_bytes(geo.bpw_for_read(9.3e9 / 20))
    r = b.compute_budget(load_profile("pi4-4gb"), src.info, geo, n_ctx=2048, min_tps=30)
    assert r.binding == "latency" and 4.0 < r.budget_bpw < 6.0
