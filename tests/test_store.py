"""The results store: migrations, WAL, results, measured profiles."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from ramp_edge.device.profiles import MeasuredProfile, TypeSpeed
from ramp_edge.errors import ArtifactError, RampEdgeError
from ramp_edge.store import MIGRATIONS, ResultRow, Store


def measured(
    device: str = "localhost", when: str = "2026-01-01T00:00:00Z", tg: float = 50.0
) -> MeasuredProfile:
    return MeasuredProfile(
        device=device,
        host="box",
        created_utc=when,
        agent_version="0.1.0+probe.1",
        arch="x86_64",
        cpu="Test CPU",
        cores=4,
        logical_cpus=8,
        cpu_features=("avx2",),
        ram_total_bytes=16 << 30,
        ram_available_bytes=12 << 30,
        bandwidth_copy_bytes_per_s=30e9,
        type_speeds=(TypeSpeed("Q4_0", "m", 100, (("Q4_0", 80),), 4, 16, 8, 100.0, tg, (tg,)),),
    )


def test_default_path_is_under_home(home):
    with Store() as s:
        assert s.path == home / "results.sqlite"
    assert (home / "results.sqlite").exists()


def test_fresh_database_is_migrated_and_wal(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        assert s.schema_version == len(MIGRATIONS) == 3
        assert s.journal_mode == "wal"
    db = sqlite3.connect(tmp_path / "r.sqlite")
    names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY version")]
    assert names == ["_m001_results", "_m002_measured_profiles", "_m003_results_artifact_sha256"]


def test_results_roundtrip_and_filters(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        a = s.add_result(
            "bench", "pi5", "pi@10.0.0.5", "smol.gguf", {"tg": 12.5, "nested": {"x": [1, 2]}}
        )
        b = s.add_result("eval", "pi5", "pi@10.0.0.5", "smol.gguf", {"ppl": 13.5})
        c = s.add_result("bench", "localhost", "vm", "smol.gguf", {"tg": 90.0})
        assert a < b < c
        rows = s.results()
        assert [r.id for r in rows] == [a, b, c]
        assert [r.id for r in s.results(kind="bench")] == [a, c]
        assert [r.id for r in s.results(kind="bench", device="pi5")] == [a]
        row = rows[0]
        assert isinstance(row, ResultRow) and row.payload == {"tg": 12.5, "nested": {"x": [1, 2]}}
        assert row.created_utc.endswith("Z") and row.host == "pi@10.0.0.5"
        assert ResultRow.from_dict(row.to_dict()) == row
        with pytest.raises(RampEdgeError, match="not JSON-serializable"):
            s.add_result("bench", "pi5", "h", "a", {"bad": object()})


def test_each_result_commits_at_once(tmp_path):
    path = tmp_path / "r.sqlite"
    s = Store(path)
    s.add_result("bench", "pi5", "h", "a", {"n": 1})
    # another connection sees it without s closing or committing explicitly
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    s.close()


def test_wal_reader_not_blocked_by_writer(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store(path) as s:
        s.add_result("bench", "pi5", "h", "a", {"n": 1})
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO results (kind, device, host, artifact, created_utc, payload) "
            "VALUES ('bench', 'x', 'h', 'a', 't', '{}')"
        )
        # the uncommitted write neither blocks nor shows up for readers
        assert len(s.results()) == 1
        writer.execute("COMMIT")
        assert len(s.results()) == 2


def test_threads_share_one_store(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:

        def work(i: int) -> None:
            for j in range(10):
                s.add_result("bench", f"host{i}", "h", "a", {"i": i, "j": j})

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(s.results()) == 40


def _old_database(path, version: int, rows: list[tuple[str, str]]) -> None:
    """A database as ramp-edge with `version` migrations wrote it: rows are (artifact, payload)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE _migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_utc TEXT NOT NULL)"
    )
    for number, migration in enumerate(MIGRATIONS[:version], start=1):
        migration(db)
        db.execute("INSERT INTO _migrations VALUES (?, ?, 'then')", (number, migration.__name__))
    for artifact, payload in rows:
        db.execute(
            "INSERT INTO results (kind, device, host, artifact, created_utc, payload) "
            "VALUES ('bench', 'pi5', 'h', ?, 'then', ?)",
            (artifact, payload),
        )
    db.commit()
    db.close()


def test_old_database_is_upgraded(tmp_path):
    path = tmp_path / "r.sqlite"
    _old_database(path, 1, [("a", '{"kept": true}')])
    with Store(path) as s:
        assert s.schema_version == 3
        assert s.results()[0].payload == {"kept": True}
        assert s.results()[0].artifact_sha256 == ""
        s.save_measured_profile(measured())  # the table migration 2 added


def test_migration_3_takes_the_artifact_sha256_from_old_payloads(tmp_path):
    path = tmp_path / "r.sqlite"
    _old_database(path, 2, [("m.gguf", '{"artifact_sha256": "aa"}'), ("m.gguf", "{}")])
    with Store(path) as s:
        assert [r.artifact_sha256 for r in s.results()] == ["aa", ""]
        assert [r.id for r in s.results(artifact_sha256="aa")] == [1]


def test_two_files_with_one_name_never_share_results(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        one = s.add_result("bench", "pi5", "h", "model.gguf", {"artifact_sha256": "1" * 64})
        two = s.add_result("bench", "pi5", "h", "model.gguf", {"artifact_sha256": "2" * 64})
        assert [r.id for r in s.results(artifact_sha256="1" * 64)] == [one]
        assert [r.id for r in s.results(artifact_sha256="2" * 64)] == [two]
        keys = {r.artifact_key for r in s.results()}
        assert len(keys) == 2


def test_newer_database_is_refused(tmp_path):
    path = tmp_path / "r.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO _migrations VALUES (99, 'future', 'now')")
    db.commit()
    db.close()
    with pytest.raises(
        ArtifactError, match="schema version 99, newer than this ramp-edge supports"
    ):
        Store(path)


def test_not_a_database(tmp_path):
    path = tmp_path / "r.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ArtifactError, match="not a usable results database"):
        Store(path)


def test_measured_profiles(tmp_path):
    with Store(tmp_path / "r.sqlite") as s:
        assert s.latest_measured_profile("localhost") is None
        s.save_measured_profile(measured(when="2026-01-01T00:00:00Z", tg=50.0))
        s.save_measured_profile(measured(when="2026-02-01T00:00:00Z", tg=60.0))
        s.save_measured_profile(measured("raspberry-pi-5-8gb"))
        latest = s.latest_measured_profile("localhost")
        assert latest == measured(when="2026-02-01T00:00:00Z", tg=60.0)
        assert len(s.measured_profiles("localhost")) == 2 and len(s.measured_profiles()) == 3
        row = (
            sqlite3.connect(s.path)
            .execute(
                "SELECT agent_version, ramp_edge_version, created_utc FROM measured_profiles "
                "ORDER BY id DESC"
            )
            .fetchone()
        )
        assert row[0] == "0.1.0+probe.1" and row[2] == "2026-01-01T00:00:00Z"
        merged = s.profile("local")  # alias resolves, measurement merges over the static file
        assert merged.id == "localhost" and merged.cores == 4 and merged.measured == latest
        assert s.profile("pi5").measured is not None
        assert s.profile("laptop").measured is None
