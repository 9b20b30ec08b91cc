"""ramp_edge.fleet.ssh against real OpenSSH servers on loopback addresses."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from fleetlib import PYTHON, connect

from ramp_edge.errors import ArtifactError, ConfigError, RemoteError
from ramp_edge.fleet.shell import build_command, quote_path
from ramp_edge.fleet.ssh import Connection
from ramp_edge.fleet.transport import HostKeyError, LinkStalledError

pytestmark = pytest.mark.ssh

NASTY = "my model $(touch PWNED) ;'\"*`id` & | > x.gguf"


def _random_file(path: Path, size: int, seed: int = 0) -> Path:
    rng = __import__("random").Random(seed)
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(left, 1 << 20)
            handle.write(rng.randbytes(n))
            left -= n
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_command_quotes_everything():
    assert build_command(["echo", "a b", "$(x)"]) == "echo 'a b' '$(x)'; exit $?"
    assert build_command(["ls"], cwd="~/dir with space") == "cd ~/'dir with space' && ls; exit $?"
    assert quote_path("~") == "~"


def test_run_exit_codes_and_streams(fleet):
    with connect(fleet[0]) as conn:
        result = conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        lines: list[str] = []
        conn.run(["printf", "a\\nb\\nc"], on_line=lines.append)
        assert lines == ["a", "b", "c"]
        with pytest.raises(RemoteError, match="exited 3"):
            conn.run(["sh", "-c", "exit 3"])
        # a SIGKILLed process (what the OOM killer sends) is reported as 137
        killed = conn.run([PYTHON, "-c", "import os; os.kill(os.getpid(), 9)"], check=False)
        assert killed.exit_code == 137 and killed.killed


def test_arguments_and_file_names_with_shell_metacharacters(fleet, tmp_path):
    device = fleet[0]
    with connect(device) as conn:
        echoed = conn.run(["printf", "%s", NASTY]).stdout
        assert echoed == NASTY
        local = _random_file(tmp_path / NASTY, 300_000)
        push = conn.put(local, f"pushes/{NASTY}")
        assert not push.skipped and push.sha256 == _sha(local)
        assert conn.remote_sha256(f"pushes/{NASTY}") == push.sha256
        listed = conn.run(["ls", "-1", "pushes"]).stdout.splitlines()
    assert listed == [NASTY]
    assert (device.home / "pushes" / NASTY).read_bytes() == local.read_bytes()
    assert not list(device.home.rglob("PWNED")) and not (device.home / "x.gguf").exists()


def test_put_skips_identical_file_and_replaces_changed_one(fleet, tmp_path):
    device = fleet[1]
    local = _random_file(tmp_path / "m.gguf", 2_000_000, seed=1)
    with connect(device) as conn:
        first = conn.put(local, "~/.ramp-edge/artifacts/m.gguf")
        again = conn.put(local, "~/.ramp-edge/artifacts/m.gguf")
        assert not first.skipped and first.bytes_sent == local.stat().st_size
        assert again.skipped and again.bytes_sent == 0
        _random_file(local, 2_000_000, seed=2)
        third = conn.put(local, "~/.ramp-edge/artifacts/m.gguf")
        assert not third.skipped
    remote = device.home / ".ramp-edge" / "artifacts" / "m.gguf"
    assert _sha(remote) == _sha(local)
    assert not remote.with_name("m.gguf.partial").exists()


def test_stale_partial_is_discarded(fleet, tmp_path):
    device = fleet[2]
    local = _random_file(tmp_path / "s.gguf", 1_000_000, seed=3)
    (device.home / "s.gguf.partial").write_bytes(b"garbage that is not a prefix")
    with connect(device) as conn:
        push = conn.put(local, "s.gguf")
    assert push.resumed_from == 0 and _sha(device.home / "s.gguf") == _sha(local)


@pytest.mark.slow
def test_push_resumes_after_sshd_killed_mid_push(device_factory, tmp_path):
    device = device_factory("resume", "127.0.0.5")
    local = _random_file(tmp_path / "big.gguf", 48 << 20, seed=4)
    size = local.stat().st_size
    killed = threading.Event()

    def kill_at_third(done: float, total: float, desc: str) -> None:
        if done >= total / 3 and not killed.is_set():
            killed.set()
            device.kill_all()

    with connect(device) as conn, pytest.raises(RemoteError, match=r"connection lost|stalled"):
        conn.put(local, "models/big.gguf", progress=kill_at_third)
    partial = device.home / "models" / "big.gguf.partial"
    assert killed.is_set() and 0 < partial.stat().st_size < size

    device.start()
    with connect(device) as conn:
        push = conn.put(local, "models/big.gguf")
    assert 0 < push.resumed_from < size
    assert push.bytes_sent == size - push.resumed_from
    assert push.sha256 == _sha(local) == _sha(device.home / "models" / "big.gguf")
    assert not partial.exists()


@pytest.mark.slow
def test_stalled_link_fails_within_30_s(fleet, proxy_factory, tmp_path):
    device = fleet[0]
    proxy = proxy_factory(device, rate_bps=80e6)
    local = _random_file(tmp_path / "stall.gguf", 64 << 20, seed=5)

    def blackhole_after_2mb(done: float, total: float, desc: str) -> None:
        if done >= 2 << 20 and proxy.mode == "up":
            proxy.set_mode("blackhole")

    conn = connect(device, via=proxy.listen)  # default stall_timeout (15 s)
    conn.open()
    start = time.monotonic()
    with pytest.raises(LinkStalledError, match=r"link stalled .* no reply .* for 15 s") as info:
        conn.put(local, "stall.gguf", progress=blackhole_after_2mb)
    assert time.monotonic() - start < 30
    assert device.name in str(info.value)

    # a silent remote command over a dead link fails the same way
    proxy.set_mode("up")
    conn = connect(device, via=proxy.listen, stall_timeout=5)
    conn.open()
    threading.Timer(1.0, proxy.set_mode, ("blackhole",)).start()
    start = time.monotonic()
    with pytest.raises(LinkStalledError):
        conn.run(["sleep", "60"])
    assert time.monotonic() - start < 30


def test_unknown_host_key_is_refused_unless_trusted(fleet, tmp_path):
    device = fleet[0]
    empty = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match=r"not in known_hosts.*--trust-new-host"):
        connect(device, known_hosts=empty).open()
    assert not empty.exists()
    with connect(device, known_hosts=empty, trust_new_host=True) as conn:
        assert conn.run(["true"]).ok
    assert device.host_pub.split()[1] in empty.read_text()
    with connect(device, known_hosts=empty) as conn:  # now known: no trust needed
        assert conn.run(["true"]).ok


def test_changed_host_key_is_refused_even_when_trusting(fleet, tmp_path):
    impostor, real = fleet[0], fleet[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{impostor.host}]:{impostor.port} {real.host_pub}\n")
    for trust in (False, True):
        with pytest.raises(HostKeyError, match=r"CHANGED.*ssh-keygen -R"):
            connect(impostor, known_hosts=known, trust_new_host=trust).open()


def test_ssh_config_alias_is_honoured(fleet, tmp_path):
    device = fleet[2]
    known = tmp_path / "kh"
    known.write_text(device.known_hosts_line() + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host lab-laptop\n  HostName {device.host}\n  Port {device.port}\n  User {device.user}\n"
        f"  IdentityFile {device.key_path}\n  UserKnownHostsFile {known}\n"
    )
    conn = Connection("lab-laptop", ssh_config=config, allow_agent=False, look_for_keys=False)
    assert (conn.hostname, conn.port) == (device.host, device.port)
    with conn:
        assert conn.run(["sh", "-c", "echo $FLEET_DEVICE"]).stdout.strip() == device.name


def test_missing_key_wrong_key_and_unreachable_host(fleet, tmp_path):
    device = fleet[0]
    with pytest.raises(ConfigError, match="private key file not found"):
        Connection(device.host, port=device.port, key_filename=tmp_path / "nope", ssh_config=False)
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    known = tmp_path / "kh"
    known.write_text(device.known_hosts_line() + "\n")
    conn = Connection(
        device.host,
        port=device.port,
        user=device.user,
        key_filename=other,
        known_hosts=[known],
        ssh_config=False,
        allow_agent=False,
        look_for_keys=False,
    )
    with pytest.raises(RemoteError, match="authentication failed"):
        conn.open()
    start = time.monotonic()
    with pytest.raises(RemoteError, match=r"cannot reach 127.0.0.9"):
        Connection("127.0.0.9", port=1, ssh_config=False, known_hosts=[known]).open()
    assert time.monotonic() - start < 5


def test_local_connection_matches_interface(tmp_path):
    from ramp_edge.fleet.local import LocalConnection

    conn = LocalConnection(tmp_path / "root")
    local = _random_file(tmp_path / NASTY, 100_000)
    push = conn.put(local, f"a/{NASTY}")
    assert conn.put(local, f"a/{NASTY}").skipped and push.sha256 == _sha(local)
    assert conn.run(["printf", "%s", NASTY]).stdout == NASTY
    assert (
        conn.run([PYTHON, "-c", "import os; os.kill(os.getpid(), 9)"], check=False).exit_code == 137
    )
    with pytest.raises(ArtifactError):
        conn.put(tmp_path / "missing", "x")
