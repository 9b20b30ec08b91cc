"""Fan a fleet operation out over hosts with bounded parallelism and per-host failure isolation.

A fleet operation is a function ``(Connection) -> T``. `run_on_hosts` opens one connection per
host in a daemon worker thread (at most `forks` at once), calls the function, and collects a
`HostOutcome` per host: the value, or the error that stopped that host. One dead host never
stops the others. `on_done` runs in the calling thread as each host finishes, so a caller can
commit that host's result to SQLite at once (a crash later keeps every finished result).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ramp_edge.errors import RampEdgeError, RemoteError
from ramp_edge.fleet.hosts import Host
from ramp_edge.fleet.transport import CancelledError, Transport, second_interrupt_aborts

logger = logging.getLogger(__name__)

T = TypeVar("T")

StatusFn = Callable[[str, str], None]  # (host name, status text)


@dataclass(frozen=True, slots=True)
class HostOutcome(Generic[T]):
    """What happened on one host: `value` when ok, else `error` (one line) and its type."""

    host: str
    ok: bool
    value: T | None = None
    error: str | None = None
    error_type: str | None = None
    exit_code: int | None = None
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.ok and not self.error:
            raise ValueError(f"failed outcome for {self.host} needs an error")

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if hasattr(value, "to_dict"):
            value = value.to_dict()  # type: ignore[union-attr]
        return {
            "host": self.host,
            "ok": self.ok,
            "value": value,
            "error": self.error,
            "error_type": self.error_type,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True, slots=True)
class FleetResult(Generic[T]):
    """Per-host outcomes in inventory order."""

    outcomes: tuple[HostOutcome[T], ...]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def succeeded(self) -> tuple[HostOutcome[T], ...]:
        return tuple(o for o in self.outcomes if o.ok)

    @property
    def failed(self) -> tuple[HostOutcome[T], ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    def __getitem__(self, host: str) -> HostOutcome[T]:
        for outcome in self.outcomes:
            if outcome.host == host:
                return outcome
        raise KeyError(host)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "hosts": [o.to_dict() for o in self.outcomes]}

    def raise_on_failure(self) -> FleetResult[T]:
        if not self.ok:
            raise FleetError(self)
        return self


class FleetError(RemoteError):
    """Some hosts failed; `result` holds every host's outcome, successes included."""

    def __init__(self, result: FleetResult[Any]) -> None:
        failed = result.failed
        names = ", ".join(f"{o.host} ({o.error})" for o in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        super().__init__(f"{len(failed)} of {len(result.outcomes)} hosts failed: {names}{more}")
        self.result = result


def connect_host(host: Host, **options: Any) -> Transport:
    """A fleet.ssh.Connection for a host (paramiko is imported here, lazily)."""
    from ramp_edge.fleet.ssh import Connection

    return Connection(
        host.address,
        port=host.port,
        user=host.user,
        key_filename=host.key_file,
        name=host.name,
        python=host.python,
        **options,
    )


def _describe(err: BaseException) -> tuple[str, str, int | None]:
    if isinstance(err, RampEdgeError):
        return str(err), type(err).__name__, err.exit_code
    return f"{type(err).__name__}: {err}", type(err).__name__, None


def run_on_hosts(
    hosts: Sequence[Host],
    fn: Callable[[Any], T],
    *,
    forks: int = 5,
    connect: Callable[[Host], Any] | None = None,
    on_done: Callable[[Host, HostOutcome[T]], None] | None = None,
    on_status: StatusFn | None = None,
    cancel_grace_s: float = 10.0,
    deadline_s: float | None = None,
    keep_values: bool = True,
) -> FleetResult[T]:
    """Run `fn(connection)` on every host, at most `forks` at a time.

    Args:
        hosts: inventory hosts, in the order the result should list them.
        fn: the operation; gets an opened connection.
        forks: maximum hosts in flight (Ansible's --forks).
        connect: Host -> connection; default `connect_host` with default options.
        on_done: called in this thread with each host's outcome as soon as it finishes.
        on_status: (host, text) status updates for a live view; may be called from workers.
        cancel_grace_s: after Ctrl-C, seconds to wait for in-flight hosts to stop their remote
            side before their links are closed.
        deadline_s: per-host limit from its connect on; a host past it is cancelled, its link
            closed, and it fails with a RemoteError (exit 7) naming the deadline.
        keep_values: False drops each value once `on_done` has it (e.g. committed it to
            SQLite): the result then holds O(1) per finished host, for fleets of hundreds.

    Returns:
        FleetResult with one outcome per host. Exceptions from `fn` or the connection become
        failed outcomes; only KeyboardInterrupt propagates (finished hosts were already passed
        to `on_done`).

    Ctrl-C: every in-flight connection is cancelled (`conn.cancel()`: the remote process group
    is killed and partial uploads removed), queued hosts never start, and KeyboardInterrupt is
    re-raised once they stopped (at most `cancel_grace_s` + a few seconds). A second Ctrl-C
    during that exits at once with status 130. Workers are daemon threads, so the interpreter
    never waits for a host that does not stop.
    """
    if forks < 1:
        raise ValueError(f"forks must be >= 1, got {forks}")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError("duplicate host names")
    connect = connect or connect_host
    status = on_status or (lambda host, text: None)
    cancelled = threading.Event()
    slots = threading.Semaphore(min(forks, max(1, len(hosts))))
    finished: queue.Queue[tuple[Host, HostOutcome[T]]] = queue.Queue()
    live: dict[str, Any] = {}  # host name -> its open connection
    live_lock = threading.Lock()
    started: dict[str, float] = {}  # host name -> monotonic start, while in flight
    expired: set[str] = set()  # hosts stopped by the deadline

    def work(host: Host) -> HostOutcome[T]:
        start = time.monotonic()
        with live_lock:
            started[host.name] = start
        conn = None
        try:
            if cancelled.is_set():
                raise CancelledError(f"{host.name}: cancelled before it started")
            status(host.name, "connecting")
            conn = connect(host)
            with live_lock:
                live[host.name] = conn
            if cancelled.is_set():
                raise CancelledError(f"{host.name}: cancelled")
            if hasattr(conn, "open"):
                conn.open()
            value = fn(conn)
            return HostOutcome(host.name, True, value, duration_s=time.monotonic() - start)
        except Exception as err:  # every failure is this host's, never the fleet's
            message, kind, code = _describe(err)
            if host.name in expired:
                message = f"{host.name}: stopped at the {deadline_s:g} s per-host deadline"
                kind, code = "RemoteError", RemoteError.exit_code
            logger.debug("%s failed", host.name, exc_info=True)
            return HostOutcome(
                host.name, False, None, message, kind, code, time.monotonic() - start
            )
        finally:
            with live_lock:
                live.pop(host.name, None)
                started.pop(host.name, None)
            if conn is not None and hasattr(conn, "close"):
                try:
                    conn.close()
                except Exception:  # closing a dead link must not mask the result
                    logger.debug("%s: close failed", host.name, exc_info=True)

    # `forks` workers pull hosts from a queue: threads and open links stay bounded however
    # long the inventory is (hundreds of hosts -> `forks` threads, not one per host).
    todo: queue.SimpleQueue[Host] = queue.SimpleQueue()
    for host in hosts:
        todo.put(host)

    def worker() -> None:
        while True:
            try:
                host = todo.get_nowait()
            except queue.Empty:
                return
            with slots:
                outcome = work(host)
            finished.put((host, outcome))

    threads = [
        threading.Thread(target=worker, name=f"fleet worker {i}", daemon=True)
        for i in range(min(forks, max(1, len(hosts))))
    ]
    outcomes: dict[str, HostOutcome[T]] = {}

    def enforce_deadline() -> None:
        if deadline_s is None:
            return
        now = time.monotonic()
        with live_lock:
            late = [n for n, t in started.items() if now - t > deadline_s and n not in expired]
            conns = [(n, live.get(n)) for n in late]
            expired.update(late)
        for name, conn in conns:
            logger.warning("%s: past the %.0f s deadline; stopping it", name, deadline_s)
            for stop in ("cancel", "close"):  # cancel kills the remote side; close unblocks
                if conn is not None and hasattr(conn, stop):
                    with contextlib.suppress(Exception):
                        getattr(conn, stop)()

    def land(host: Host, outcome: HostOutcome[T]) -> None:
        outcomes[host.name] = outcome
        status(host.name, "done" if outcome.ok else f"failed: {outcome.error}")
        if outcome.ok:
            logger.info("%s: done in %.1f s", host.name, outcome.duration_s)
        else:
            logger.warning("%s: %s", host.name, outcome.error)
        if on_done is not None:
            on_done(host, outcome)
        if not keep_values and outcome.value is not None:
            outcomes[host.name] = dataclasses.replace(outcome, value=None)

    try:
        for thread in threads:
            thread.start()
        while len(outcomes) < len(hosts):
            try:
                host, outcome = finished.get(timeout=0.2)
            except queue.Empty:
                enforce_deadline()
                continue
            land(host, outcome)
            enforce_deadline()
    except KeyboardInterrupt:
        with second_interrupt_aborts("stopping the fleet"):
            _cancel_in_flight(
                cancelled, live, live_lock, finished, outcomes, hosts, land, cancel_grace_s
            )
        raise
    return FleetResult(tuple(outcomes[name] for name in names))


def _cancel_in_flight(
    cancelled: threading.Event,
    live: dict[str, Any],
    live_lock: threading.Lock,
    finished: queue.Queue[Any],
    outcomes: dict[str, Any],
    hosts: Sequence[Host],
    land: Callable[[Host, Any], None],
    grace_s: float,
) -> None:
    """Stop every in-flight host after Ctrl-C; hosts that finish meanwhile still land."""
    cancelled.set()
    with live_lock:
        conns = list(live.items())
    logger.warning("interrupted: stopping %d in-flight host(s)", len(conns))
    for name, conn in conns:
        if hasattr(conn, "cancel"):
            try:
                conn.cancel()
            except Exception:
                logger.debug("%s: cancel failed", name, exc_info=True)
    deadline = time.monotonic() + grace_s
    closed = False
    while len(outcomes) < len(hosts):
        left = deadline - time.monotonic()
        if left <= 0:
            if closed:
                break
            # still running: close the links (unblocks any paramiko call), then a last wait
            with live_lock:
                stuck = list(live.items())
            for name, conn in stuck:
                logger.warning("%s: did not stop in %.0f s; closing its link", name, grace_s)
                with contextlib.suppress(Exception):
                    conn.close()
            closed = True
            deadline = time.monotonic() + 3.0
            continue
        try:
            host, outcome = finished.get(timeout=min(0.2, left))
        except queue.Empty:
            continue
        if outcome.ok:  # finished its work before the cancel reached it: keep it
            land(host, outcome)
        else:
            outcomes[host.name] = outcome
