"""Helpers for the fleet tests: loopback sshd devices, a shaping proxy, memory caps.

Recipe: ../shared/research/ssh-testing.md §2. Device i listens on 127.0.0.(i+2):<free port> with
its own host key, authorized_keys and home directory; a ForceCommand wrapper makes every exec
and SFTP session start in that home. Key-only auth (ed25519), host keys pinned in a test
known_hosts file. Every address is asserted to be loopback. Tests skip (with the reason) when
sshd is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
)
SFTP_SERVER = next((p for p in SFTP_CANDIDATES if os.path.exists(p)), SFTP_CANDIDATES[0])
PYTHON = sys.executable  # the agent runs with this venv's python on the simulated devices

DEVICE_SHELL = """#!/bin/sh
# ForceCommand wrapper: every command and every SFTP connection starts in this device's home.
cd "$FLEET_HOME" || exit 1
case "$SSH_ORIGINAL_COMMAND" in
  {sftp}*) exec {sftp} -d "$FLEET_HOME" ;;
  "") exec /bin/sh ;;
esac
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


def assert_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"tests must stay on loopback, got {host}")


def free_port(host: str) -> int:
    assert_loopback(host)
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _keygen(path: str, comment: str) -> None:
    if not os.path.exists(path):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], check=True
        )


def _wait_banner(
    host: str, port: int, proc: subprocess.Popen, logpath: str, timeout: float = 10.0
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited rc={proc.returncode}: {Path(logpath).read_text()}")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"sshd on {host}:{port} did not come up")


@dataclasses.dataclass
class Device:
    name: str
    host: str
    port: int
    user: str
    key_path: str  # client private key
    host_pub: str  # "ssh-ed25519 AAAA..." of this device's host key
    home: Path
    workdir: Path
    proc: subprocess.Popen | None = None

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        return f"[{host or self.host}]:{port or self.port} {self.host_pub}"

    # -- lifecycle

    def start(self) -> Device:
        assert_loopback(self.host)
        cfg = self.workdir / "sshd_config"
        log = self.workdir / "sshd.log"
        with open(log, "ab") as handle:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(cfg)],
                stdout=handle,
                stderr=handle,
                start_new_session=True,
            )
        _wait_banner(self.host, self.port, self.proc, str(log))
        return self

    def kill_all(self) -> None:
        """SIGKILL this device's sshd listener and every session process it forked."""
        import psutil

        if self.proc is None:
            return
        try:
            parent = psutil.Process(self.proc.pid)
            victims = [*parent.children(recursive=True), parent]
        except psutil.NoSuchProcess:
            victims = []
        for proc in victims:  # only PIDs this fixture started (and their children)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill_all()

    def restart(self) -> Device:
        self.kill_all()
        return self.start()


def make_device(
    workdir: Path, name: str, host: str, client_key: str, extra_config: str = ""
) -> Device:
    assert_loopback(host)
    if not os.path.exists(SSHD):
        pytest.skip("openssh-server is not installed (apt-get install openssh-server)")
    if not os.path.exists(SFTP_SERVER):
        pytest.skip(f"sftp-server not found at {SFTP_SERVER}")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privsep dir of a root sshd
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    hk = str(workdir / "host_ed25519")
    _keygen(hk, f"{name}-host")
    shutil.copy(client_key + ".pub", workdir / "authorized_keys")
    shell = workdir / "device-shell"
    shell.write_text(DEVICE_SHELL.format(sftp=SFTP_SERVER))
    shell.chmod(0o755)
    (workdir / "sshd_config").write_text(
        f"""ListenAddress {host}:{port}
HostKey {hk}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp {SFTP_SERVER}
SetEnv FLEET_DEVICE={name} FLEET_HOME={home} HOME={home}
ForceCommand {shell}
LogLevel VERBOSE
MaxStartups 100:30:200
{extra_config}
"""
    )
    host_pub = " ".join(Path(hk + ".pub").read_text().split()[:2])
    device = Device(name, host, port, getpass.getuser(), client_key, host_pub, home, workdir)
    return device.start()


def connect(
    device: Device, known_hosts: Path | None = None, via: tuple[str, int] | None = None, **options
):
    """A ramp_edge Connection to `device` with its host key pinned (or `known_hosts` as given)."""
    from ramp_edge.fleet.ssh import Connection

    host, port = via or (device.host, device.port)
    assert_loopback(host)
    if known_hosts is None:
        known_hosts = device.workdir / f"known_hosts-{host}-{port}"
        known_hosts.write_text(device.known_hosts_line(host, port) + "\n")
    options.setdefault("python", PYTHON)
    return Connection(
        host,
        port=port,
        user=device.user,
        key_filename=device.key_path,
        name=device.name,
        known_hosts=[known_hosts],
        ssh_config=False,
        allow_agent=False,
        look_for_keys=False,
        **options,
    )


def _connector_for(devices: list[Device], **options):
    """Host -> pinned Connection, for bench_fleet(connect=...)."""
    by_name = {d.name: d for d in devices}
    return lambda host: connect(by_name[host.name], **options)


# device profile (device_profiles/<id>.toml) each simulated device stands in for
PROFILES = {"pi4": "raspberry-pi-4-4gb", "orin": "jetson-orin-nano-8gb", "laptop": "laptop-x86"}


def client_home(home: Path, device: Device, key: str) -> Path:
    """A HOME whose ~/.ssh/config gives the client key and pins the device's host key."""
    (home / ".ssh").mkdir(parents=True)
    known = home / ".ssh" / "known_hosts"
    known.write_text(device.known_hosts_line() + "\n")
    (home / ".ssh" / "config").write_text(
        f"Host {device.host}\n  IdentityFile {key}\n  UserKnownHostsFile {known}\n"
    )
    return home


def device_python(device: Device) -> None:
    """The device's `.ramp-edge/venv/bin/python` runs this checkout's venv (no bootstrap)."""
    python = device.home / ".ramp-edge" / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)


def profile_of(device: Device) -> str:
    return PROFILES.get(device.name, "laptop-x86")


def write_inventory(path: Path, devices: list[Device], *, key: str) -> Path:
    """An Ansible YAML inventory for `devices`, each with a `device:` profile."""
    lines = [
        "all:",
        "  vars:",
        f"    ansible_user: {getpass.getuser()}",
        f"    ansible_ssh_private_key_file: {key}",
        f"    ansible_python_interpreter: {PYTHON}",
        "  hosts:",
    ]
    for d in devices:
        address = f"ansible_host: {d.host}, ansible_port: {d.port}"
        lines.append(f"    {d.name}: {{{address}, device: {profile_of(d)}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- link shaping


class ShapingProxy:
    """Loopback TCP proxy (research §5); modes "up" | "blackhole" | "refuse"."""

    def __init__(
        self, listen: tuple[str, int], target: tuple[str, int], rate_bps: float | None = None
    ) -> None:
        for h, _ in (listen, target):
            assert_loopback(h)
        self.listen, self.target, self.rate = listen, target, rate_bps
        self.mode = "up"
        self.conns: list = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, *self.listen))
        self._ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader, writer) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=64)
        last = 0.0

        async def rx() -> None:
            nonlocal last
            while True:
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
                try:
                    data = await reader.read(16384)
                except OSError:
                    data = b""
                due = max(last, loop.time())
                if self.rate and data:
                    due = max(due, last) + len(data) * 8 / self.rate
                last = due
                await queue.put((due, data))
                if not data:
                    return

        async def tx() -> None:
            while True:
                due, data = await queue.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.write_eof()
                    return
                writer.write(data)
                try:
                    await writer.drain()
                except OSError:
                    return

        await asyncio.gather(rx(), tx(), return_exceptions=True)

    async def _handle(self, client_reader, client_writer) -> None:
        if self.mode == "refuse":
            client_writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self.conns.append((client_writer, up_writer))
        await asyncio.gather(
            self._pipe(client_reader, up_writer),
            self._pipe(up_reader, client_writer),
            return_exceptions=True,
        )
        client_writer.close()
        up_writer.close()

    def set_mode(self, mode: str) -> None:
        self.mode = mode

    def close(self) -> None:
        async def shutdown() -> None:
            for pair in self.conns:
                for writer in pair:
                    writer.transport.abort()
            self.server.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


# --------------------------------------------------------------------------- cgroup caps


def _memory_cgroup_root() -> Path | None:
    """This process's cgroup v1 memory directory, when writable (research §7)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (base / "memory.limit_in_bytes").exists() and os.access(base, os.W_OK):
                return base
    v2 = Path("/sys/fs/cgroup")
    if (
        "memory" in (v2 / "cgroup.controllers").read_text().split()
        if (v2 / "cgroup.controllers").exists()
        else []
    ):
        own = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), None)
        if own is not None and os.access(v2 / own.lstrip("/"), os.W_OK):
            return v2 / own.lstrip("/")
    return None


class MemoryCap:
    """Put a device's sshd listener in a memory cgroup; its sessions inherit the cap."""

    def __init__(self, device: Device, limit_bytes: int) -> None:
        root = _memory_cgroup_root()
        if root is None:
            pytest.skip("no writable memory cgroup controller (v1 memory or v2 memory.max)")
        self.v2 = not (root / "memory.limit_in_bytes").exists()
        self.path = root / f"ramp-test-{device.name}-{os.getpid()}-{random.randrange(1 << 30)}"
        try:
            self.path.mkdir()
            if self.v2:
                (self.path / "memory.max").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):
                    (self.path / "memory.swap.max").write_text("0")
            else:
                (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                with contextlib.suppress(OSError):
                    (self.path / "memory.swappiness").write_text("0")
            assert device.proc is not None
            (self.path / "cgroup.procs").write_text(str(device.proc.pid))
        except OSError as err:
            with contextlib.suppress(OSError):
                self.path.rmdir()
            pytest.skip(f"cannot use a memory cgroup here: {err}")

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
