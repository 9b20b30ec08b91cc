"""Tasks as data: lm-eval YAML and plain JSONL task files, the Jinja subset, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ramp_edge.errors import ArtifactError, ConfigError
from ramp_edge.evaluate.runner import FakeRunner
from ramp_edge.evaluate.taskfile import builtin_tasks, evaluate_tasks, get_task, load_task_file
from ramp_edge.evaluate.tasks import default_data_dir
from ramp_edge.evaluate.template import TemplateError, render

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "data" / "tasks"
USER = FIXTURES / "user"


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Question: {{question}}\nAnswer:", "Question: Why?\nAnswer:"),
        ("{{choices.text}}", "['a', 'b']"),
        ("{{choices.label.index(answerKey)}}", "1"),
        ("{{[sol1, sol2]}}", "['x', 'y']"),
        ("{{ continuation|trim }}|", "rest.|"),
        ("{{ choices.text|join(', ')|upper }}", "A, B"),
        ("{{ endings[1] }}{{ endings[-1][:2] }}", "twotw"),
        ("{{ 'yes' if label == 1 else 'no' }}", "yes"),
        ("{{ question + '?' }}", "Why??"),
    ],
)
def test_template_subset_renders_like_jinja(template: str, expected: str) -> None:
    doc = {
        "question": "Why?",
        "choices": {"text": ["a", "b"], "label": ["A", "B"]},
        "answerKey": "B",
        "sol1": "x",
        "sol2": "y",
        "continuation": "  rest. ",
        "endings": ["one", "two"],
        "label": 1,
    }
    assert render(template, doc) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ missing }}", "document has no field 'missing'"),
        ("{% if x %}a{% endif %}", r"\{% \.\.\. %\} blocks are not supported"),
        ("{{ question.__class__ }}", "only allowed as a method call"),
        ("{{ question.zfill(3) }}", "method 'zfill' is not allowed"),
        ("{{ question|safe }}", "unsupported filter 'safe'"),
        ("{{ (( }}", "cannot parse"),
    ],
)
def test_template_refuses_what_it_does_not_support(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(template, {"question": "Why?", "x": 1})


# --------------------------------------------------------------------------- built-in tasks


def test_builtin_tasks_are_yaml_files_with_their_data() -> None:
    tasks = builtin_tasks()
    assert sorted(tasks) == [
        "arc_challenge",
        "arc_easy",
        "boolq",
        "hellaswag",
        "piqa",
        "winogrande",
    ]
    for task in tasks.values():
        assert task.path.parent == default_data_dir() and task.path.suffix == ".yaml"
        folder = task.data_paths(task.eval_split)[0].parent
        assert (folder / "SOURCE.md").is_file()
    assert {n: t.metrics for n, t in tasks.items()} == {
        "arc_easy": ("acc", "acc_norm"),
        "arc_challenge": ("acc", "acc_norm"),
        "piqa": ("acc", "acc_norm"),
        "hellaswag": ("acc", "acc_norm"),
        "winogrande": ("acc",),
        "boolq": ("acc",),
    }
    assert all(t.version == 1 for t in tasks.values())  # prompts and data unchanged


def test_no_task_specific_python_is_left() -> None:
    """No string in the task code names a task or a task's field (docstrings aside)."""
    import ast

    for module in ("tasks.py", "taskfile.py", "template.py"):
        tree = ast.parse((REPO / "ramp_edge" / "evaluate" / module).read_text())
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        strings = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ]
        for name in (*builtin_tasks(), "answerKey", "ctx_a", "sol1", "passage"):
            assert not [s for s in strings if name in s], (module, name)


@pytest.mark.slow
def test_packaged_data_loads_every_full_split() -> None:
    for task in builtin_tasks().values():
        assert len(task.load()) == task.n_docs


def test_truncated_builtin_data_is_an_artifact_error(tmp_path: Path) -> None:
    shutil.copytree(default_data_dir(), tmp_path / "tasks")
    data = tmp_path / "tasks" / "winogrande" / "winogrande.jsonl"
    data.write_text("\n".join(data.read_text().splitlines()[:10]) + "\n")
    task = load_task_file(tmp_path / "tasks" / "winogrande.yaml")
    with pytest.raises(ArtifactError, match="10 winogrande documents, expected 1267"):
        task.load()


# --------------------------------------------------------------------------- user task files


def test_yaml_task_with_fewshot_examples_and_description() -> None:
    task = get_task(str(USER / "capitals.yaml"))
    assert (task.name, task.version, task.metrics) == ("capitals", 2, ("acc", "acc_norm"))
    items = task.load()
    assert len(items) == 5
    # lm-eval ContextSampler: Random(1234).sample over the train split, advancing per document
    assert items[0].requests[0] == (
        "Capital cities.\n\n"
        "Q: What is the capital of Spain?\nA: Madrid\n\n"
        "Q: What is the capital of France?\nA: Paris\n\n"
        "Q: What is the capital of Germany?\nA:",
        " Berlin",
    )
    assert (
        items[1]
        .requests[0][0]
        .startswith(
            "Capital cities.\n\nQ: What is the capital of France?\nA: Paris\n\nQ: What is the "
            "capital"
            " of Spain?"
        )
    )
    assert [i.gold for i in items] == [0, 1, 1, 0, 1]  # doc_to_target is the choice string
    assert items == task.load()  # the seed is fixed
    zero = task.load(num_fewshot=0)
    assert zero[0].requests[0][0] == "Capital cities.\n\nQ: What is the capital of Germany?\nA:"


def test_plain_jsonl_task() -> None:
    task = get_task(str(USER / "plain.jsonl"))
    assert (task.name, task.version, task.metrics) == ("plain", 1, ("acc", "acc_norm"))
    items = task.load()
    assert items[1].requests == (
        ("Two plus two is", " three"),
        ("Two plus two is", " four"),
        ("Two plus two is", " five"),
    )
    assert [i.gold for i in items] == [0, 1, 1, 0, 1]
    assert items[1].choice_chars == (5, 4, 4)


def test_evaluate_tasks_mixes_builtin_and_files() -> None:
    spec = f"piqa,{USER / 'capitals.yaml'},{USER / 'plain.jsonl'}"
    results = evaluate_tasks(FakeRunner(), spec, limit=3, data_dir=None)
    assert [(r.task, r.n) for r in results] == [("piqa", 3), ("capitals", 3), ("plain", 3)]


# --------------------------------------------------------------------------- bad task files

GOOD = (USER / "capitals.yaml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("task: capitals\n", "", r"field 'task' \(the task name\) is missing"),
        ("output_type: multiple_choice", "output_type: generate_until", "field 'output_type'"),
        ("doc_to_text:", "doc_to_txt:", "unknown field 'doc_to_txt'"),
        ('"{{answer}}"', "!function utils.target", r"field 'doc_to_target': !function"),
        ("num_fewshot: 2", "process_docs: !function utils.process", "field 'process_docs'"),
        ("  - metric: acc_norm", "  - metric: bleu", "field 'metric_list': metric 'bleu'"),
        ("dataset_path: json", "dataset_path: allenai/ai2_arc", "field 'dataset_path'"),
        ("test_split: test", "test_split: dev", "field 'test_split' names split 'dev'"),
        ('"{{options}}"', '"{% for o in options %}{{o}}{% endfor %}"', "field 'doc_to_choice'"),
        ("version: 2", "version: 1.5", "field 'metadata.version'"),
        ("num_fewshot: 2", "num_fewshot: [2]", "field 'num_fewshot' must be int"),
        ("task: capitals", "task: [capitals", "not valid YAML"),
    ],
)
def test_bad_yaml_names_the_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    for name in ("capitals_train.jsonl", "capitals_test.jsonl"):
        shutil.copy(USER / name, tmp_path / name)
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError, match=message) as err:
        get_task(str(path)).load()
    assert "\n" not in str(err.value)


def test_bad_documents_name_field_file_and_line(tmp_path: Path) -> None:
    shutil.copytree(USER, tmp_path / "user")
    test = tmp_path / "user" / "capitals_test.jsonl"
    lines = test.read_text().splitlines()
    lines[2] = json.dumps({"country": "Peru", "options": ["Lima", "Cusco"], "answer": "Quito"})
    test.write_text("\n".join(lines) + "\n")
    task = get_task(str(tmp_path / "user" / "capitals.yaml"))
    with pytest.raises(ConfigError, match=r"capitals_test\.jsonl:3: doc_to_target gives 'Quito'"):
        task.load()
    lines[2] = json.dumps({"country": "Peru", "answer": "Lima"})
    test.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"jsonl:3: doc_to_choice: document has no field 'opt"):
        task.load()
    assert len(task.load(limit=2)) == 2  # documents before the bad one still load
    test.write_text("{not json\n")
    with pytest.raises(ArtifactError, match=r"capitals_test\.jsonl:1: not valid JSON"):
        task.load()
    test.unlink()
    with pytest.raises(ArtifactError, match="data file is missing"):
        task.load()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"choices": ["a", "b"], "label": 0}, "field 'context' is missing"),
        ({"context": "c", "choices": "ab", "label": 0}, "field 'choices' must be list"),
        ({"context": "c", "choices": ["a", "b"], "label": "0"}, "field 'label' must be int"),
    ],
)
def test_bad_plain_jsonl(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match=message):
        get_task(str(path))


def test_unknown_name_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="unknown task 'arc'; known: arc_challenge, arc_easy"):
        get_task("arc")
    with pytest.raises(ConfigError, match=r"task file not found: nope\.yaml"):
        get_task("nope.yaml")


# --------------------------------------------------------------------------- CLI


def test_cli_bad_task_file_is_exit_3_with_one_line(invoke, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("doc_to_text:", "doc_to_txt:"))
    result = invoke(["eval", "tasks", "smollm2-135m", "--tasks", path])
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        f"Error: {path}: unknown field 'doc_to_txt' (lm-eval task fields only)"
    ]


@pytest.mark.llama
def test_cli_scores_a_yaml_task_on_a_real_model(invoke, stories_gguf: Path) -> None:
    result = invoke(
        ["eval", "tasks", stories_gguf, "--tasks", f"{USER / 'capitals.yaml'},piqa", "--limit", 3,
         "--json", "--n-ctx", 256]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    capitals, piqa = doc["results"]
    assert (capitals["task"], capitals["version"], capitals["n"]) == ("capitals", 2, 3)
    assert piqa["task"] == "piqa" and piqa["acc_norm"] is not None
