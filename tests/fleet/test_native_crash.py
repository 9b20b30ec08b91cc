"""A native crash (SIGSEGV) in one host's bench: a recorded failure with its signal, while the
other hosts of the fleet finish. The fault is injected with the agent's test-only
RAMP_AGENT_TEST_FAULT (honoured only with RAMP_AGENT_TESTING=1), passed in the crashing host's
command environment."""

from __future__ import annotations

import pytest
from fleetlib import connect

from ramp_edge.agent_client import BenchOptions
from ramp_edge.fleet.hosts import Host
from ramp_edge.pipeline import bench_fleet
from ramp_edge.store import Store

pytestmark = [pytest.mark.ssh, pytest.mark.llama, pytest.mark.slow]

TINY = BenchOptions(threads=1, n_prompt=16, n_gen=4, reps=1)


def _faulty(conn, spec: str):
    run = conn.run

    def run_with_fault(argv, *args, **kwargs):
        kwargs["env"] = {
            **(kwargs.get("env") or {}),
            "RAMP_AGENT_TEST_FAULT": spec,
            "RAMP_AGENT_TESTING": "1",
        }
        return run(argv, *args, **kwargs)

    conn.run = run_with_fault
    return conn


@pytest.mark.parametrize(
    ("spec", "canary_fallback"), [("bench=SEGV", False), ("canary:extra=SEGV", True)]
)
def test_segv_in_one_of_three_hosts(fleet, stories_gguf, home, spec, canary_fallback):
    hosts = [Host(name=d.name, address=d.host, port=d.port) for d in fleet]
    by_name = {d.name: d for d in fleet}

    def connector(host):
        conn = connect(by_name[host.name])
        return _faulty(conn, spec) if host.name == "orin" else conn

    with Store() as store:
        result = bench_fleet(
            hosts,
            stories_gguf,
            bench_opts=TINY,
            tasks="arc_easy",
            limit=2,
            forks=3,
            store=store,
            connect=connector,
        )
        rows = store.results()
    reports = {o.host: o.value for o in result.outcomes}
    assert set(reports) == {"pi4", "orin", "laptop"}
    for name in ("pi4", "laptop"):
        assert reports[name].status == "ok" and reports[name].bench.tg_tps > 0
        assert reports[name].bench.n_gpu_layers == 0  # CPU-only build: auto offloads nothing
        assert reports[name].evals[0].n_gpu_layers == 0
    crashed = reports["orin"]
    if canary_fallback:
        # the canary crashed with extra buffer types, so bench and eval ran without them
        canary = crashed.environment["canary"]
        assert canary["ok"] and canary["fallback"] == "no_extra_bufts"
        assert canary["tries"][0]["signal"] == 11
        assert crashed.status == "ok" and crashed.bench.tg_tps > 0
    else:
        assert crashed.status == "error"
        assert crashed.bench.signal == 11 and "SIGSEGV" in crashed.bench.error
        assert crashed.evals[0].status == "ok"  # only bench was made to crash
    assert sorted(r.kind for r in rows) == ["bench"] * 3 + ["eval"] * 3
