"""fleet.group fan-out with fake connections: bounded parallelism and failure isolation."""

from __future__ import annotations

import threading
import time

import pytest

from ramp_edge.errors import RemoteError
from ramp_edge.fleet.group import FleetError, run_on_hosts
from ramp_edge.fleet.hosts import Host


class FakeConnection:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.name = host.name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def hosts(n: int) -> tuple[Host, ...]:
    return tuple(Host(name=f"h{i}", address=f"127.0.0.{i + 2}") for i in range(n))


def test_bounded_parallelism_and_order():
    lock = threading.Lock()
    running, peak = 0, 0

    def work(conn: FakeConnection) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return conn.name.upper()

    result = run_on_hosts(hosts(6), work, forks=2, connect=FakeConnection)
    assert result.ok and peak == 2
    assert [o.value for o in result.outcomes] == ["H0", "H1", "H2", "H3", "H4", "H5"]


def test_one_failure_never_stops_the_others_and_done_runs_per_host():
    done: list[str] = []
    conns: list[FakeConnection] = []

    def connect(host: Host) -> FakeConnection:
        if host.name == "h1":
            raise RemoteError("h1: cannot reach 127.0.0.3:22: Connection refused")
        conn = FakeConnection(host)
        conns.append(conn)
        return conn

    def work(conn: FakeConnection) -> int:
        if conn.name == "h2":
            raise ValueError("boom")
        return 1

    result = run_on_hosts(
        hosts(4),
        work,
        forks=4,
        connect=connect,
        on_done=lambda host, outcome: done.append(host.name),
    )
    assert [o.ok for o in result.outcomes] == [True, False, False, True]
    assert result["h1"].exit_code == 7 and "Connection refused" in result["h1"].error
    assert result["h2"].error == "ValueError: boom" and result["h2"].exit_code is None
    assert sorted(done) == ["h0", "h1", "h2", "h3"]
    assert all(c.closed for c in conns)
    with pytest.raises(FleetError, match="2 of 4 hosts failed: h1") as info:
        result.raise_on_failure()
    assert info.value.result is result and info.value.exit_code == 7
    assert result.to_dict()["hosts"][0] == {
        "host": "h0",
        "ok": True,
        "value": 1,
        "error": None,
        "error_type": None,
        "exit_code": None,
        "duration_s": result.outcomes[0].to_dict()["duration_s"],
    }


def test_bad_forks_and_duplicate_hosts():
    with pytest.raises(ValueError, match="forks"):
        run_on_hosts(hosts(1), lambda c: 1, forks=0, connect=FakeConnection)
    with pytest.raises(ValueError, match="duplicate"):
        run_on_hosts(hosts(1) * 2, lambda c: 1, connect=FakeConnection)
