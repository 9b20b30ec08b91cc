"""Fleet benchmarking on simulated devices: real sshd instances on 127.0.0.x, the real agent."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fleetlib import MemoryCap, connect, profile_of, write_inventory

from ramp_edge.agent_client import BenchOptions
from ramp_edge.errors import DependencyError
from ramp_edge.fleet.inventory import load_inventory
from ramp_edge.pipeline import bench_fleet, deploy_to_host
from ramp_edge.store import Store

pytestmark = [pytest.mark.ssh, pytest.mark.llama]

TINY = BenchOptions(threads=1, n_prompt=32, n_gen=8, reps=2)


def _connector(devices):
    by_name = {d.name: d for d in devices}
    return lambda host: connect(by_name[host.name])


@pytest.mark.slow
def test_fleet_bench_on_three_devices_in_parallel(fleet, tmp_path, stories_gguf, home):
    inventory = load_inventory(
        write_inventory(tmp_path / "fleet.yml", fleet, key=fleet[0].key_path)
    )
    in_flight, peak = set(), []
    lock = threading.Lock()

    def on_status(host: str, text: str) -> None:
        with lock:
            if text == "bench":
                in_flight.add(host)
                peak.append(len(in_flight))
            elif text == "done" or text.startswith("failed"):
                in_flight.discard(host)

    with Store() as store:
        result = bench_fleet(
            inventory.hosts,
            stories_gguf,
            bench_opts=TINY,
            tasks="arc_easy",
            limit=2,
            forks=3,
            store=store,
            connect=_connector(fleet),
            on_status=on_status,
        )
        rows = store.results()
    assert result.ok, result.to_dict()
    assert [o.host for o in result.outcomes] == ["pi4", "orin", "laptop"]
    for outcome, device in zip(result.outcomes, fleet, strict=True):
        report = outcome.value
        assert report.status == "ok" and report.device == profile_of(device)
        assert report.bench.tg_tps > 0 and report.bench.pp_tps > 0 and report.bench.reps == 2
        assert report.evals[0].task == "arc_easy" and report.evals[0].n == 2
        assert report.push.sha256 == report.artifact_sha256
        pushed = f"{report.artifact_sha256[:12]}-{stories_gguf.name}"
        assert (device.home / ".ramp-edge" / "artifacts" / pushed).is_file()
    assert max(peak) >= 2, "hosts should overlap"
    assert sorted((r.kind, r.host) for r in rows) == sorted(
        [("bench", d.name) for d in fleet] + [("eval", d.name) for d in fleet]
    )
    assert all(r.device == profile_of(d) for r in rows for d in fleet if d.name == r.host)
    # a second run skips the upload: same sha256 already on every device
    again = bench_fleet(
        inventory.hosts[:1], stories_gguf, bench_opts=TINY, connect=_connector(fleet)
    )
    assert again.outcomes[0].value.push.skipped


@pytest.mark.slow
def test_a_host_dying_mid_fleet_keeps_every_finished_result(
    fleet, device_factory, tmp_path, stories_gguf
):
    doomed = device_factory("doomed", "127.0.0.6")
    devices = [fleet[0], doomed, fleet[1]]
    inventory = load_inventory(
        write_inventory(tmp_path / "fleet.yml", devices, key=fleet[0].key_path)
    )

    def on_status(host: str, text: str) -> None:
        if host == "doomed" and text.startswith("pp256 1/"):
            doomed.kill_all()  # the device crashes in the middle of its benchmark

    with Store() as store:
        result = bench_fleet(
            inventory.hosts,
            stories_gguf,
            forks=3,
            store=store,
            bench_opts=BenchOptions(threads=1, n_prompt=256, n_gen=8, reps=20),
            connect=_connector(devices),
            on_status=on_status,
        )
        rows = store.results(kind="bench")
    assert [o.ok for o in result.outcomes] == [True, False, True]
    failed = result["doomed"]
    assert failed.error_type == "RemoteError" and "doomed: connection lost" in failed.error
    assert failed.exit_code == 7
    assert sorted(r.host for r in rows) == ["orin", "pi4"]


@pytest.mark.slow
def test_killed_fleet_process_keeps_committed_results(
    fleet, tmp_path, stories_gguf, home, monkeypatch
):
    """SIGKILL the `ramp-edge fleet bench` process after the first host landed in the DB."""
    ssh_home = tmp_path / "user-home"
    (ssh_home / ".ssh").mkdir(parents=True)
    (ssh_home / ".ssh" / "known_hosts").write_text(
        "".join(d.known_hosts_line() + "\n" for d in fleet)
    )
    inventory = write_inventory(tmp_path / "fleet.yml", fleet, key=fleet[0].key_path)
    env = {
        **os.environ,
        "HOME": str(ssh_home),
        "RAMP_EDGE_HOME": str(home),
        "RAMP_EDGE_CACHE": str(tmp_path / "cache"),
    }
    code = "from ramp_edge.cli import main; main()"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "fleet",
            "bench",
            "-i",
            str(inventory),
            "--artifact",
            str(stories_gguf),
            "--forks",
            "1",
            "--threads",
            "1",
            "--reps",
            "40",
            "--n-prompt",
            "256",
            "--n-gen",
            "64",
            "--json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    db = home / "results.sqlite"
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            with sqlite3.connect(db) as con:
                try:
                    count = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    count = 0
            if count:
                break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert count >= 1
    with Store(db) as store:
        rows = store.results(kind="bench")
    assert 1 <= len(rows) < 3 and rows[0].host == "pi4" and rows[0].payload["status"] == "ok"


@pytest.mark.slow
def test_out_of_memory_under_a_memory_cap_is_recorded(device_factory, stories_gguf):
    device = device_factory("tiny", "127.0.0.7")
    cap = MemoryCap(device, 200 << 20)
    try:
        # a 640 MB KV cache (1M tokens) cannot fit in 200 MB: the kernel OOM-kills the agent
        with connect(device) as conn, Store() as store:
            report = deploy_to_host(
                conn,
                stories_gguf,
                bench_opts=BenchOptions(threads=1, n_prompt=8, n_gen=0, reps=1, ctx_size=1_000_000),
                device="raspberry-pi-4-4gb",
            )
            from ramp_edge.pipeline import store_report

            store_report(store, report)
            (row,) = store.results(kind="bench")
        assert report.bench.status == "oom" and report.status == "oom"
        assert "out-of-memory" in report.bench.error or "out of memory" in report.bench.error
        assert row.payload["status"] == "oom" and row.device == "raspberry-pi-4-4gb"
        assert cap.oom_kills() >= 1
    finally:
        device.stop()
        cap.remove()


def test_missing_llama_cpp_on_device_is_a_clear_error(fleet, stories_gguf):
    python = "/usr/bin/python3"
    if (
        not os.path.exists(python)
        or subprocess.run([python, "-c", "import llama_cpp"], capture_output=True).returncode == 0
    ):
        pytest.skip("needs a system python3 without llama_cpp")
    with connect(fleet[2], python=python) as conn, pytest.raises(DependencyError) as info:
        deploy_to_host(conn, stories_gguf, bench_opts=TINY)
    assert "llama-cpp-python" in str(info.value) and "--bootstrap" in str(info.value)


@pytest.mark.slow
def test_bootstrap_creates_a_venv_on_the_device(device_factory):
    from ramp_edge.agent_client import VENV_DIR, Agent, bootstrap

    python = "/usr/bin/python3"
    if (
        not os.path.exists(python)
        or subprocess.run([python, "-m", "venv", "--help"], capture_output=True).returncode
    ):
        pytest.skip("system python3 has no venv module")
    device = device_factory("boot", "127.0.0.8")
    with connect(device, python=None) as conn:
        venv_python = bootstrap(conn, python=python, requirements=())  # offline: no packages
        assert venv_python == f"{VENV_DIR}/bin/python"
        assert (device.home / VENV_DIR / "bin" / "python").exists()
        agent = Agent(conn)
        agent.install()
        assert agent.python == venv_python  # the harness prefers the device venv
        env = agent.env_check()
        assert "llama-cpp-python" in env["missing"] and not env["ready"]["bench"]


def test_agent_reply_is_parsed_over_ssh(fleet):
    from ramp_edge.agent_client import Agent

    with connect(fleet[1]) as conn:
        agent = Agent(conn)
        agent.install()
        assert agent.install() == 0  # unchanged files are not pushed again
        probe = agent.probe()
    assert probe["llama_cpp"]["version"] and probe["memory"]["total_bytes"] > 0
    assert json.dumps(probe)
    assert Path(
        fleet[1].home / ".ramp-edge" / "agent" / "ramp_edge" / "evaluate" / "tasks.py"
    ).is_file()


@pytest.mark.slow
def test_smollm2_deploy_to_one_device(fleet, smollm2):
    """The real default model (98 MB) through push + bench + a 2-item eval on a loopback device."""
    with connect(fleet[1]) as conn:
        report = deploy_to_host(
            conn,
            smollm2,
            tasks="piqa",
            limit=2,
            bench_opts=BenchOptions(threads=1, n_prompt=64, n_gen=16, reps=2),
            device="jetson-orin-nano-8gb",
            eval_n_ctx=512,
        )
    assert (
        report.status == "ok" and report.bench.tg_tps > 1 and report.bench.peak_rss_bytes > 50 << 20
    )
    assert report.push.size_bytes == smollm2.stat().st_size and report.evals[0].n == 2
