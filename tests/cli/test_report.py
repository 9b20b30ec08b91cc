"""`ramp-edge report`: one self-contained HTML file from the results database."""

from __future__ import annotations

import base64
import html.parser
import shutil
import subprocess
from pathlib import Path

import pytest

from ramp_edge.recipe import Recipe
from ramp_edge.results import BenchResult, EvalResult
from ramp_edge.store import Store

pytest.importorskip("matplotlib")


def filled_store(home: Path) -> tuple[Path, Path]:
    """A results database with quality, bench (one failure) and eval rows, and a recipe file."""
    artifacts = home / "artifacts"
    artifacts.mkdir(exist_ok=True)
    recipe = Recipe(
        model_id="smollm2-135m",
        allocation=(
            ("token_embd.weight", "Q8_0"),
            ("blk.0.attn_q.weight", "Q4_K"),
            ("blk.0.ffn_down.weight", "Q6_K"),
            ("blk.1.attn_q.weight", "Q3_K"),
            ("blk.1.ffn_down.weight", "Q5_K"),
            ("output.weight", "Q8_0"),
        ),
        method="knapsack",
    )
    recipe.save(artifacts / "smollm2-135m-knapsack-90000k.recipe.json")
    with Store() as store:
        for model, method, size, kld, ppl in (
            ("smollm2-135m", "knapsack", 90e6, 0.05, 21.0),
            ("smollm2-135m", "preset:Q4_K_M", 105e6, 0.04, 20.8),
            ("smollm2-135m", "uniform:Q4_0", 95e6, 0.09, 22.5),
            ("gemma-3-270m", "knapsack", 200e6, 0.08, 30.0),
        ):
            artifact = artifacts / f"{model}-{method}-{int(size) // 1000}k.gguf"
            store.add_result(
                "quality", "pi5", "127.0.0.1", str(artifact),
                {"recipe": method, "bytes": int(size), "mean_kld": kld, "ppl": ppl,
                 "ppl_ref": 20.0, "chunks": 4},
            )  # fmt: skip
        ok = BenchResult("pi-a", "pi5", "smol.gguf", "ab" * 32, 90_000_000, 4, 512, 128, 3,
                         pp_tps=210.5, tg_tps=31.2, load_time_s=0.4,
                         peak_rss_bytes=300 << 20)  # fmt: skip
        bad = BenchResult("pi-b", "pi5", "smol.gguf", "ab" * 32, 90_000_000, 4, 512, 128, 3,
                          status="oom", error="killed: out of memory <3 GiB>")  # fmt: skip
        for result in (ok, bad):
            store.add_result("bench", "pi5", result.host, result.artifact, result.to_dict())
        ev = EvalResult("pi-a", "pi5", "smol.gguf", "ab" * 32, "arc_easy", 1, 50, acc=0.62,
                        acc_norm=0.55, items_per_s=3.1)  # fmt: skip
        store.add_result("eval", "pi5", "pi-a", "smol.gguf", ev.to_dict())
    return artifacts, home / "results.sqlite"


class _Checker(html.parser.HTMLParser):
    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        for name, value in attrs.items():
            assert name not in ("href",) and not (value or "").startswith(("http", "//")), attrs
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_report_help_has_an_example(invoke) -> None:
    result = invoke(["report", "--help"])
    assert result.exit_code == 0 and "ramp-edge report --out report.html" in result.stdout


def test_report_is_one_self_contained_file(invoke, home: Path, tmp_path: Path) -> None:
    filled_store(home)
    out = tmp_path / "report.html"
    result = invoke(["report", "--out", out])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    text = out.read_text()
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.stack == []  # every element closed
    assert "script" not in checker.tags and "link" not in checker.tags
    assert "http://" not in text and "https://" not in text
    assert len(checker.images) == 2  # size/quality plot + one type map
    for src in checker.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    for needle in (
        "Size vs quality",
        "gemma-3-270m",
        "preset:Q4_K_M",
        "210.50",  # prompt t/s of the ok bench row
        "killed: out of memory &lt;3 GiB&gt;",  # the failure, escaped
        'class="fail"',
        "arc_easy",
        "smollm2-135m-knapsack-90000k",  # the recipe found beside the artifact
        "Q8_0 x2",
    ):
        assert needle in text, needle
    # failures come first in the fleet table
    fleet = text[text.index('id="fleet"') : text.index('id="tasks"')]
    assert fleet.index("killed: out of memory") < fleet.index("pi-a</td><td")


def test_report_on_an_empty_database(invoke, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    result = invoke(["report", "--out", out])
    assert result.exit_code == 0, result.output
    assert "No quality results yet" in out.read_text() and "No rows." in out.read_text()


def test_report_bad_recipe_and_missing_db(invoke, tmp_path: Path) -> None:
    result = invoke(["report", "--db", tmp_path / "nope.sqlite", "--out", tmp_path / "r.html"])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_pareto_frontier() -> None:
    from ramp_edge.report import pareto

    assert pareto([(3, 0.1), (1, 0.5), (2, 0.6), (2.5, 0.2)]) == [(1, 0.5), (2.5, 0.2), (3, 0.1)]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.slow
def test_report_renders_offline_in_headless_chromium(invoke, home: Path, tmp_path: Path) -> None:
    """A real browser, with networking off, lays the page out and decodes every image."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium here; the HTML structure is still checked above")
    filled_store(home)
    out = tmp_path / "report.html"
    assert invoke(["report", "--out", out]).exit_code == 0
    # a probe appended to a copy: it reports each image's decoded width into the DOM
    probe = tmp_path / "probe.html"
    probe.write_text(
        out.read_text().replace(
            "</body>",
            "<script>document.title = Array.from(document.images)"
            ".map(i => i.complete ? i.naturalWidth : -1).join(',');</script></body>",
        )
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
             "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000"]  # fmt: skip
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = dom.stdout.split("<title>", 1)[1].split("</title>", 1)[0]
    widths = [int(w) for w in title.split(",")]
    assert len(widths) == 2 and all(w > 100 for w in widths), title
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", out.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
