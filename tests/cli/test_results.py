"""`ramp-edge results` and `results plot` over a results store with a few rows."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ramp_edge.cli import main
from ramp_edge.results import BenchResult, EvalResult


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stored(home):
    from ramp_edge.store import Store

    common = {
        "artifact_sha256": "ab" * 32,
        "artifact_bytes": 1000,
        "threads": 4,
        "n_prompt": 512,
        "n_gen": 128,
        "reps": 5,
    }
    with Store() as store:
        for host, device, tg in (
            ("pi-1", "raspberry-pi-5-8gb", 12.5),
            ("orin-1", "jetson-orin-nano-8gb", 30.0),
        ):
            for artifact, factor in (("q4.gguf", 1.0), ("q8.gguf", 0.6)):
                bench = BenchResult(
                    host=host,
                    device=device,
                    artifact=artifact,
                    pp_tps=10 * tg,
                    pp_tps_std=1.0,
                    tg_tps=tg * factor,
                    tg_tps_std=0.2,
                    **common,
                )
                store.add_result("bench", device, host, artifact, bench.to_dict())
                ev = EvalResult(
                    host=host,
                    device=device,
                    artifact=artifact,
                    artifact_sha256="ab" * 32,
                    task="arc_easy",
                    task_version=1,
                    n=20,
                    acc=0.4 + 0.1 * factor,
                )
                store.add_result("eval", device, host, artifact, ev.to_dict())
        oom = BenchResult.failure(
            host="pi-1",
            device="raspberry-pi-5-8gb",
            artifact="big.gguf",
            status="oom",
            error="killed by the OOM killer",
        )
        store.add_result("bench", "raspberry-pi-5-8gb", "pi-1", "big.gguf", oom.to_dict())
    return home


def test_help(capsys):
    code, out, _ = run(capsys, "results", "--help")
    assert code == 0 and "--csv" in out and "plot" in out


def test_table_json_and_csv(capsys, stored):
    code, out, _ = run(capsys, "results", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 9 and {r["kind"] for r in rows} == {"bench", "eval"}
    code, out, _ = run(
        capsys, "results", "--device", "jetson-orin-nano-8gb", "--kind", "bench", "--csv"
    )
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["artifact"] for r in table] == ["q4.gguf", "q8.gguf"]
    assert float(table[0]["tg_tps"]) == 30.0 and table[0]["status"] == "ok"
    code, out, _ = run(capsys, "results")
    assert code == 0 and "pi-1" in out and "oom" in out


def test_json_and_csv_are_exclusive(capsys, stored):
    code, _, err = run(capsys, "results", "--json", "--csv")
    assert code == 2 and "exclusive" in err


def test_plot_writes_png(capsys, stored, tmp_path):
    pytest.importorskip("matplotlib")
    out_png = tmp_path / "fleet.png"
    code, out, _ = run(capsys, "results", "plot", "--out", out_png)
    assert code == 0 and out.strip() == str(out_png)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_results_is_an_error(capsys, home, tmp_path):
    pytest.importorskip("matplotlib")
    code, _, err = run(capsys, "results", "plot", "--out", tmp_path / "x.png")
    assert code == 1 and "no successful results" in err


def test_two_files_with_one_name_stay_apart(capsys, home):
    """Issue 16 class 8: results are matched by the artifact's sha256, not its file name."""
    from ramp_edge.report import speed_table
    from ramp_edge.store import Store

    with Store() as store:
        for sha, tg in (("11" * 32, 11.25), ("22" * 32, 22.75)):
            bench = BenchResult(
                host="pi-1",
                device="raspberry-pi-5-8gb",
                artifact="model.gguf",
                artifact_sha256=sha,
                artifact_bytes=1000,
                threads=4,
                n_prompt=512,
                n_gen=128,
                reps=5,
                tg_tps=tg,
                pp_tps=100.0,
            )
            store.add_result("bench", "raspberry-pi-5-8gb", "pi-1", "model.gguf", bench.to_dict())
        rows = store.results("bench")
    assert [r.artifact_sha256 for r in rows] == ["11" * 32, "22" * 32]
    code, out, _ = run(capsys, "results", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["artifact_sha256"][:2] for r in table] == ["11", "22"]
    from ramp_edge.cli.results import _artifact_label

    assert [_artifact_label(r) for r in rows] == ["model.gguf (11111111)", "model.gguf (22222222)"]
    # the report's "latest per device, host and artifact" keeps both files
    html = speed_table(rows)
    assert "11.25" in html and "22.75" in html
