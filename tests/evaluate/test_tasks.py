"""Multiple-choice tasks: lm-eval prompts, acc/acc_norm/stderr math, limits, bad data, scorer."""

from __future__ import annotations

import ast
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.evaluate.runner import FakeRunner, Runner
from ramp_edge.evaluate.taskfile import (
    builtin_task_names,
    evaluate_tasks,
    get_task,
    parse_task_names,
)
from ramp_edge.evaluate.tasks import (
    Item,
    TaskResult,
    evaluate_items,
    mean_stderr,
    score_item,
)

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "tasks"
REPO = Path(__file__).resolve().parents[2]


def load(name: str, limit: int | None = None, data_dir: Path = FIXTURES) -> list[Item]:
    return get_task(name).load(limit, data_dir)


# --------------------------------------------------------------------------- prompts


def test_arc_prompts_match_lm_eval() -> None:
    items = load("arc_easy")
    assert items[0].requests == (
        (
            "Question: Which statement best explains why photosynthesis is the foundation of "
            "most food webs?\nAnswer:",
            " Sunlight is the source of energy for nearly all ecosystems.",
        ),
        (
            "Question: Which statement best explains why photosynthesis is the foundation of "
            "most food webs?\nAnswer:",
            " Most ecosystems are found on land instead of in water.",
        ),
        (
            "Question: Which statement best explains why photosynthesis is the foundation of "
            "most food webs?\nAnswer:",
            " Carbon dioxide is more available than other gases.",
        ),
        (
            "Question: Which statement best explains why photosynthesis is the foundation of "
            "most food webs?\nAnswer:",
            " The producers in all ecosystems are plants.",
        ),
    )
    assert items[0].gold == 0
    assert items[0].choice_chars == (59, 54, 50, 43)  # without the target delimiter
    numeric = items[3]  # labels "1".."4", answerKey "2"
    assert numeric.requests[0] == (
        "Question: All living and nonliving material is composed of\nAnswer:",
        " air",
    )
    assert numeric.gold == 1
    three = items[4]
    assert [c for _, c in three.requests] == [" decrease", " increase", " remain the same"]
    assert three.gold == 1
    challenge = load("arc_challenge", 1)[0]
    assert challenge.gold == 2
    assert challenge.requests[2][1] == " Planetary days will become shorter."


def test_piqa_prompts_match_lm_eval() -> None:
    items = load("piqa")
    context = "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert items[0].requests[0] == (
        context,
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped "
        "paper strips, you will also need to supply it with a water bottle and a food dish.",
    )
    assert items[0].requests[1][0] == context
    assert [item.gold for item in items] == [
        json.loads(line)["label"]
        for line in (FIXTURES / "piqa" / "validation.jsonl").read_text().splitlines()
    ]
    # second item: raw strings kept, trailing and double spaces included (as the HF rows)
    assert items[1].requests == (
        ("Question: dresser\nAnswer:", " replace drawer with bobby pin "),
        ("Question: dresser\nAnswer:", " finish, woodgrain with  bobby pin "),
    )
    assert items[1].gold == 1


def test_hellaswag_prompts_match_lm_eval() -> None:
    items = load("hellaswag")
    first = items[0]
    assert first.requests == (
        (
            "Roof shingle removal: A man is sitting on a roof. He",
            " is using wrap to wrap a pair of skis.",
        ),
        ("Roof shingle removal: A man is sitting on a roof. He", " is ripping level tiles off."),
        ("Roof shingle removal: A man is sitting on a roof. He", " is holding a rubik's cube."),
        (
            "Roof shingle removal: A man is sitting on a roof. He",
            " starts pulling up roofing on a roof.",
        ),
    )
    assert first.gold == 3
    assert items[1].requests[0][0] == (
        "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady"
    )
    wikihow = items[4]  # lm-eval's preprocess drops the bracketed URL the file keeps
    assert wikihow.requests[0][0] == (
        "Family Life: How to entertain a toddler. Ask the toddler what he or she would like to do "
        "instead of doing what you would like to do.. Visit a site like to find loads of creative "
        "activities for toddlers and preschoolers.. Choose small, simple games like candy land or "
        "chutes and ladders."
    )
    assert wikihow.gold == 1


def test_winogrande_prompts_match_lm_eval() -> None:
    items = load("winogrande")
    assert items[0].requests == (
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    )
    assert items[0].gold == 1
    assert items[1].gold == 0
    assert items[2].requests[1] == (
        "They were worried the wine would ruin the bed and the blanket, but the bed",
        " was't ruined.",
    )


def test_boolq_prompts_match_lm_eval() -> None:
    items = load("boolq")
    context = (
        "American entry into Canada by land -- Persons driving into Canada must have their "
        "vehicle's registration document and proof of insurance.\n"
        "Question: can u drive in canada with us license?\nAnswer:"
    )
    assert items[0].requests == ((context, " no"), (context, " yes"))
    assert items[0].gold == 1
    assert [item.gold for item in items] == [1, 1, 1, 0, 0]
    assert items[0].choice_chars == (2, 3)


# --------------------------------------------------------------------------- scoring math


def two_choice(gold: int, short: str = "a", long: str = "bbbb") -> Item:
    return Item(
        requests=(("ctx", " " + short), ("ctx", " " + long)),
        gold=gold,
        choice_chars=(len(short), len(long)),
    )


def test_score_item_acc_and_length_normalized_acc() -> None:
    item = two_choice(gold=1)
    # raw: -2 > -4 picks choice 0; per character: -2/1 < -4/4 picks choice 1
    assert score_item(item, [(-2.0, False), (-4.0, False)]) == (0.0, 1.0)
    assert score_item(two_choice(gold=0), [(-2.0, False), (-4.0, False)]) == (1.0, 0.0)


def test_score_item_ties_go_to_the_first_choice() -> None:
    assert score_item(two_choice(0, "aa", "bb"), [(-1.0, False), (-1.0, False)]) == (1.0, 1.0)
    assert score_item(two_choice(1, "aa", "bb"), [(-1.0, False), (-1.0, False)]) == (0.0, 0.0)


def test_mean_stderr_is_lm_eval_sample_stderr() -> None:
    assert mean_stderr([1.0, 0.0, 1.0, 1.0]) == pytest.approx(0.25)  # sd 0.5 (n-1) / sqrt(4)
    assert mean_stderr([1.0, 1.0]) == 0.0
    assert mean_stderr([1.0]) is None
    values = [1.0] * 7 + [0.0] * 13
    p = 7 / 20
    assert mean_stderr(values) == pytest.approx(math.sqrt(p * (1 - p) * 20 / 19) / math.sqrt(20))


def test_evaluate_items_with_fake_runner() -> None:
    items = [two_choice(0), two_choice(1), two_choice(1), two_choice(0)]
    runner = FakeRunner(scores={("ctx", " a"): -2.0, ("ctx", " bbbb"): -4.0})
    result = evaluate_items(runner, get_task("arc_easy"), items)
    assert (result.n, result.acc, result.acc_norm) == (4, 0.5, 0.5)
    assert result.acc_stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert result.acc_norm_stderr == pytest.approx(math.sqrt(1 / 3) / 2)
    assert result.items_per_s > 0
    assert runner.calls == [req for item in items for req in item.requests]


def test_fake_runner_is_deterministic_and_a_runner() -> None:
    requests = [("a", " b"), ("a", " c")]
    first, second = FakeRunner(), FakeRunner()
    assert first.loglikelihood(requests) == second.loglikelihood(requests)
    assert all(
        -10.0 <= ll <= 0.0 and greedy is False for ll, greedy in first.loglikelihood(requests)
    )
    assert isinstance(first, Runner)
    assert FakeRunner(greedy={("a", " b")}).loglikelihood(requests)[0][1] is True


def test_evaluate_tasks_all_fixture_tasks() -> None:
    seen: list[tuple[float, float, str]] = []
    results = evaluate_tasks(
        FakeRunner(), "all", progress=lambda d, t, s: seen.append((d, t, s)), data_dir=FIXTURES
    )
    assert [r.task for r in results] == builtin_task_names()
    assert all(r.n == 5 and r.version >= 1 for r in results)
    by_task = {r.task: r for r in results}
    assert by_task["winogrande"].acc_norm is None and by_task["boolq"].acc_norm_stderr is None
    assert by_task["piqa"].acc_norm is not None
    assert seen[-1] == (30, 30, "winogrande")
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    again = evaluate_tasks(FakeRunner(), "all", data_dir=FIXTURES)
    assert [(r.acc, r.acc_norm) for r in again] == [(r.acc, r.acc_norm) for r in results]


def test_limit_takes_the_first_n_documents_in_order() -> None:
    runner = FakeRunner()
    [result] = evaluate_tasks(runner, ["piqa"], limit=2, data_dir=FIXTURES)
    assert result.n == 2
    full = load("piqa")
    assert runner.calls == [req for item in full[:2] for req in item.requests]
    assert load("hellaswag", 3) == load("hellaswag")[:3]
    assert load("arc_easy", 50) == load("arc_easy")  # a limit above the split size keeps all


def test_task_result_round_trips() -> None:
    result = TaskResult("piqa", 1, 10, 0.6, 0.16, None, None, 3.5)
    assert TaskResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert list(result.to_dict()) == [
        "task",
        "version",
        "n",
        "acc",
        "acc_stderr",
        "acc_norm",
        "acc_norm_stderr",
        "items_per_s",
    ]


# --------------------------------------------------------------------------- bad inputs


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown task 'arc_eazy'; known: arc_challenge, arc_easy, boolq"
    ):
        parse_task_names("arc_eazy,piqa")
    with pytest.raises(ConfigError, match="no task given"):
        parse_task_names(" , ")
    assert parse_task_names("piqa, piqa ,boolq") == ["piqa", "boolq"]
    with pytest.raises(ConfigError):
        evaluate_tasks(FakeRunner(), ["nope"], data_dir=FIXTURES)


@pytest.mark.parametrize("limit", [0, -3, True, 2.5])
def test_bad_limit(limit: object) -> None:
    with pytest.raises(ConfigError, match="limit must be a positive integer"):
        evaluate_tasks(FakeRunner(), "piqa", limit=limit, data_dir=FIXTURES)  # type: ignore[arg-type]


def test_item_invariants() -> None:
    with pytest.raises(ArtifactError, match="at least 2 choices"):
        Item(requests=(("c", " a"),), gold=0, choice_chars=(1,))
    with pytest.raises(ArtifactError, match="gold index 2 out of range"):
        Item(requests=(("c", " a"), ("c", " b")), gold=2, choice_chars=(1, 1))
    with pytest.raises(ArtifactError, match="empty answer choice"):
        Item(requests=(("c", " a"), ("c", " ")), gold=0, choice_chars=(1, 0))


# --------------------------------------------------------------------------- module hygiene

ALLOWED_IMPORTS = {
    "runner.py": {"__future__", "hashlib", "logging", "collections", "typing"},
    "tasks.py": {
        "__future__",
        "logging",
        "math",
        "time",
        "collections",
        "dataclasses",
        "pathlib",
        "typing",
        "numpy",
        "ramp_edge",
    },
    "loglik.py": {
        "__future__",
        "logging",
        "os",
        "collections",
        "pathlib",
        "llama_cpp",
        "numpy",
        "ramp_edge",
    },
}
ALLOWED_RAMP_EDGE = {"ramp_edge.errors", "ramp_edge.evaluate.runner", "ramp_edge.evaluate.tasks"}


@pytest.mark.parametrize("module", sorted(ALLOWED_IMPORTS))
def test_device_modules_import_only_stdlib_numpy_llama(module: str) -> None:
    """tasks/runner/loglik ship to devices: no torch, no rich, no other ramp_edge modules."""
    tree = ast.parse((REPO / "ramp_edge" / "evaluate" / module).read_text())
    names: set[str] = set()
    # module level only: tasks.py's host-side lookups import taskfile (PyYAML) inside functions
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    assert {n.split(".")[0] for n in names} <= ALLOWED_IMPORTS[module]
    assert {n for n in names if n.startswith("ramp_edge")} <= ALLOWED_RAMP_EDGE


def test_importing_tasks_loads_no_heavy_module() -> None:
    code = (
        "import sys, ramp_edge.evaluate.tasks, ramp_edge.cli.eval_tasks; "
        "print(sorted(m for m in ('llama_cpp', 'torch', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- CLI (no model)


def test_cli_help_has_an_example() -> None:
    from click.testing import CliRunner

    from ramp_edge.cli.eval_tasks import tasks

    result = CliRunner().invoke(tasks, ["--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "--limit" in result.output


def test_cli_unknown_task_fails_before_loading_a_model() -> None:
    from click.testing import CliRunner

    from ramp_edge.cli.eval_tasks import tasks

    result = CliRunner().invoke(tasks, ["no-such-model.gguf", "--tasks", "arc_easy,mmlu"])
    assert isinstance(result.exception, ConfigError)
    assert "unknown task 'mmlu'" in str(result.exception)


def test_cli_rejects_bad_limit() -> None:
    from click.testing import CliRunner

    from ramp_edge.cli.eval_tasks import tasks

    result = CliRunner().invoke(tasks, ["smollm2-135m", "--limit", "0"])
    assert result.exit_code == 2


def test_scorer_threads_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from ramp_edge.evaluate.loglik import default_threads

    monkeypatch.setenv("RAMP_EDGE_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("RAMP_EDGE_THREADS", "two")
    with pytest.raises(ConfigError, match="RAMP_EDGE_THREADS must be a positive integer"):
        default_threads()
    monkeypatch.delenv("RAMP_EDGE_THREADS")
    assert default_threads() >= 1


def test_scorer_missing_file(tmp_path: Path) -> None:
    from ramp_edge.evaluate.loglik import LlamaCppScorer

    with pytest.raises(ArtifactError, match="no such GGUF file"):
        LlamaCppScorer(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    with pytest.raises(ArtifactError, match=r"llama\.cpp could not load the model"):
        LlamaCppScorer(bad)


class _FakeScorer(FakeRunner):
    """Stands in for LlamaCppScorer in CLI tests: same constructor, context manager."""

    def __init__(self, path: object, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        super().__init__()

    def __enter__(self) -> _FakeScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import ramp_edge.evaluate.loglik as loglik

    monkeypatch.setattr(loglik, "LlamaCppScorer", _FakeScorer)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 28)
    return path


def test_cli_table_and_json_with_a_fake_scorer(fake_gguf: Path) -> None:
    from click.testing import CliRunner

    from ramp_edge.cli.eval_tasks import tasks

    result = CliRunner().invoke(tasks, [str(fake_gguf), "--tasks", "piqa,boolq", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "tiny: zero-shot, first 3 per task" in result.stdout
    assert "piqa" in result.stdout and "boolq" in result.stdout
    result = CliRunner().invoke(tasks, [str(fake_gguf), "--tasks", "winogrande", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ramp-edge/eval" and doc["limit"] is None
    assert doc["results"][0]["n"] == get_task("winogrande").n_docs
    assert doc["results"][0]["acc_norm"] is None


def test_cli_rejects_hf_directories(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ramp_edge.cli.eval_tasks import tasks

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    result = CliRunner().invoke(tasks, [str(tmp_path), "--tasks", "piqa"])
    assert isinstance(result.exception, ConfigError)
    assert "eval tasks scores GGUF files" in str(result.exception)


# --------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def smol_scorer():
    from ramp_edge.evaluate.loglik import LlamaCppScorer
    from ramp_edge.models import resolve

    with LlamaCppScorer(resolve("smollm2-135m").path, n_ctx=1024, n_threads=1) as scorer:
        yield scorer


@pytest.mark.llama
def test_kv_reuse_on_the_tiny_stories_model(stories_gguf: Path) -> None:
    """Fast check of the cache bookkeeping on a 1 MB model: reuse == fresh cache, exactly."""
    from ramp_edge.evaluate.loglik import LlamaCppScorer

    items = load("arc_easy", 2) + load("winogrande", 2) + load("boolq", 1)
    with LlamaCppScorer(stories_gguf, n_ctx=256, n_threads=1) as scorer:
        reused = [scorer.loglikelihood(item.requests) for item in items]
        assert scorer.n_evaluated_tokens > 0
        for item, results in zip(items, reused, strict=True):
            for request, (ll, greedy) in zip(item.requests, results, strict=True):
                assert ll < 0 and isinstance(greedy, bool)
                assert ll == pytest.approx(scorer.score_from_scratch(*request)[0], abs=1e-3)
                assert ll == pytest.approx(scorer.score_single_pass(*request)[0], abs=0.5)


@pytest.mark.llama
@pytest.mark.slow
def test_smollm2_arc_easy_beats_chance(smol_scorer) -> None:
    [result] = evaluate_tasks(smol_scorer, "arc_easy", limit=20)
    assert result.n == 20
    assert result.acc >= 0.4  # chance is ~0.25; SmolLM2-135M Q4_1 scores 0.60 on these 20
    assert result.acc_norm is not None and result.acc_norm >= 0.25
    assert result.items_per_s > 0


@pytest.mark.llama
@pytest.mark.slow
def test_smollm2_kv_reuse_equals_scoring_from_scratch(smol_scorer) -> None:
    items = load("arc_easy", 2) + load("boolq", 1) + load("winogrande", 1)
    reused = [smol_scorer.loglikelihood(item.requests) for item in items]
    for item, results in zip(items, reused, strict=True):
        for (context, continuation), (ll, _) in zip(item.requests, results, strict=True):
            assert ll < 0
            fresh, _ = smol_scorer.score_from_scratch(context, continuation)
            assert ll == pytest.approx(fresh, abs=1e-3)
            # one batch over context + continuation rounds differently in llama.cpp's CPU
            # kernels (~0.1 nats at most for Q4_1); an off-by-one would cost several nats
            single, _ = smol_scorer.score_single_pass(context, continuation)
            assert ll == pytest.approx(single, abs=0.5)


@pytest.mark.llama
def test_smollm2_tokenizes_like_lm_eval(smol_scorer) -> None:
    ctx, cont = smol_scorer.encode_pair("Question: hi\nAnswer:", " yes")
    assert ctx + cont == smol_scorer.encode("Question: hi\nAnswer: yes")
    # a trailing space of the context moves to the continuation
    assert smol_scorer.encode_pair("Answer: ", "yes") == smol_scorer.encode_pair("Answer:", " yes")
    assert smol_scorer.add_bos is False  # SmolLM2's GGUF adds no BOS
    prefix, cont = smol_scorer.encode_pair("", "Hello")
    assert prefix == [smol_scorer.llm.token_bos()] and cont == smol_scorer.encode("Hello")
    ll, greedy = smol_scorer.loglikelihood([("The capital of France is", " Paris")])[0]
    assert ll > -3.0 and isinstance(greedy, bool)


@pytest.mark.llama
@pytest.mark.slow
def test_cli_json_on_smollm2() -> None:
    from click.testing import CliRunner

    from ramp_edge.cli.eval_tasks import tasks

    result = CliRunner().invoke(
        tasks,
        [
            "smollm2-135m",
            "--tasks",
            "winogrande,boolq",
            "--limit",
            "2",
            "--json",
            "--n-ctx",
            "512",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "ramp-edge/eval" and doc["evaluation"] == "tasks"
    assert [r["task"] for r in doc["results"]] == ["winogrande", "boolq"]
    assert all(r["n"] == 2 for r in doc["results"])


def _python38() -> str | None:
    candidates = [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.8*/bin/python"))]
    candidates += [found] if (found := shutil.which("python3.8")) else []
    for python in candidates:  # a pyenv shim exists even where 3.8 is not installed
        if subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0:
            return python
    return None


def test_device_modules_import_under_python_38(tmp_path: Path) -> None:
    """tasks.py and runner.py run on JetPack 5's Python 3.8 (numpy stubbed: only the syntax and
    module-level typing matter here)."""
    python = _python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter here")
    (tmp_path / "numpy.py").write_text("")
    code = (
        "import ramp_edge.evaluate.tasks as t, ramp_edge.evaluate.runner as r; "
        "t.Item(requests=(('a', ' b'), ('a', ' c')), gold=1, choice_chars=(1, 1)); "
        "print(t.TaskInfo('x', 1).metrics, r.FakeRunner().loglikelihood([('a', ' b')])[0][1])"
    )
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('acc', 'acc_norm') False"
