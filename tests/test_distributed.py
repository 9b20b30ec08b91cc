"""Ray (ramp_edge.distributed): the same table and recipe as the local run, retries, the hint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ramp_edge.allocate.sensitivity import measure_sensitivity
from ramp_edge.distributed import ray_measurer
from ramp_edge.source import open_source

TYPES = ("Q8_0", "Q6_K", "Q4_K", "Q4_0", "Q3_K", "Q2_K")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 workers, started by the test (the CLI joins it with --ray-address)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _source(path: Path):
    from ramp_edge.models import resolve

    return open_source(resolve(str(path)))


@pytest.mark.slow
def test_ray_table_equals_local(ray_local, tiny_kquant_gguf):
    source = _source(tiny_kquant_gguf)
    local = measure_sensitivity(source, TYPES, use_cache=False)
    seen: list[tuple[float, float]] = []
    remote = measure_sensitivity(
        source,
        TYPES,
        use_cache=False,
        measure_many=ray_measurer("auto"),
        progress=lambda done, total, _msg: seen.append((done, total)),
    )
    assert remote.to_dict() == local.to_dict()
    # one bar: monotone done counts up to the total
    assert seen[-1][0] == seen[-1][1] == len(local.tensors)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.slow
def test_ray_recipe_equals_local(ray_local, tiny_kquant_gguf, invoke, tmp_path, monkeypatch):
    args = ["allocate", tiny_kquant_gguf, "--budget", "4.5bpw", "--types", ",".join(TYPES)]
    args += ["--no-calibrate", "--json"]
    monkeypatch.setenv("RAMP_EDGE_HOME", str(tmp_path / "local"))
    local = invoke([*args, "--out", tmp_path / "local.json"])
    assert local.exit_code == 0, local.output
    monkeypatch.setenv("RAMP_EDGE_HOME", str(tmp_path / "ray"))  # no shared table cache
    remote = invoke([*args, "--out", tmp_path / "ray.json", "--ray-address", "auto"])
    assert remote.exit_code == 0, remote.output
    docs = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("local", "ray")]
    for doc in docs:
        doc.pop("provenance")  # creation time
    assert docs[0] == docs[1]
    assert json.loads(remote.stdout)["recipe"] == json.loads(local.stdout)["recipe"]


@pytest.mark.slow
def test_lost_worker_is_retried(ray_local, tiny_kquant_gguf, tmp_path):
    """A worker killed mid-task (os._exit) is replaced and only its task reruns."""
    from ramp_edge import distributed
    from ramp_edge.allocate.sensitivity import SensitivityTable

    source = _source(tiny_kquant_gguf)
    local = measure_sensitivity(source, TYPES, use_cache=False)
    crashed = tmp_path / "crashed"
    runs = tmp_path / "runs"
    runs.mkdir()

    def flaky(raw, stored, spec, types, imatrix, threads):
        import os
        from pathlib import Path as P

        from ramp_edge.distributed import _measure_task

        P(runs, spec[0]).open("a").write("x")
        if spec[0] == "blk.1.ffn_up.weight" and not P(crashed).exists():
            P(crashed).touch()
            os._exit(1)  # the worker process dies, as on OOM or a lost node
        return _measure_task(raw, stored, spec, types, imatrix, threads)

    specs = [t for t in source.specs if t.name in {r.name for r in local.tensors}]
    rows = distributed.measure_on_ray("auto", source, specs, TYPES, task=flaky)
    assert crashed.exists()
    table = SensitivityTable(local.model_id, tuple(rows), local.fixed_bytes)
    assert table.to_dict() == local.to_dict()
    counts = {p.name: len(p.read_text()) for p in runs.iterdir()}
    assert counts.pop("blk.1.ffn_up.weight") == 2  # rerun once
    assert set(counts.values()) == {1}  # finished work never recomputed


def test_without_ray_the_flag_names_the_extra(invoke, tiny_kquant_gguf, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = invoke(["allocate", tiny_kquant_gguf, "--budget", "4.5bpw", "--ray-address", "auto"])
    assert result.exit_code == 6, result.output
    assert "pip install 'ramp-edge[ray]'" in result.output
