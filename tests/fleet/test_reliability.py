"""Issue 16: reliability under faults and bad input (cancel, exit codes, host keys, injection).

Real sshd devices on 127.0.0.x (fleetlib); each test names the class of the issue it covers.
"""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paramiko
import psutil
import pytest
from fleetlib import PYTHON, connect, write_inventory

from ramp_edge.errors import ConfigError, RemoteError
from ramp_edge.fleet.transport import HostKeyError

FAST = ["--threads", "1", "--reps", "2", "--n-prompt", "32", "--n-gen", "8"]


def cli(*args: object, home: Path, user_home: Path, timeout: float = 120):
    """`ramp-edge ARGS` in a subprocess (real signals, real exit codes)."""
    env = {
        **os.environ,
        "HOME": str(user_home),
        "RAMP_EDGE_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "ramp_edge", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "user"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    return path


def pin(user_home: Path, devices) -> None:
    (user_home / ".ssh" / "known_hosts").write_text(
        "".join(d.known_hosts_line() + "\n" for d in devices)
    )


def procs_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with_marker = any(marker in part for part in proc.info["cmdline"] or ())
        if with_marker and proc.pid != os.getpid():
            found.append(proc)
    return found


def agents_in(home: Path, command: str = "") -> list[psutil.Process]:
    """ramp_agent processes (running `command`, if given) whose working directory is `home`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or ()
            if (
                any("ramp_agent.py" in p for p in cmdline)
                and (not command or command in cmdline)
                and Path(proc.cwd()) == Path(home)
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


# --------------------------------------------------------------------------- 1. cancel


@pytest.mark.ssh
def test_1_a_timeout_kills_the_remote_process_group(fleet):
    marker = f"ramp-timeout-{uuid.uuid4().hex[:8]}"
    # the child sleeps too: the whole process group must go, not only the shell
    script = f"import subprocess,time; subprocess.Popen(['sleep','60']); time.sleep(60) # {marker}"
    with connect(fleet[0]) as conn:
        start = time.monotonic()
        with pytest.raises(RemoteError, match="timed out"):
            conn.run([PYTHON, "-c", script], timeout=1)
        assert time.monotonic() - start < 6
        deadline = time.monotonic() + 5
        while procs_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert procs_with(marker) == [], "the remote command survived its timeout"
        assert conn.run(["true"]).ok  # the link stays usable


@pytest.mark.ssh
@pytest.mark.llama
@pytest.mark.slow
def test_1_ctrl_c_stops_remote_agents_keeps_finished_hosts_and_exits_130(
    fleet, tmp_path, user_home, stories_gguf, home
):
    pin(user_home, fleet)
    # partial files other tests left on these shared devices (a resumable push keeps its own)
    before = {p for d in fleet[:2] for p in d.home.rglob("*.partial")}
    inv = write_inventory(tmp_path / "fleet.yml", fleet[:2], key=fleet[0].key_path)
    env = {**os.environ, "HOME": str(user_home), "RAMP_EDGE_HOME": str(home)}
    argv = [sys.executable, "-m", "ramp_edge", "fleet", "bench", "-i", inv, "--artifact"]
    argv += [stories_gguf, "--forks", "1", "--threads", "1", "--reps", "100000", "--n-prompt"]
    argv += ["64", "--n-gen", "0", "--json"]
    # the first host runs a short bench: give it its own, faster inventory entry order
    proc = subprocess.Popen(
        [str(a) for a in argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not agents_in(fleet[0].home, "bench"):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        time.sleep(1.0)  # well into the benchmark
        if not agents_in(fleet[0].home, "bench"):
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(
                f"the agent never benchmarked on pi4: {out[-800:]!r} {err[-1500:]!r}"
            )
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode()
    assert rc == 130, err
    assert elapsed < 15, f"Ctrl-C took {elapsed:.1f} s"
    time.sleep(0.5)
    assert agents_in(fleet[0].home) == [] and agents_in(fleet[1].home) == []
    for device in fleet[:2]:
        assert set(device.home.rglob("*.partial")) - before == set()
    assert "Traceback" not in err


@pytest.mark.ssh
@pytest.mark.llama
@pytest.mark.slow
def test_1_ctrl_c_in_the_fleet_keeps_finished_hosts(fleet, tmp_path, stories_gguf, home):
    """run_on_hosts: a KeyboardInterrupt while host 2 benchmarks; host 1 is in the store."""
    import _thread
    import threading

    from fleetlib import _connector_for

    from ramp_edge.agent_client import BenchOptions
    from ramp_edge.fleet.inventory import load_inventory
    from ramp_edge.pipeline import bench_fleet
    from ramp_edge.store import Store

    inv = load_inventory(write_inventory(tmp_path / "f.yml", fleet[:2], key=fleet[0].key_path))
    fired = threading.Event()

    def on_status(host: str, text: str) -> None:
        if host == "orin" and text.startswith("pp64 1/") and not fired.is_set():
            fired.set()
            _thread.interrupt_main()

    start = time.monotonic()
    with Store() as store, pytest.raises(KeyboardInterrupt):
        bench_fleet(
            inv.hosts,
            stories_gguf,
            forks=1,
            store=store,
            bench_opts=BenchOptions(threads=1, n_prompt=64, n_gen=0, reps=300),
            connect=_connector_for(fleet),
            on_status=on_status,
        )
    with Store() as store:
        rows = store.results(kind="bench")
    assert fired.is_set() and time.monotonic() - start < 120
    assert [r.host for r in rows] == ["pi4"]
    time.sleep(0.5)
    assert agents_in(fleet[1].home) == []


# --------------------------------------------------------------------------- 2. exit codes


def test_2_hosts_pattern_matching_nothing_is_an_error(tmp_path, invoke, stories_gguf):
    inv = tmp_path / "fleet.yml"
    inv.write_text("all:\n  hosts:\n    a: {ansible_host: 127.0.0.2}\n")
    result = invoke(["fleet", "bench", "-i", inv, "--artifact", stories_gguf, "--hosts", ","])
    assert result.exit_code == 3 and "no hosts matched" in result.output


@pytest.mark.ssh
@pytest.mark.llama
@pytest.mark.slow
def test_2_a_failed_benchmark_exits_non_zero(fleet, tmp_path, user_home, home, stories_gguf):
    pin(user_home, fleet)
    inv = write_inventory(tmp_path / "fleet.yml", fleet[:1], key=fleet[0].key_path)
    bogus = tmp_path / "truncated.gguf"
    data = stories_gguf.read_bytes()
    bogus.write_bytes(data[: len(data) // 2])  # header intact, tensors cut: llama.cpp refuses it
    out = cli(
        "fleet", "bench", "-i", inv, "--artifact", bogus, *FAST, home=home, user_home=user_home
    )
    assert out.returncode == 7, out.stderr
    assert "1 of 1 hosts failed" in out.stderr and "pi4" in out.stderr
    assert "Traceback" not in out.stderr
    with sqlite3.connect(home / "results.sqlite") as db:  # the failure is recorded, not lost
        (status,) = db.execute("SELECT json_extract(payload, '$.status') FROM results").fetchone()
    assert status == "error"


# --------------------------------------------------------------------------- 3. host keys


def _random_ed25519() -> str:
    raw = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32))
    return f"ssh-ed25519 {raw.decode()}"


@pytest.mark.ssh
def test_3_trust_new_host_appends_one_hashed_line_and_keeps_everything_else(fleet, tmp_path):
    device = fleet[0]
    known = tmp_path / "known_hosts"
    hashed_other = paramiko.HostKeys.hash_host("[10.9.9.9]:22")
    original = (
        "# my fleet, do not reorder\n"
        f"{hashed_other} {_random_ed25519()}\n"
        f"@cert-authority *.lab.example {_random_ed25519()}\n"
        f"@revoked * {_random_ed25519()}\n"
        "old-router ssh-foo-unknown@example.com AAAAB3NzaC1yc2EAAAADAQABAAAAgQ== legacy\n"
        f"other.example {_random_ed25519()} a comment"
    )  # no final newline on purpose
    known.write_text(original)
    os.chmod(known, 0o644)
    with connect(device, known_hosts=known, trust_new_host=True) as conn:
        assert conn.run(["true"]).ok
    text = known.read_text()
    assert text.startswith(original + "\n")
    added = text[len(original) + 1 :].splitlines()
    assert len(added) == 1 and added[0].startswith("|1|")  # hashed like the file
    assert added[0].split()[1:] == device.host_pub.split()
    assert (
        paramiko.HostKeys.hash_host(
            f"[{device.host}]:{device.port}", added[0].split()[0].split("|")[2]
        )
        == added[0].split()[0]
    )
    assert os.stat(known).st_mode & 0o777 == 0o644
    assert list(tmp_path.glob(".known_hosts*")) == []  # no temp file left
    with connect(device, known_hosts=known) as conn:  # now known: no trust needed
        assert conn.run(["true"]).ok
    assert known.read_text() == text  # nothing rewritten


@pytest.mark.ssh
def test_3_a_changed_host_key_is_refused_like_openssh(fleet, tmp_path):
    device = fleet[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[{device.host}]:{device.port} {_random_ed25519()}\n")
    before = known.read_text()
    with pytest.raises(HostKeyError) as info:
        with connect(device, known_hosts=known, trust_new_host=True):
            pass
    message = str(info.value)
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message
    assert "Host key verification failed" in message and "ssh-keygen -R" in message
    assert known.read_text() == before


@pytest.mark.ssh
def test_3_a_revoked_host_key_is_refused(fleet, tmp_path):
    device = fleet[2]
    known = tmp_path / "known_hosts"
    known.write_text(device.known_hosts_line() + "\n" + f"@revoked * {device.host_pub}\n")
    with pytest.raises(HostKeyError, match="@revoked"):
        with connect(device, known_hosts=known):
            pass


# --------------------------------------------------------------------------- 4. injection


@pytest.mark.parametrize(
    "entry",
    [
        'ansible_host: "x; touch {flag}"',
        'ansible_host: "$(touch {flag})"',
        'ansible_host: "host -oProxyCommand=touch {flag}"',
        'ansible_user: "pi`touch {flag}`"',
        "ansible_port: 70000",
        "ansible_port: 0",
    ],
)
def test_4_a_hostile_inventory_entry_is_refused_with_its_line(entry, tmp_path, invoke, user_home):
    flag = tmp_path / "pwned"
    # ~/.ssh/config with a ProxyCommand that would run %h through a shell
    (user_home / ".ssh" / "config").write_text("Host *\n  ProxyCommand sh -c 'nc %h %p'\n")
    inv = tmp_path / "fleet.yml"
    inv.write_text(
        "all:\n  hosts:\n    good: {ansible_host: 127.0.0.2}\n"
        f"    bad: {{{entry.format(flag=flag)}}}\n"
    )
    artifact = tmp_path / "a.gguf"
    artifact.write_bytes(b"GGUF")
    result = invoke(["fleet", "bench", "-i", inv, "--artifact", artifact])
    assert result.exit_code == 3, result.output
    assert "line 4" in result.output and "Traceback" not in result.output
    assert not flag.exists()


@pytest.mark.parametrize(
    "host", ["pi@x;id", "pi@$(id)", "pi@host name", "p`id`@h", "pi@h:70000", "pi@h:0", "x:2:3"]
)
def test_4_a_hostile_host_option_is_refused(host, invoke):
    result = invoke(["deploy", "--device", "laptop-x86", "--host", host])
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1


def test_4_hosts_accept_names_ipv4_and_ipv6():
    from ramp_edge.fleet.hosts import parse_host

    assert parse_host("pi@[fe80::1]:2222").address == "fe80::1"
    assert parse_host("::1").port is None
    assert parse_host("root@10.0.0.7:22").port == 22
    assert parse_host("ci_user@build-7.lab.example").user == "ci_user"
    with pytest.raises(ConfigError):
        parse_host("[::1")


# --------------------------------------------------------------------------- 5. validate first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "arc_eazy"], "unknown task 'arc_eazy'"),
        (["--out", "/nonexistent-dir/x.gguf"], "does not exist"),
        (["--min-tps", "nan"], "positive number"),
        (["--host", "pi@h:70000"], "outside 1..65535"),
        (["--host", "x:2:3"], "not a valid host name"),
    ],
)
def test_5_deploy_checks_arguments_before_any_work(args, message, invoke, monkeypatch):
    import ramp_edge.pipeline as pipeline

    def no_work(*a, **k):
        raise AssertionError("the pipeline started before the arguments were checked")

    monkeypatch.setattr(pipeline, "run_deploy", no_work)
    start = time.monotonic()
    result = invoke(["deploy", "--device", "laptop-x86", "--host", "pi@127.0.0.2", *args])
    assert result.exit_code == 3, result.output
    assert message in result.output and time.monotonic() - start < 1.5


def test_5_fleet_checks_tasks_before_export(tmp_path, invoke, monkeypatch):
    import ramp_edge.cli.fleet as fleet_cli

    monkeypatch.setattr(fleet_cli, "_export", lambda *a: pytest.fail("exported first"))
    inv = tmp_path / "fleet.yml"
    inv.write_text("all:\n  hosts:\n    a: {ansible_host: 127.0.0.2}\n")
    args = ["fleet", "bench", "-i", inv, "--recipe", "Q4_0", "--model", "smollm2-135m"]
    result = invoke([*args, "--tasks", "piqa,arc_eazy"])
    assert result.exit_code == 3 and "unknown task 'arc_eazy'" in result.output


# --------------------------------------------------------------------------- 6. unmapped errors


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_6_allocate_rejects_non_finite_latency(value, invoke):
    result = invoke(["allocate", "smollm2-135m", "--max-ms-per-token", value])
    assert result.exit_code == 2 and "positive, finite" in result.output
    assert not isinstance(result.exception, (OverflowError, ValueError))


def test_6_one_malformed_profile_does_not_break_the_others(tmp_path, caplog):
    from ramp_edge.device.profiles import load_profile_file, profiles_dir, resolve_name

    good = sorted(profiles_dir().glob("*.toml"))[0]
    (tmp_path / good.name).write_text(good.read_text())
    (tmp_path / "broken.toml").write_text("id = [unclosed\n")
    nan = good.read_text()
    lines = nan.splitlines()
    for i, line in enumerate(lines):  # the first positive number becomes nan
        key, eq, value = line.partition("=")
        if eq and value.strip().replace(".", "", 1).isdigit() and "." in value:
            lines[i] = f"{key}= nan"
            break
    (tmp_path / "nan.toml").write_text(
        "\n".join(lines).replace(load_profile_file(good).id, "nan", 1)
    )
    with caplog.at_level("WARNING"):
        assert resolve_name(load_profile_file(good).id, tmp_path) == load_profile_file(good).id
    assert "broken.toml" in caplog.text and "nan.toml" in caplog.text
    with pytest.raises(ConfigError, match="finite"):
        load_profile_file(tmp_path / "nan.toml")


def test_6_dns_lookup_has_a_deadline(monkeypatch):
    import socket

    from ramp_edge.fleet import ssh

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(30))
    start = time.monotonic()
    with pytest.raises(RemoteError, match="no answer from DNS"):
        ssh._tcp_socket("device.invalid", 22, connect_timeout=1.0, user_timeout_s=5)
    assert time.monotonic() - start < 3


@pytest.mark.slow
def test_6_a_locked_results_database_is_a_one_line_error(home):
    from ramp_edge.store import Store, StoreError

    with Store() as store:
        store.add_result("bench", "d", "h", "a.gguf", {})
    holder = sqlite3.connect(home / "results.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Store() as store, pytest.raises(StoreError, match="locked"):
            store.add_result("bench", "d", "h", "a.gguf", {})
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.llama
def test_6_agent_refuses_n_batch_zero_instead_of_looping(stories_gguf):
    agent = Path(__file__).resolve().parents[2] / "agents" / "ramp_agent.py"
    proc = subprocess.run(
        [
            sys.executable,
            agent,
            "bench",
            "--model",
            stories_gguf,
            "--n-prompt",
            "8",
            "--n-gen",
            "0",
            "--reps",
            "1",
            "--n-batch",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4 and '"kind":"bad_input"' in proc.stdout


# --------------------------------------------------------------------------- 7. device disk


@pytest.fixture
def small_disk(device_factory):
    """A device whose ~/.ramp-edge sits on a 6 MiB tmpfs."""
    device = device_factory("tiny-disk", "127.0.0.11")
    mount = device.home / ".ramp-edge"
    mount.mkdir()
    ok = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if ok.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {ok.stderr.decode().strip()}")
    try:
        yield device
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.ssh
def test_7_not_enough_space_is_said_before_pushing(small_disk, tmp_path):
    from ramp_edge.fleet.transport import DeviceFullError

    big = tmp_path / "big.gguf"
    big.write_bytes(os.urandom(8 << 20))
    with connect(small_disk) as conn, pytest.raises(DeviceFullError, match="not enough space"):
        conn.put(big, ".ramp-edge/artifacts/big.gguf")
    assert list((small_disk.home / ".ramp-edge").rglob("*")) in (
        [],
        [small_disk.home / ".ramp-edge" / "artifacts"],
    )


@pytest.mark.ssh
def test_7_a_disk_filling_up_mid_push_is_enospc_and_leaves_nothing(small_disk, tmp_path):
    from ramp_edge.fleet.transport import DeviceFullError

    big = tmp_path / "big.gguf"
    big.write_bytes(os.urandom(8 << 20))
    with connect(small_disk) as conn:
        conn.free_bytes = lambda path: None if not getattr(conn, "_asked", False) else 0
        real_free = type(conn).free_bytes

        calls = []

        def free(path):  # unknown before the push (no df), the truth afterwards
            calls.append(path)
            return None if len(calls) == 1 else real_free(conn, path)

        conn.free_bytes = free
        with pytest.raises(DeviceFullError, match="ENOSPC"):
            conn.put(big, ".ramp-edge/artifacts/big.gguf")
        assert conn.run(["true"]).ok  # still connected: not "connection lost"
    assert list((small_disk.home / ".ramp-edge").rglob("*.partial")) == []


@pytest.mark.ssh
def test_7_fleet_clean_removes_old_artifacts_and_partials(fleet, tmp_path, invoke, user_home):
    device = fleet[2]
    pin(user_home, [device])
    art = device.home / ".ramp-edge" / "artifacts"
    art.mkdir(parents=True, exist_ok=True)
    (art / "old.gguf").write_bytes(b"x" * 100)
    (art / "keep.gguf").write_bytes(b"y" * 10)
    (art / "0123456789ab-keep.gguf").write_bytes(b"k" * 10)  # pushed as <sha12>-<name>
    (art / "0123456789ab-old.gguf").write_bytes(b"o" * 10)
    (art / "half.gguf.partial").write_bytes(b"z" * 10)
    inv = write_inventory(tmp_path / "fleet.yml", [device], key=device.key_path)
    result = invoke(["fleet", "clean", "-i", inv, "--keep", "keep.gguf"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in art.iterdir()) == ["0123456789ab-keep.gguf", "keep.gguf"]


# --------------------------------------------------------------------------- 9. Python 3.8


def _python38() -> str | None:
    candidates = sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python"))
    candidates += sorted(Path("/root").glob(".pyenv/versions/3.8*/bin/python"))
    for python in [str(p) for p in candidates] + ["python3.8"]:
        try:
            if subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0:
                return python
        except OSError:
            continue
    return None


@pytest.mark.ssh
def test_9_the_agent_bundle_runs_under_python_38_over_ssh(fleet):
    """The agent and every module shipped with it run on the oldest Python they claim."""
    from ramp_edge.agent_client import Agent, agent_bundle

    python = _python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter here (install one: pyenv install 3.8)")
    for local, _ in agent_bundle():  # syntax of every shipped file, under 3.8 itself
        out = subprocess.run([python, "-m", "py_compile", str(local)], capture_output=True)
        assert out.returncode == 0, out.stderr.decode()
    with connect(fleet[0], python=python) as conn:
        agent = Agent(conn)
        agent.install()
        probe = agent.probe()
        env = agent.env_check()
        assert probe["python"]["version"].startswith("3.8") and env["python_ok"]
        assert env["missing_scorer_modules"] == []
        # the scorer modules import under 3.8 (numpy and llama_cpp stubbed: 3.8 has neither)
        stub = "import sys,types; [sys.modules.setdefault(m, types.ModuleType(m)) for m in "
        stub += "('numpy','llama_cpp')]; sys.path.insert(0, '.ramp-edge/agent'); "
        stub += "import ramp_edge.evaluate.tasks, ramp_edge.evaluate.runner, "
        stub += "ramp_edge.evaluate.loglik, ramp_edge.errors; print('ok')"
        assert conn.run([python, "-c", stub]).stdout.strip() == "ok"
        with pytest.raises(Exception) as info:  # bad input is a protocol error, not a crash
            agent.call("bench", ["--model", "missing.gguf", "--n-batch", "0"], timeout=60)
        assert getattr(info.value, "kind", None) in ("missing_dependency", "bad_input")
