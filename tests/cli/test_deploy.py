"""`ramp-edge deploy`: identities are resolved once at the CLI edge (regression tests, issue 12)."""

from __future__ import annotations

import json

import pytest

from ramp_edge import pipeline
from ramp_edge.results import BenchResult


class _Stop(Exception):
    """Raised by a stub after the step under test, so no model is downloaded or run."""


def _fake_run_deploy(seen):
    """Stands in for run_deploy: records the request and stores one bench row the real way."""

    def run(request, progress=None, status=None):
        from ramp_edge.store import Store

        seen.append(request)
        bench = BenchResult(
            host=request.host.name if request.host else "localhost",
            device=request.device,
            artifact="a.gguf",
            artifact_sha256="ab" * 32,
            artifact_bytes=1000,
            threads=4,
            n_prompt=512,
            n_gen=128,
            reps=3,
            tg_tps=12.0,
        )
        report = pipeline.DeployReport(
            host=bench.host,
            device=request.device,
            artifact="a.gguf",
            artifact_sha256="ab" * 32,
            push=None,
            probe={},
            bench=bench,
        )
        with Store() as store:
            pipeline.store_report(store, report)
        raise _Stop

    return run


def test_help(invoke):
    result = invoke(["deploy", "--help"])
    assert result.exit_code == 0 and "--device" in result.output


@pytest.mark.parametrize("query", ["jetson-orin", "jetson-agx-orin-64gb", "JETSON-ORIN"])
def test_results_of_an_alias_deploy_are_found_by_alias_or_id(invoke, monkeypatch, query):
    seen: list = []
    monkeypatch.setattr(pipeline, "run_deploy", _fake_run_deploy(seen))
    result = invoke(["deploy", "--device", "jetson-orin", "--host", "nv@orin.local:2222"])
    assert isinstance(result.exception, _Stop)
    request = seen[0]
    assert request.device == "jetson-agx-orin-64gb"  # canonical id, not the alias
    host = request.host
    assert (host.address, host.user, host.port) == ("orin.local", "nv", 2222)
    found = invoke(["results", "--device", query, "--json"])
    assert found.exit_code == 0, found.output
    rows = json.loads(found.stdout)
    assert [r["device"] for r in rows] == ["jetson-agx-orin-64gb"]


def test_deploy_local_alias_needs_no_host(invoke, monkeypatch):
    """`--device local` (alias of localhost) got "needs --host" before issue 12."""
    from ramp_edge.device import profiling

    def stop(profile, *args, **kwargs):
        assert profile.id == "localhost"
        raise _Stop

    monkeypatch.setattr(profiling, "ensure_measured", stop)
    result = invoke(["deploy", "--device", "local"])
    assert isinstance(result.exception, _Stop), result.output


def test_remote_device_without_host_is_a_config_error(invoke):
    result = invoke(["deploy", "--device", "pi5"])
    assert result.exit_code == 3
    assert "'raspberry-pi-5-8gb' needs --host" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--device", "jetson-nan"], 3, "unknown device 'jetson-nan'"),
        (["--device", "pi5", "--host", "pi@pi5.local:ssh"], 3, "port must be an integer"),
        (["--budget", "lots"], 3, "bad budget 'lots'"),
    ],
)
def test_bad_identities_fail_before_any_work(invoke, args, code, message):
    result = invoke(["deploy", *args])
    assert result.exit_code == code
    assert message in result.output


@pytest.mark.parametrize(
    ("flags", "expected"), [([], None), (["--gptq"], True), (["--no-gptq"], False)]
)
def test_gptq_flag_reaches_the_pipeline(invoke, monkeypatch, flags, expected):
    seen: list = []
    monkeypatch.setattr(pipeline, "run_deploy", _fake_run_deploy(seen))
    result = invoke(["deploy", "--device", "localhost", *flags])
    assert isinstance(result.exception, _Stop), result.output
    assert seen[0].gptq is expected
