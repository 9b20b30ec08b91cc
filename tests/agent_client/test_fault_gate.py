"""The agent's test-only fault injection needs RAMP_AGENT_TESTING=1 beside RAMP_AGENT_TEST_FAULT,
so a stray variable on a real device never kills a bench."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

AGENTS = Path(__file__).resolve().parents[2] / "agents"
SNIPPET = (
    "import argparse, ramp_agent; ramp_agent.inject_fault('bench', argparse.Namespace()); "
    "print('survived')"
)


def _run(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMP_AGENT_TEST")}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-c", SNIPPET],
        cwd=AGENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fault_alone_is_ignored_with_a_warning():
    proc = _run({"RAMP_AGENT_TEST_FAULT": "bench=TERM"})
    assert proc.returncode == 0 and "survived" in proc.stdout
    assert "ignoring RAMP_AGENT_TEST_FAULT" in proc.stderr


def test_fault_with_testing_flag_kills_the_worker():
    proc = _run({"RAMP_AGENT_TEST_FAULT": "bench=TERM", "RAMP_AGENT_TESTING": "1"})
    assert proc.returncode == -signal.SIGTERM
    assert "survived" not in proc.stdout
