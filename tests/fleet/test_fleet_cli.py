"""`ramp-edge fleet bench` end to end against the loopback fleet, then `ramp-edge results`."""

from __future__ import annotations

import json

import pytest
from fleetlib import profile_of, write_inventory

from ramp_edge.cli import main

pytestmark = [pytest.mark.ssh, pytest.mark.llama, pytest.mark.slow]

FAST = ["--threads", "1", "--reps", "2", "--n-prompt", "32", "--n-gen", "8"]


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    """A fake $HOME so ~/.ssh/known_hosts and ~/.ssh/config are the test's, never the user's."""
    path = tmp_path / "user"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    return path


def test_fleet_bench_refuses_unknown_hosts_then_trusts_them(
    capsys, fleet, tmp_path, user_home, stories_gguf
):
    inv = write_inventory(tmp_path / "fleet.yml", fleet, key=fleet[0].key_path)
    code, out, err = run(
        capsys, "fleet", "bench", "-i", inv, "--artifact", stories_gguf, *FAST, "--json"
    )
    assert code == 7 and "3 of 3 hosts failed" in err and "--trust-new-host" in err
    assert not (user_home / ".ssh" / "known_hosts").exists()

    code, out, err = run(
        capsys,
        "fleet",
        "bench",
        "-i",
        inv,
        "--artifact",
        stories_gguf,
        *FAST,
        "--trust-new-host",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and [h["host"] for h in report["hosts"]] == ["pi4", "orin", "laptop"]
    assert all(h["value"]["bench"]["tg_tps"] > 0 for h in report["hosts"])
    known = (user_home / ".ssh" / "known_hosts").read_text()
    assert all(d.host_pub.split()[1] in known for d in fleet)

    code, out, _ = run(capsys, "results", "--kind", "bench", "--json")
    rows = json.loads(out)
    assert code == 0 and sorted(r["host"] for r in rows) == ["laptop", "orin", "pi4"]
    assert {r["device"] for r in rows} == {profile_of(d) for d in fleet}

    # table output (not --json), selecting one group/host
    code, out, _ = run(
        capsys, "fleet", "bench", "-i", inv, "--artifact", stories_gguf, *FAST, "--hosts", "orin"
    )
    assert code == 0 and "orin" in out and "pi4" not in out and "±" in out


def test_live_view_renders_each_host():
    from rich.console import Console

    from ramp_edge.cli.fleet import _LiveView
    from ramp_edge.fleet.inventory import parse_inventory

    hosts = parse_inventory("all:\n  hosts:\n    a: {device: pi5}\n    b: {}\n").hosts
    view = _LiveView(hosts, enabled=False)
    view.update("a", "push 40%")
    view.update("b", "failed: cannot reach")
    console = Console(width=100, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "push 40%" in text and "failed: cannot reach" in text and "pi5" in text
