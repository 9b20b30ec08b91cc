"""Fleets of hundreds: bounded workers, a per-host deadline, O(1) per finished host, 50 real hosts.

The 50-host run uses 10 loopback sshd devices (127.0.0.20-29), each listening on 5 ports: 50
inventory hosts, each its own SSH connection. Every result is committed to SQLite as it lands
and the fan-out keeps no values (keep_values=False). bench/fleet_scale.md has the numbers.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from ramp_edge.fleet.group import run_on_hosts
from ramp_edge.fleet.hosts import Host


class FakeConnection:
    def __init__(self, host: Host) -> None:
        self.name = host.name
        self.closed = threading.Event()

    def cancel(self) -> None:
        self.closed.set()

    def close(self) -> None:
        self.closed.set()


def _hosts(n: int) -> tuple[Host, ...]:
    return tuple(Host(name=f"h{i}", address="127.0.0.1") for i in range(n))


def test_workers_are_bounded_by_forks_not_hosts():
    peak = 0
    base = threading.active_count()

    def work(conn: FakeConnection) -> int:
        nonlocal peak
        peak = max(peak, threading.active_count() - base)
        time.sleep(0.002)
        return 1

    result = run_on_hosts(_hosts(300), work, forks=8, connect=FakeConnection)
    assert result.ok and len(result.outcomes) == 300
    assert peak <= 8


def test_deadline_stops_a_stuck_host_and_the_rest_finish():
    def work(conn: FakeConnection) -> str:
        if conn.name == "h1":
            if not conn.closed.wait(30):  # stuck until the deadline closes the link
                return "never stopped"
            raise OSError("link closed")
        return "ok"

    start = time.monotonic()
    result = run_on_hosts(_hosts(4), work, forks=4, connect=FakeConnection, deadline_s=0.5)
    assert time.monotonic() - start < 5
    stuck = result["h1"]
    assert not stuck.ok and stuck.exit_code == 7 and "0.5 s per-host deadline" in stuck.error
    assert [o.ok for o in result.outcomes] == [True, False, True, True]


def test_keep_values_false_hands_each_value_to_on_done_only():
    got: dict[str, str] = {}
    result = run_on_hosts(
        _hosts(5),
        lambda conn: conn.name * 1000,
        forks=2,
        connect=FakeConnection,
        on_done=lambda host, outcome: got.setdefault(host.name, outcome.value),
        keep_values=False,
    )
    assert result.ok and all(o.value is None for o in result.outcomes)
    assert got == {f"h{i}": f"h{i}" * 1000 for i in range(5)}


# --------------------------------------------------------------------------- 50 real hosts

N_DEVICES, PORTS_EACH, FORKS, SLEEP_S = 10, 5, 10, 1.0


@pytest.fixture(scope="module")
def fifty_hosts(tmp_path_factory, client_key):
    """(name, device, host, port) for 50 sshd endpoints: 10 devices x 5 ports on 127.0.0.x."""
    from fleetlib import free_port, make_device

    devices, endpoints = [], []
    try:
        for i in range(N_DEVICES):
            address = f"127.0.0.{20 + i}"
            extra = [free_port(address) for _ in range(PORTS_EACH - 1)]
            device = make_device(
                tmp_path_factory.mktemp(f"d{i}"),
                f"d{i}",
                address,
                client_key,
                "\n".join(f"ListenAddress {address}:{p}" for p in extra),
            )
            devices.append(device)
            for j, port in enumerate([device.port, *extra]):
                endpoints.append((f"d{i}p{j}", device, address, port))
        yield endpoints
    finally:
        for device in devices:
            device.stop()


def _fan_out(endpoints, forks: int, db_path) -> tuple[float, object]:
    from fleetlib import connect

    by_name = {name: (device, address, port) for name, device, address, port in endpoints}
    hosts = [Host(name=name, address=addr, port=port) for name, _, addr, port in endpoints]
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE IF NOT EXISTS results (host TEXT PRIMARY KEY, ok INT, out TEXT)")

    def link(host: Host):
        device, address, port = by_name[host.name]
        return connect(device, via=(address, port))

    def work(conn) -> str:
        done = conn.run(["sh", "-c", f"sleep {SLEEP_S}; echo $FLEET_DEVICE"])
        return done.stdout.strip()

    def store(host: Host, outcome) -> None:  # in the calling thread, as each host lands
        db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?)",
            (host.name, int(outcome.ok), outcome.value if outcome.ok else outcome.error),
        )
        db.commit()

    start = time.monotonic()
    result = run_on_hosts(
        hosts, work, forks=forks, connect=link, on_done=store, keep_values=False, deadline_s=120
    )
    wall = time.monotonic() - start
    db.close()
    return wall, result


@pytest.mark.slow
@pytest.mark.ssh
def test_fifty_hosts_all_results_stored_within_the_fork_bound(fifty_hosts, tmp_path):
    assert len(fifty_hosts) == N_DEVICES * PORTS_EACH >= 50
    single, one = _fan_out(fifty_hosts[:1], 1, tmp_path / "single.db")
    assert one.ok
    wall, result = _fan_out(fifty_hosts, FORKS, tmp_path / "fleet.db")
    assert result.ok, [o.error for o in result.failed]
    rows = sqlite3.connect(tmp_path / "fleet.db").execute("SELECT host, ok, out FROM results")
    stored = {host: (ok, out) for host, ok, out in rows}
    assert len(stored) == len(fifty_hosts)  # 0 lost results
    assert all(ok == 1 and out == name.split("p")[0] for name, (ok, out) in stored.items())
    bound = len(fifty_hosts) / FORKS * single * 1.3
    print(f"\nfleet scale: single {single:.2f} s, {len(fifty_hosts)} hosts / {FORKS} forks "
          f"{wall:.2f} s, bound {bound:.2f} s")  # fmt: skip
    assert wall <= bound
