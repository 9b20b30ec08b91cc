"""The results database: SQLite in WAL mode, schema changes as ordered migration functions.

One file (`$RAMP_EDGE_HOME/results.sqlite` by default) holds every result ramp-edge measures:
generic rows (`add_result`: a kind, the device and host it ran on, the artifact, a JSON
payload) and measured device profiles. Each write commits at once, so a fleet run keeps the
results of the hosts that finished when another fails. WAL lets readers (`ramp-edge results`)
run while a writer is busy; a lock serializes the threads of one process.

To change the schema, append a function to MIGRATIONS; never edit or reorder existing ones.
A database written by a newer ramp-edge (more migrations than this one knows) is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp_edge import __version__, paths
from ramp_edge.device.profiles import DeviceProfile, MeasuredProfile, load_profile, resolve_name
from ramp_edge.errors import ArtifactError, RampEdgeError

logger = logging.getLogger(__name__)


class StoreError(RampEdgeError):
    """The results database cannot be read or written (locked, read-only, disk full)."""


@contextlib.contextmanager
def _db_errors(path: Path, doing: str) -> Iterator[None]:
    """sqlite3 errors -> one-line StoreError naming the file and what to do."""
    try:
        yield
    except sqlite3.OperationalError as err:
        text = str(err)
        hint = ""
        if "locked" in text or "busy" in text:
            hint = "; another ramp-edge is writing it: wait for it or retry"
        elif "readonly" in text or "read-only" in text:
            hint = "; make it writable or point RAMP_EDGE_HOME elsewhere"
        elif "disk" in text or "full" in text:
            hint = "; free disk space"
        raise StoreError(f"results database {path}: cannot {doing}: {text}{hint}") from None
    except sqlite3.DatabaseError as err:
        raise ArtifactError(f"{path} is not a usable results database ({err})") from None


DEFAULT_NAME = "results.sqlite"
PROFILE_KIND = "device-profile"


def _m001_results(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            device TEXT NOT NULL,
            host TEXT NOT NULL,
            artifact TEXT NOT NULL,
            created_utc TEXT NOT NULL,
            payload TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX results_kind_device ON results (kind, device)")


def _m002_measured_profiles(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE measured_profiles (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            device TEXT NOT NULL,
            host TEXT NOT NULL,
            created_utc TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            ramp_edge_version TEXT NOT NULL,
            payload TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX measured_profiles_device ON measured_profiles (device, id)")


def _m003_results_artifact_sha256(db: sqlite3.Connection) -> None:
    """Results are identified by the artifact's sha256, not its file name (two different files
    called model.gguf must never share results); older rows get it from their payload."""
    db.execute("ALTER TABLE results ADD COLUMN artifact_sha256 TEXT NOT NULL DEFAULT ''")
    for row_id, text in db.execute("SELECT id, payload FROM results").fetchall():
        try:
            sha = json.loads(text).get("artifact_sha256") or ""
        except (ValueError, AttributeError):
            sha = ""
        if sha:
            db.execute("UPDATE results SET artifact_sha256 = ? WHERE id = ?", (str(sha), row_id))
    db.execute("CREATE INDEX results_artifact_sha256 ON results (artifact_sha256)")


# Applied in order; the schema version of a database is the number applied.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_results,
    _m002_measured_profiles,
    _m003_results_artifact_sha256,
]


def _now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One stored result. `payload` is the JSON object stored with it (a fresh dict per read).

    `artifact` is the file name, for people; `artifact_sha256` is the artifact's identity
    ("" for results stored without one).
    """

    id: int
    kind: str
    device: str
    host: str
    artifact: str
    created_utc: str
    payload: dict[str, Any]
    artifact_sha256: str = ""

    @property
    def artifact_key(self) -> str:
        """What identifies the artifact: its sha256, or its name for rows stored without one."""
        return self.artifact_sha256 or f"name:{self.artifact}"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRow:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


class Store:
    """The results database. Safe to share between threads; use as a context manager to close."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else paths.home() / DEFAULT_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # autocommit mode: each statement commits unless inside an explicit transaction
            self._db = sqlite3.connect(
                self.path, timeout=10.0, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA busy_timeout = 10000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("%s: journal mode is %s, not WAL", self.path, mode)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.OperationalError as err:
            with _db_errors(self.path, "open it"):
                raise err from None
        except sqlite3.DatabaseError as err:
            raise ArtifactError(f"{self.path} is not a usable results database ({err})") from None

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        with self._lock:
            db = self._db
            db.execute(
                "CREATE TABLE IF NOT EXISTS _migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_utc TEXT NOT NULL)"
            )
            current = db.execute("SELECT COALESCE(MAX(version), 0) FROM _migrations").fetchone()[0]
            if current > len(MIGRATIONS):
                raise ArtifactError(
                    f"{self.path} has schema version {current}, newer than this ramp-edge supports "
                    f"({len(MIGRATIONS)}); upgrade ramp-edge"
                )
            for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
                logger.debug("%s: applying migration %d %s", self.path, version, migration.__name__)
                db.execute("BEGIN IMMEDIATE")
                try:
                    # another process may have migrated while we waited for the write lock
                    done = db.execute(
                        "SELECT 1 FROM _migrations WHERE version = ?", (version,)
                    ).fetchone()
                    if done is None:
                        migration(db)
                        db.execute(
                            "INSERT INTO _migrations (version, name, applied_utc) VALUES (?, ?, ?)",
                            (version, migration.__name__, _now_utc()),
                        )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(
                self._db.execute("SELECT COALESCE(MAX(version), 0) FROM _migrations").fetchone()[0]
            )

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    # -- generic results -------------------------------------------------------------------

    def add_result(
        self,
        kind: str,
        device: str,
        host: str,
        artifact: str,
        payload: dict[str, Any],
        artifact_sha256: str | None = None,
    ) -> int:
        """Store one result and commit at once; returns its id.

        `artifact_sha256` identifies the artifact (default: the payload's `artifact_sha256`).
        """
        if not kind:
            raise RampEdgeError("a result needs a kind")
        try:
            text = json.dumps(payload, sort_keys=True, allow_nan=True)
        except (TypeError, ValueError) as err:
            raise RampEdgeError(
                f"result payload for {kind} is not JSON-serializable: {err}"
            ) from None
        sha = str(artifact_sha256 or payload.get("artifact_sha256") or "")
        with self._lock, _db_errors(self.path, "store a result"):
            cur = self._db.execute(
                "INSERT INTO results "
                "(kind, device, host, artifact, created_utc, payload, artifact_sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, device, host, artifact, _now_utc(), text, sha),
            )
            return int(cur.lastrowid or 0)

    def results(
        self,
        kind: str | None = None,
        device: str | None = None,
        artifact_sha256: str | None = None,
    ) -> list[ResultRow]:
        """Stored results, oldest first, optionally filtered by kind, device and artifact."""
        sql = (
            "SELECT id, kind, device, host, artifact, created_utc, payload, artifact_sha256 "
            "FROM results"
        )
        where, args = [], []
        if artifact_sha256 is not None:
            where.append("artifact_sha256 = ?")
            args.append(artifact_sha256)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if device is not None:
            where.append("device = ?")
            args.append(device)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self._lock, _db_errors(self.path, "read results"):
            rows = self._db.execute(sql, args).fetchall()
        return [
            ResultRow(r[0], r[1], r[2], r[3], r[4], r[5], self._load_json(r[6], r[0]), r[7])
            for r in rows
        ]

    def _load_json(self, text: str, row_id: int) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{self.path}: row {row_id} holds invalid JSON ({err})") from None
        if not isinstance(value, dict):
            raise ArtifactError(f"{self.path}: row {row_id} payload is not a JSON object")
        return value

    # -- measured device profiles ------------------------------------------------------------

    def save_measured_profile(self, measured: MeasuredProfile) -> int:
        """Store a measurement (with its time and agent version); returns its id."""
        with self._lock, _db_errors(self.path, "store a measured profile"):
            cur = self._db.execute(
                "INSERT INTO measured_profiles "
                "(device, host, created_utc, agent_version, ramp_edge_version, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    measured.device,
                    measured.host,
                    measured.created_utc,
                    measured.agent_version,
                    __version__,
                    json.dumps(measured.to_dict(), sort_keys=True),
                ),
            )
            return int(cur.lastrowid or 0)

    def measured_profiles(self, device: str | None = None) -> list[MeasuredProfile]:
        """Stored measurements, oldest first."""
        sql = "SELECT id, payload FROM measured_profiles"
        args: tuple[str, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            args = (device,)
        with self._lock, _db_errors(self.path, "read measured profiles"):
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        out = []
        for row_id, text in rows:
            try:
                out.append(MeasuredProfile.from_dict(self._load_json(text, row_id)))
            except (KeyError, TypeError, ValueError) as err:
                raise ArtifactError(
                    f"{self.path}: measured profile {row_id} is malformed ({err})"
                ) from None
        return out

    def latest_measured_profile(self, device: str) -> MeasuredProfile | None:
        """The newest measurement stored for `device` (an id, not an alias), or None."""
        with self._lock, _db_errors(self.path, "read measured profiles"):
            row = self._db.execute(
                "SELECT id, payload FROM measured_profiles WHERE device = ? "
                "ORDER BY id DESC LIMIT 1",
                (device,),
            ).fetchone()
        if row is None:
            return None
        try:
            return MeasuredProfile.from_dict(self._load_json(row[1], row[0]))
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(
                f"{self.path}: measured profile {row[0]} is malformed ({err})"
            ) from None

    def profile(self, name: str) -> DeviceProfile:
        """The static profile `name` (id or alias) with its latest measurement merged over it."""
        pid = resolve_name(name)
        return load_profile(pid, measured=self.latest_measured_profile(pid))
