"""`ramp-edge fleet bench`: help and bad input without any SSH server (happy path: tests/fleet)."""

from __future__ import annotations

import pytest

from ramp_edge.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    return path


def test_help(capsys):
    code, out, _ = run(capsys, "fleet", "bench", "--help")
    assert code == 0 and "--inventory" in out and "--forks" in out and "Example" in out


def test_artifact_or_recipe_is_required(capsys, tmp_path):
    (tmp_path / "f.yml").write_text("all:\n  hosts:\n    a: {}\n")
    code, _, err = run(capsys, "fleet", "bench", "-i", tmp_path / "f.yml")
    assert code == 2 and "exactly one of --artifact or --recipe" in err


def test_malformed_inventory_names_line_and_field(capsys, tmp_path, artifact):
    inv = tmp_path / "fleet.yml"
    inv.write_text("all:\n  hosts:\n    pi: {ansible_port: twenty}\n")
    code, out, err = run(capsys, "fleet", "bench", "-i", inv, "--artifact", artifact)
    assert code == 3 and out == ""
    assert (
        err.strip()
        == f"Error: {inv} line 3: host 'pi': ansible_port must be an integer, got 'twenty'"
    )


def test_unknown_device_profile(capsys, tmp_path, artifact):
    inv = tmp_path / "fleet.yml"
    inv.write_text("all:\n  hosts:\n    pi: {device: jetson-nan}\n")
    code, _, err = run(capsys, "fleet", "bench", "-i", inv, "--artifact", artifact)
    assert code == 3 and "unknown device 'jetson-nan'" in err and len(err.strip().splitlines()) == 1


def test_missing_key_file(capsys, tmp_path, artifact):
    inv = tmp_path / "fleet.yml"
    inv.write_text("all:\n  hosts:\n    pi: {ansible_ssh_private_key_file: ~/no/such/key}\n")
    code, _, err = run(capsys, "fleet", "bench", "-i", inv, "--artifact", artifact)
    assert code == 3 and "ansible_ssh_private_key_file: no such file" in err


def test_unreachable_host_fails_that_host_with_exit_7(capsys, tmp_path, artifact, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config or known_hosts of the user
    inv = tmp_path / "fleet.yml"
    inv.write_text("all:\n  hosts:\n    ghost: {ansible_host: 127.0.0.9, ansible_port: 1}\n")
    code, out, err = run(capsys, "fleet", "bench", "-i", inv, "--artifact", artifact, "--json")
    assert code == 7
    assert (
        "1 of 1 hosts failed: ghost (ghost: cannot reach 127.0.0.9:1"
        in err.strip().splitlines()[-1]
    )
    assert '"ok": false' in out
