"""Progress off a TTY: a plain stderr line every interval, never silent, nothing with --quiet."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ramp_edge import ui


def test_progress_off_a_tty_prints_a_line_per_interval(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RAMP_EDGE_PROGRESS_INTERVAL", "0.2")
    monkeypatch.setattr(ui, "_quiet", False)
    with ui.progress("allocate") as update:
        time.sleep(0.5)  # a phase that reports nothing still gets lines
        update(25, 100, "search")
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 5
    assert lines[0].startswith("allocate: running, 0s")
    assert lines[-1].startswith("search: 25/100 (25%), 0s, ~")
    assert lines[-1].endswith("s left")
    time.sleep(0.3)
    assert capsys.readouterr().err == ""  # the heartbeat stops with the block


def test_quiet_prints_nothing(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RAMP_EDGE_PROGRESS_INTERVAL", "0.1")
    monkeypatch.setattr(ui, "_quiet", True)
    with ui.progress("x") as update:
        update(1, 2)
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("value", "expected"), [("0.5", 0.5), ("nonsense", 10.0), ("0", 0.05)])
def test_interval_from_environment(monkeypatch, value: str, expected: float) -> None:
    monkeypatch.setenv("RAMP_EDGE_PROGRESS_INTERVAL", value)
    assert ui.progress_interval_s() == expected


def test_progress_in_a_subprocess_with_stderr_a_pipe() -> None:
    """As under nohup or CI (stderr a pipe): progress lines on stderr, stdout untouched."""
    code = (
        "import time, sys; from ramp_edge import ui\n"
        "with ui.progress('eval') as update:\n"
        "    for i in range(1, 6):\n"
        "        time.sleep(0.1); update(i, 5)\n"
    )
    env = {"RAMP_EDGE_PROGRESS_INTERVAL": "0.15", "PYTHONPATH": str(ui.__file__).rsplit("/", 2)[0]}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert any(line.startswith("eval: ") and "/5 (" in line for line in proc.stderr.splitlines())
