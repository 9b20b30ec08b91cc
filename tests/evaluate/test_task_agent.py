"""A task that exists only as a YAML file on the host, scored on the device by the agent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USER = Path(__file__).resolve().parents[1] / "data" / "tasks" / "user"


@pytest.mark.llama
def test_agent_scores_a_yaml_only_task(tmp_path: Path, stories_gguf: Path) -> None:
    from ramp_edge.agent_client import agent_bundle, build_task_payload
    from ramp_edge.evaluate.loglik import LlamaCppScorer
    from ramp_edge.evaluate.taskfile import evaluate_tasks

    for local, remote in agent_bundle():  # the layout the host pushes
        target = tmp_path / remote.split("/", 2)[2]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, target)
    spec = f"{USER / 'capitals.yaml'},{USER / 'plain.jsonl'}"
    payload = tmp_path / "tasks.json"
    payload.write_text(json.dumps(build_task_payload(spec)))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "ramp_agent.py"), "eval", "--model", str(stories_gguf),
         "--tasks", str(payload), "--threads", "1", "--n-ctx", "256"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    device = json.loads(proc.stdout.splitlines()[-1])["data"]["tasks"]
    with LlamaCppScorer(stories_gguf, n_ctx=256, n_threads=1) as scorer:
        host = [r.to_dict() for r in evaluate_tasks(scorer, spec)]
    assert [(t["task"], t["version"], t["n"]) for t in device] == [
        ("capitals", 2, 5),
        ("plain", 1, 5),
    ]
    for on_device, on_host in zip(device, host, strict=True):
        assert (on_device["acc"], on_device["acc_norm"]) == (on_host["acc"], on_host["acc_norm"])
