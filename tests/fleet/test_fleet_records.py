"""BenchResult / EvalResult records: validation, agent parsing, dict round trips."""

from __future__ import annotations

import pytest

from ramp_edge.agent_client import AgentError, BenchOptions, parse_agent_output
from ramp_edge.results import BenchResult, EvalResult

AGENT_BENCH = {
    "threads": 2,
    "reps": 3,
    "load_time_s": 0.01,
    "peak_rss_bytes": 52_000_000,
    "tests": {
        "pp512": {"n_tokens": 512, "avg_ts": 100.0, "stddev_ts": 2.0, "samples_ts": [98, 100, 102]},
        "tg128": {
            "n_tokens": 128,
            "avg_ts": 20.0,
            "stddev_ts": 0.5,
            "samples_ts": [19.5, 20, 20.5],
        },
    },
}
IDS = {"host": "pi", "device": "pi5", "artifact": "m.gguf", "artifact_sha256": "ab" * 32}


def test_bench_from_agent_and_round_trip():
    bench = BenchResult.from_agent(
        AGENT_BENCH, artifact_bytes=10, llama_cpp_version="0.3.36", **IDS
    )
    assert (bench.n_prompt, bench.n_gen, bench.pp_tps, bench.tg_tps_std) == (512, 128, 100.0, 0.5)
    assert bench.tg_samples_tps == (19.5, 20.0, 20.5) and bench.ok
    assert BenchResult.from_dict(bench.to_dict()) == bench


def test_failed_records_need_a_message():
    oom = BenchResult.failure(status="oom", error="killed by the OOM killer", **IDS)
    assert not oom.ok and oom.tg_tps is None
    with pytest.raises(ValueError):
        BenchResult.failure(status="oom", error="", **IDS)
    with pytest.raises(ValueError, match="status"):
        BenchResult.failure(status="weird", error="x", **IDS)
    with pytest.raises(ValueError):
        EvalResult(task="piqa", task_version=1, n=0, acc=0.5, **IDS)
    ev = EvalResult(task="piqa", task_version=1, n=5, acc=0.6, **IDS)
    assert EvalResult.from_dict(ev.to_dict()) == ev


def test_bench_options_validate():
    assert BenchOptions(threads=4, reps=2).agent_args()[:6] == [
        "--n-prompt",
        "512",
        "--n-gen",
        "128",
        "--reps",
        "2",
    ]
    with pytest.raises(ValueError):
        BenchOptions(n_prompt=0, n_gen=0)


def test_parse_agent_output_ignores_noise_and_checks_protocol():
    out = (
        'noise\n{"ramp_agent":1,"type":"heartbeat"}\n'
        '{"ramp_agent":1,"type":"result","ok":true,"data":{}}\n'
    )
    assert parse_agent_output(out)["type"] == "result"
    assert parse_agent_output("nothing here") is None
    with pytest.raises(Exception, match="protocol 2"):
        parse_agent_output('{"ramp_agent":2,"type":"result"}')
    err = AgentError("x", "killed", 137, {})
    assert err.oom and err.exit_code == 7
