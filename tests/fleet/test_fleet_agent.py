"""The device agent's JSON protocol, run locally (`python agents/ramp_agent.py ...`)."""

from __future__ import annotations

import importlib.util
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ramp_edge.agent_client import build_task_payload, parse_agent_output

AGENT = Path(__file__).resolve().parents[2] / "agents" / "ramp_agent.py"


def run_agent(
    *args: str, agent: Path = AGENT, as_limit: int | None = None
) -> tuple[int, list[dict]]:
    def limit() -> None:  # soft limit only: a lowered hard limit could not be raised again
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, hard))

    proc = subprocess.run(
        [sys.executable, str(agent), *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit if as_limit else None,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert all(line["ramp_agent"] == 1 for line in lines), proc.stdout
    return proc.returncode, lines


def final(lines: list[dict]) -> dict:
    assert lines and lines[-1]["type"] in ("result", "error")
    return lines[-1]


def test_probe_reports_system_facts():
    rc, lines = run_agent("probe")
    data = final(lines)["data"]
    assert rc == 0
    assert data["memory"]["total_bytes"] > 0 and data["cpu"]["logical_cores"] >= 1
    assert data["os"]["machine"] and data["python"]["version"].count(".") == 2
    assert isinstance(data["cpu"]["flags"], list)
    if importlib.util.find_spec("llama_cpp"):
        assert data["llama_cpp"]["version"] and "CPU" in data["llama_cpp"]["system_info"]


def test_env_check_names_whats_missing(tmp_path):
    lonely = tmp_path / "ramp_agent.py"
    shutil.copy(AGENT, lonely)
    rc, lines = run_agent("env-check", agent=lonely)
    data = final(lines)["data"]
    assert rc == 0 and data["ready"]["probe"]
    assert data["missing_scorer_modules"] == ["errors", "tasks", "runner", "loglik"]
    assert data["ready"]["eval"] is False
    # a python without llama_cpp: the system python3, when it lacks it
    system = shutil.which("python3", path="/usr/bin")
    if (
        system
        and subprocess.run([system, "-c", "import llama_cpp"], capture_output=True).returncode
    ):
        proc = subprocess.run([system, str(lonely), "env-check"], capture_output=True, text=True)
        data = json.loads(proc.stdout.splitlines()[-1])["data"]
        assert "llama-cpp-python" in data["missing"] and "pip install" in data["install_hint"]
        proc = subprocess.run(
            [system, str(lonely), "bench", "--model", "x"], capture_output=True, text=True
        )
        error = json.loads(proc.stdout.splitlines()[-1])["error"]
        assert proc.returncode == 3 and error["kind"] == "missing_dependency"
        assert "--bootstrap" in error["message"]


@pytest.mark.parametrize(
    ("args", "kind", "code"),
    [
        (("bogus",), "usage", 2),
        ((), "usage", 2),
        (("bench",), "usage", 2),
        (("bench", "--model", "/nonexistent.gguf"), "bad_input", 4),
        (("eval", "--model", "/nonexistent.gguf", "--tasks", "/nonexistent.json"), "bad_input", 4),
    ],
)
def test_every_failure_is_a_json_error_with_exit_code(args, kind, code):
    rc, lines = run_agent(*args)
    error = final(lines)
    assert (rc, error["ok"], error["error"]["kind"], error["error"]["exit_code"]) == (
        code,
        False,
        kind,
        code,
    )
    assert error["error"]["message"]


def test_memory_error_is_reported_as_out_of_memory(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("ramp_agent_under_test", AGENT)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)

    def explode(args):
        raise MemoryError

    monkeypatch.setitem(agent.COMMANDS, "probe", explode)
    assert agent.main(["probe"]) == agent.EXIT_OOM
    error = parse_agent_output(capsys.readouterr().out)
    assert error["error"]["kind"] == "out_of_memory" and error["error"]["exit_code"] == 6


def test_eval_without_scorer_modules_says_so(tmp_path, stories_gguf):
    lonely = tmp_path / "ramp_agent.py"
    shutil.copy(AGENT, lonely)
    tasks = tmp_path / "tasks.json"
    tasks.write_text(
        json.dumps({"schema": "ramp-edge/task-items", "schema_version": 1, "tasks": []})
    )
    rc, lines = run_agent("eval", "--model", str(stories_gguf), "--tasks", str(tasks), agent=lonely)
    error = final(lines)["error"]
    assert (
        rc == 3 and error["kind"] == "missing_scorer" and "ramp_edge/evaluate" in error["message"]
    )


@pytest.mark.llama
def test_bench_reports_llama_bench_statistics(stories_gguf):
    rc, lines = run_agent(
        "--heartbeat",
        "0.05",
        "bench",
        "--model",
        str(stories_gguf),
        "--threads",
        "1",
        "--n-prompt",
        "32",
        "--n-gen",
        "8",
        "--reps",
        "3",
    )
    data = final(lines)["data"]
    assert rc == 0
    assert set(data["tests"]) == {"pp32", "tg8"}
    for test in data["tests"].values():
        assert len(test["samples_ns"]) == 3 and test["avg_ts"] > 0 and test["stddev_ts"] >= 0
        assert test["min_ts"] <= test["avg_ts"] <= test["max_ts"]
    assert data["threads"] == 1 and data["load_time_s"] > 0 and data["peak_rss_bytes"] > 1 << 20
    progress = [line for line in lines if line["type"] == "progress"]
    assert [p["done"] for p in progress] == [1, 2, 3, 1, 2, 3]


@pytest.mark.llama
def test_allocation_failure_is_out_of_memory(stories_gguf):
    # a 2.4 GB KV cache under a 2 GB address-space limit: llama.cpp's allocation fails
    rc, lines = run_agent(
        "bench",
        "--model",
        str(stories_gguf),
        "--threads",
        "1",
        "--n-prompt",
        "8",
        "--n-gen",
        "0",
        "--reps",
        "1",
        "--ctx-size",
        "4000000",
        as_limit=2 << 30,
    )
    error = final(lines)["error"]
    assert rc == 6 and error["kind"] == "out_of_memory"
    assert any("allocate" in line for line in error["log_tail"])


@pytest.mark.llama
def test_eval_scores_pushed_task_items(tmp_path, stories_gguf):
    from ramp_edge.agent_client import agent_bundle

    for local, remote in agent_bundle():  # the layout the harness pushes
        target = tmp_path / remote.split("/", 2)[2]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, target)
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps(build_task_payload("arc_easy", limit=2)))
    rc, lines = run_agent(
        "eval",
        "--model",
        str(stories_gguf),
        "--tasks",
        str(tasks),
        "--threads",
        "1",
        "--n-ctx",
        "256",
        agent=tmp_path / "ramp_agent.py",
    )
    data = final(lines)["data"]
    assert rc == 0
    (task,) = data["tasks"]
    assert task["task"] == "arc_easy" and task["n"] == 2 and 0 <= task["acc"] <= 1
    assert [p["done"] for p in lines if p["type"] == "progress"] == [1, 2]
