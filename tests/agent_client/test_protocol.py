"""The agent client's protocol constants equal the device agent's (agents/ramp_agent.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ramp_edge import agent_client

AGENT = Path(__file__).resolve().parents[2] / "agents" / "ramp_agent.py"


def _agent_constants() -> dict[str, object]:
    tree = ast.parse(AGENT.read_text())
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.isupper():
                try:
                    out[target.id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    return out


def test_protocol_constants_match_the_agent():
    agent = _agent_constants()
    assert agent["PROTOCOL"] == agent_client.PROTOCOL
    assert agent["TASK_SCHEMA"] == agent_client.TASK_SCHEMA
    scorer = {"/".join(parts) for parts in agent["SCORER_FILES"].values()}
    assert scorer == set(agent_client._SCORER)
    pip_names = {req.split("==")[0] for req in agent_client.DEFAULT_REQUIREMENTS}
    assert set(agent["REQUIREMENTS"].values()) == pip_names


def test_agent_source_is_this_checkouts_agent():
    assert agent_client.agent_source() == AGENT


def test_localhost_needs_no_paramiko(tmp_path):
    """A localhost deploy's transport and agent calls work with paramiko unimportable."""
    code = f"""
import sys
sys.modules["paramiko"] = None  # any `import paramiko` now raises ImportError
import ramp_edge.cli, ramp_edge.cli.deploy, ramp_edge.pipeline
from ramp_edge.agent_client import Agent
from ramp_edge.fleet.local import LocalConnection
with LocalConnection({str(tmp_path)!r}) as conn:
    agent = Agent(conn)
    agent.install()
    env = agent.env_check()
assert "python" in env, env
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
