"""Task files: the multiple-choice subset of lm-evaluation-harness's YAML format, and plain JSONL.

A YAML task (lm-eval 0.4 ``TaskConfig`` keys)::

    task: my_task
    output_type: multiple_choice
    dataset_path: json                  # or parquet; files are local, nothing is downloaded
    dataset_kwargs:
      data_files: {test: my_task.jsonl}  # relative to the YAML file; .jsonl, .json, .bz2, .gz
    test_split: test
    doc_to_text: "Question: {{question}}\\nAnswer:"
    doc_to_choice: "{{choices.text}}"   # a template, a field name or a YAML list
    doc_to_target: "{{choices.label.index(answerKey)}}"
    metric_list: [{metric: acc}, {metric: acc_norm}]
    num_fewshot: 0                      # few-shot examples come from fewshot_split/training_split
    metadata: {version: 1}

is read the way lm-eval reads it (``ConfigurableTask.doc_to_text/doc_to_choice/doc_to_target``,
``construct_requests``, ``fewshot_context`` and ``ContextSampler`` with seed 1234), so the same file
gives the same requests in both tools; a test in ``scripts/crosscheck_lmeval.py`` runs one file
through both. Templates are the Jinja subset in `ramp_edge.evaluate.template`. ``include:`` of a
sibling YAML works; ``!function`` (Python), ``process_docs`` and generation tasks are refused with
a one-line error naming the field, and so is any key lm-eval does not know.

A plain JSONL task is one document per line, ``{"context": str, "choices": [str, ...], "label":
int}``, scored as ``doc_to_text: context``, ``doc_to_choice: choices``, ``doc_to_target: label``;
the task is named after the file.

Host side only (PyYAML); the device receives the built items (`ramp_edge.evaluate.tasks.Item`).
"""

from __future__ import annotations

import ast
import bz2
import gzip
import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from ramp_edge.evaluate.runner import Runner

from ramp_edge.errors import ArtifactError, ConfigError, DependencyError
from ramp_edge.evaluate.tasks import (
    METRICS,
    TARGET_DELIMITER,
    Item,
    ProgressFn,
    TaskResult,
    check_limit,
    default_data_dir,
    evaluate_items,
)
from ramp_edge.evaluate.template import TemplateError, check_template, render

logger = logging.getLogger(__name__)

FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed
# lm-eval TaskConfig keys that do not change multiple-choice scoring
_IGNORED = {
    "task_alias", "tag", "group", "group_alias", "should_decontaminate",
    "doc_to_decontamination_query", "generation_kwargs", "unsafe_code", "dataset_name",
}  # fmt: skip
# keys that need Python or features we do not have: refused when set
_REFUSED = {
    "process_docs": "preprocess the data file instead",
    "process_results": "only acc and acc_norm are computed",
    "use_prompt": "promptsource prompts are not supported",
    "doc_to_image": "multimodal tasks are not supported",
    "doc_to_audio": "multimodal tasks are not supported",
    "filter_list": "filters apply to generation tasks only",
    "gen_prefix": "generation tasks are not supported",
    "custom_dataset": "use dataset_path: json with dataset_kwargs.data_files",
}
_KNOWN = {
    "task", "output_type", "dataset_path", "dataset_kwargs", "training_split",
    "validation_split", "test_split", "fewshot_split", "doc_to_text", "doc_to_choice",
    "doc_to_target", "description", "target_delimiter", "fewshot_delimiter", "fewshot_config",
    "num_fewshot", "metric_list", "metadata", "repeats", "include",
}  # fmt: skip
_SPLITS = ("training_split", "validation_split", "test_split", "fewshot_split")


class _PythonRef(str):
    """A ``!function module.name`` value: lm-eval imports Python for it; we refuse it."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: _PythonRef(loader.construct_scalar(node)))


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A multiple-choice task read from a task file (see the module docstring).

    Attributes:
        name: the ``task:`` name (a JSONL task: the file stem).
        version: ``metadata.version``; bump it whenever prompts, data or scoring change.
        metrics: ``acc`` and maybe ``acc_norm``.
        path: the task file.
        data_files: split name -> data files, as resolved against the task file's folder.
        eval_split: the split scored (test_split, else validation_split).
        fewshot_split: the split few-shot examples come from (None: zero-shot only).
        doc_to_text, doc_to_choice, doc_to_target: lm-eval's fields (template, field name,
            literal list or int).
        num_fewshot: few-shot examples before each document.
        fewshot_sampler: ``default`` (seeded random sample) or ``first_n``.
        exclude_eval_doc: the few-shot split is the test split: never show a document itself.
        reference: free text from ``metadata.reference`` (what the task reproduces).
        n_docs: ``metadata.n_docs``: documents in the full split, checked when all are read.
    """

    name: str
    version: int
    metrics: tuple[str, ...]
    path: Path
    data_files: Mapping[str, tuple[str, ...]]
    eval_split: str
    doc_to_text: Any
    doc_to_choice: Any
    doc_to_target: Any
    fewshot_split: str | None = None
    num_fewshot: int = 0
    fewshot_sampler: str = "default"
    exclude_eval_doc: bool = False
    target_delimiter: str = TARGET_DELIMITER
    fewshot_delimiter: str = "\n\n"
    description: str = ""
    file_format: str = "json"
    reference: str = ""
    n_docs: int | None = None
    field_name: str | None = None
    base_dir: Path = field(default=Path("."))

    # ------------------------------------------------------------------ documents

    def data_paths(self, split: str, data_dir: Path | None = None) -> list[Path]:
        base = Path(data_dir) if data_dir is not None else self.base_dir
        return [p if p.is_absolute() else base / p for p in map(Path, self.data_files[split])]

    def read_docs(
        self, split: str, data_dir: Path | None = None
    ) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(file, 1-based line or row, document) of `split` in file order."""
        for path in self.data_paths(split, data_dir):
            yield from _read_data(path, self.file_format, self.field_name)

    # ------------------------------------------------------------------ lm-eval's doc_to_*

    def text(self, doc: Mapping[str, Any]) -> str | int:
        """lm-eval ``doc_to_text``: an int means "multiple inputs" (the gold context index)."""
        spec = self.doc_to_text
        if isinstance(spec, int):
            return spec
        if spec in doc:
            return doc[spec]
        rendered = _render("doc_to_text", spec, doc)
        return ast.literal_eval(rendered) if rendered.isdigit() else rendered

    def choices(self, doc: Mapping[str, Any]) -> list[Any]:
        """lm-eval ``doc_to_choice``."""
        spec = self.doc_to_choice
        if isinstance(spec, list):
            return spec
        if isinstance(spec, dict):
            return list(spec.values())
        if spec in doc:
            value = doc[spec]
        else:
            rendered = _render("doc_to_choice", spec, doc)
            try:
                value = ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                raise ConfigError(
                    f"doc_to_choice must give a list, got {rendered[:60]!r}"
                ) from None
        if not isinstance(value, list | tuple):
            raise ConfigError(f"doc_to_choice must give a list, got {type(value).__name__}")
        return list(value)

    def target(self, doc: Mapping[str, Any]) -> Any:
        """lm-eval ``doc_to_target``: an index, a choice string or the continuation."""
        spec = self.doc_to_target
        if isinstance(spec, int | list):
            return spec
        if spec in doc:
            return doc[spec]
        rendered = _render("doc_to_target", spec, doc)
        if rendered.isdigit():
            return ast.literal_eval(rendered)
        if len(rendered) >= 2 and rendered[0] == "[" and rendered[-1] == "]":
            try:
                return ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                return rendered
        return rendered

    # ------------------------------------------------------------------ items

    def fewshot_prefix(
        self, doc: Mapping[str, Any], pool: Sequence[dict], rnd: random.Random
    ) -> str:
        """lm-eval ``fewshot_context`` before the document: description + labeled examples."""
        prefix = _render("description", self.description, doc) if self.description else ""
        if self.num_fewshot <= 0:
            return prefix
        if len(pool) < self.num_fewshot + int(self.exclude_eval_doc):
            raise ConfigError(
                f"num_fewshot: {self.num_fewshot} examples asked, the few-shot split "
                f"{self.fewshot_split!r} has {len(pool)}"
            )
        if self.fewshot_sampler == "first_n":
            sample = list(pool[: self.num_fewshot])
        elif not self.exclude_eval_doc:  # lm-eval 0.4.13 ContextSampler.sample
            sample = rnd.sample(list(pool), self.num_fewshot)
        else:  # few-shot split == test split: draw one extra, drop the scored document
            drawn = rnd.sample(list(pool), self.num_fewshot + 1)
            sample = [d for d in drawn if d != doc][: self.num_fewshot]
            if len(sample) < self.num_fewshot:
                sample = rnd.sample([d for d in pool if d != doc], self.num_fewshot)
        for example in sample:
            content = self.text(example)
            prefix += content if isinstance(content, str) else str(self.choices(example)[content])
            target = self.target(example)
            if target != "":
                prefix += self.target_delimiter
                if isinstance(target, list):
                    prefix += str(target[0])
                elif isinstance(target, str):
                    prefix += target
                else:
                    prefix += str(self.choices(example)[target])
                prefix += self.fewshot_delimiter
        return prefix

    def doc_to_item(self, doc: Mapping[str, Any], prefix: str = "") -> Item:
        """One document as an `Item`, as lm-eval's ``construct_requests`` builds it."""
        text = self.text(doc)
        choices = [str(c) for c in self.choices(doc)]
        if isinstance(text, int):  # multiple inputs (winogrande): choices go in the context
            continuation = self.target_delimiter + str(self.target(doc))
            requests = tuple((prefix + c, continuation) for c in choices)
            gold: Any = text
        else:
            requests = tuple((prefix + str(text), self.target_delimiter + c) for c in choices)
            gold = self.target(doc)
            if isinstance(gold, str):
                if gold not in choices:
                    raise ConfigError(f"doc_to_target gives {gold!r}, not one of the choices")
                gold = choices.index(gold)
        if isinstance(gold, list):
            raise ConfigError("doc_to_target: several gold answers are not supported")
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise ConfigError(f"doc_to_target must give an index or a choice, got {gold!r}")
        if not 0 <= gold < len(choices):
            raise ConfigError(f"doc_to_target: gold index {gold} out of range for {choices}")
        return Item(requests=requests, gold=gold, choice_chars=tuple(len(c) for c in choices))

    def load(
        self,
        limit: int | None = None,
        data_dir: Path | None = None,
        num_fewshot: int | None = None,
    ) -> list[Item]:
        """The first `limit` documents of the scored split (all when None) as items.

        Args:
            data_dir: resolve data files against this folder instead of the task file's.
            num_fewshot: override the file's ``num_fewshot``.

        Raises:
            ConfigError: limit < 1, or a document the task's templates cannot build an item
                from (the message names the field, file and line).
            ArtifactError: a data file is missing, unreadable or truncated.
        """
        check_limit(limit)
        task = self
        if num_fewshot is not None and num_fewshot != self.num_fewshot:
            from dataclasses import replace

            task = replace(self, num_fewshot=num_fewshot)
        pool: list[dict[str, Any]] = []
        if task.num_fewshot > 0:
            if task.fewshot_split is None:
                raise ConfigError(
                    f"{self.path}: num_fewshot: {task.num_fewshot} needs fewshot_split "
                    "or training_split"
                )
            pool = [d for _, _, d in task.read_docs(task.fewshot_split, data_dir)]
        rnd = random.Random(FEWSHOT_SEED)
        items: list[Item] = []
        for file_name, line, doc in task.read_docs(task.eval_split, data_dir):
            try:
                items.append(task.doc_to_item(doc, task.fewshot_prefix(doc, pool, rnd)))
            except ConfigError as err:
                raise ConfigError(f"{self.path.name}: {file_name}:{line}: {err}") from None
            except ArtifactError as err:
                raise ArtifactError(f"{file_name}:{line}: {err}") from None
            if limit is not None and len(items) >= limit:
                break
        if not items:
            raise ArtifactError(f"{self.path}: no documents in split {task.eval_split!r}")
        if limit is None and data_dir is None and self.n_docs and len(items) != self.n_docs:
            raise ArtifactError(
                f"{self.path}: {len(items)} {self.name} documents, expected {self.n_docs}; "
                "the data is truncated, reinstall ramp-edge"
            )
        return items


def _render(field_name: str, template: Any, doc: Mapping[str, Any]) -> str:
    if not isinstance(template, str):
        raise ConfigError(f"{field_name} must be a string, got {type(template).__name__}")
    try:
        return render(template, doc)
    except TemplateError as err:
        raise ConfigError(f"{field_name}: {err}") from None


# --------------------------------------------------------------------------- data files


def _open_text(path: Path):
    if not path.is_file():
        raise ArtifactError(f"{path}: data file is missing")
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_data(
    path: Path, file_format: str, field_name: str | None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    if file_format == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DependencyError(
                f"{path}: reading Parquet needs pyarrow; run: pip install pyarrow"
            ) from None
        if not path.is_file():
            raise ArtifactError(f"{path}: data file is missing")
        for row, doc in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield path.name, row, doc
        return
    try:
        with _open_text(path) as handle:
            head = handle.read(1)
            while head.isspace():
                head = handle.read(1)
            if head in ("[", "{") and (head == "[" or field_name):
                docs = json.loads(head + handle.read())
                if field_name:
                    docs = docs[field_name]
                for row, doc in enumerate(docs, start=1):
                    yield path.name, row, _check_doc(path, row, doc)
                return
            handle.seek(0)
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ArtifactError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
                yield path.name, line_no, _check_doc(path, line_no, doc)
    except (OSError, EOFError, UnicodeDecodeError, KeyError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path}: unreadable data file ({err})") from None


def _check_doc(path: Path, line: int, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}:{line}: expected a JSON object")
    return doc


# --------------------------------------------------------------------------- task files


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"{path}: include cycle")
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.load(handle, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"task file not found: {path}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a task file is a YAML mapping of lm-eval task fields")
    include = config.pop("include", None)
    if include is not None:
        if not isinstance(include, str):
            raise ConfigError(f"{path}: field 'include' must be a file name")
        base = _read_yaml(path.parent / include, (*seen, path))
        config = {**base, **config}
    return config


def _field(path: Path, config: Mapping[str, Any], name: str, kind: type | tuple, default: Any):
    value = config.get(name, default)
    if isinstance(value, _PythonRef):
        raise ConfigError(
            f"{path}: field '{name}': !function {value} (Python) is not supported; "
            "use a template or a data field"
        )
    if (value is not None and not isinstance(value, kind)) or isinstance(value, bool):
        want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: field '{name}' must be {want}, got {value!r}")
    return value


def parse_yaml_task(path: Path) -> TaskDefinition:
    """Read an lm-eval-style YAML task file.

    Raises:
        ConfigError: a missing, unknown or unsupported field (one line naming it).
    """
    path = Path(path)
    config = _read_yaml(path)
    for key, value in config.items():
        if key in _REFUSED and value not in (None, [], {}):
            how = (
                f"!function {value} (Python) is not supported"
                if isinstance(value, _PythonRef)
                else f"not supported: {_REFUSED[key]}"
            )
            raise ConfigError(f"{path}: field '{key}': {how}")
        if key not in _KNOWN | _IGNORED | set(_REFUSED):
            raise ConfigError(f"{path}: unknown field '{key}' (lm-eval task fields only)")
    name = _field(path, config, "task", str, None)
    if not name:
        raise ConfigError(f"{path}: field 'task' (the task name) is missing")
    output_type = config.get("output_type", "generate_until")
    if output_type != "multiple_choice":
        raise ConfigError(
            f"{path}: field 'output_type' is {output_type!r}; only multiple_choice is supported"
        )
    if _field(path, config, "repeats", int, 1) != 1:
        raise ConfigError(f"{path}: field 'repeats' must be 1")
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target"):
        value = _field(path, config, key, (str, int, list, dict), None)
        if value is None:
            raise ConfigError(f"{path}: field '{key}' is missing")
        if isinstance(value, str):
            try:
                check_template(value)
            except TemplateError as err:
                raise ConfigError(f"{path}: field '{key}': {err}") from None

    # data: lm-eval loads `datasets.load_dataset(dataset_path, **dataset_kwargs)`
    dataset_path = _field(path, config, "dataset_path", str, None)
    if dataset_path not in ("json", "parquet"):
        raise ConfigError(
            f"{path}: field 'dataset_path' is {dataset_path!r}; use json or parquet with local "
            "dataset_kwargs.data_files (nothing is downloaded)"
        )
    kwargs = _field(path, config, "dataset_kwargs", dict, {}) or {}
    unknown = set(kwargs) - {"data_files", "field"}
    if unknown:
        raise ConfigError(f"{path}: field 'dataset_kwargs.{sorted(unknown)[0]}' is not supported")
    files = kwargs.get("data_files")
    if isinstance(files, str | list):
        files = {"train": files}
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{path}: field 'dataset_kwargs.data_files' is missing")
    data_files: dict[str, tuple[str, ...]] = {}
    for split, value in files.items():
        entries = [value] if isinstance(value, str) else value
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ConfigError(f"{path}: field 'dataset_kwargs.data_files.{split}' must be paths")
        data_files[str(split)] = tuple(entries)

    splits = {key: _field(path, config, key, str, None) for key in _SPLITS}
    for key, split in splits.items():
        if split is not None and split not in data_files:
            raise ConfigError(
                f"{path}: field '{key}' names split {split!r}, which dataset_kwargs.data_files "
                f"does not have (it has {sorted(data_files)})"
            )
    eval_split = splits["test_split"] or splits["validation_split"]
    if eval_split is None:
        raise ConfigError(f"{path}: field 'test_split' (or 'validation_split') is missing")
    # lm-eval Task.fewshot_docs: fewshot_split, else training, else validation, else test
    fewshot_split = (
        splits["fewshot_split"]
        or splits["training_split"]
        or splits["validation_split"]
        or splits["test_split"]
    )
    fewshot_config = _field(path, config, "fewshot_config", dict, {}) or {}
    sampler = fewshot_config.get("sampler", "default")
    if sampler not in ("default", "first_n") or set(fewshot_config) - {"sampler"}:
        raise ConfigError(
            f"{path}: field 'fewshot_config' supports only sampler: default or first_n"
        )

    metrics: list[str] = []
    for entry in _field(path, config, "metric_list", list, None) or [
        {"metric": m} for m in METRICS
    ]:
        metric = entry.get("metric") if isinstance(entry, dict) else None
        if metric not in METRICS:
            raise ConfigError(
                f"{path}: field 'metric_list': metric {metric!r} is not supported (acc, acc_norm)"
            )
        metrics.append(metric)
    if "acc" not in metrics:
        metrics.insert(0, "acc")

    metadata = _field(path, config, "metadata", dict, {}) or {}
    version = metadata.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int | float) or version < 1:
        raise ConfigError(f"{path}: field 'metadata.version' must be a number >= 1")
    if version != int(version):
        raise ConfigError(f"{path}: field 'metadata.version' must be a whole number, got {version}")
    n_docs = metadata.get("n_docs")
    num_fewshot = _field(path, config, "num_fewshot", int, 0) or 0
    if num_fewshot < 0:
        raise ConfigError(f"{path}: field 'num_fewshot' must be >= 0")
    return TaskDefinition(
        name=name,
        version=int(version),
        metrics=tuple(dict.fromkeys(metrics)),
        path=path,
        data_files=data_files,
        eval_split=eval_split,
        doc_to_text=config["doc_to_text"],
        doc_to_choice=config["doc_to_choice"],
        doc_to_target=config["doc_to_target"],
        fewshot_split=fewshot_split,
        num_fewshot=num_fewshot,
        fewshot_sampler=sampler,
        exclude_eval_doc=splits["fewshot_split"] is not None
        and splits["fewshot_split"] == splits["test_split"],
        target_delimiter=_field(path, config, "target_delimiter", str, TARGET_DELIMITER),
        fewshot_delimiter=_field(path, config, "fewshot_delimiter", str, "\n\n"),
        description=_field(path, config, "description", str, "") or "",
        file_format=dataset_path,
        reference=str(metadata.get("reference", "")),
        n_docs=int(n_docs) if n_docs is not None else None,
        field_name=kwargs.get("field"),
        base_dir=path.parent,
    )


def jsonl_task(path: Path) -> TaskDefinition:
    """A plain JSONL task: one ``{"context", "choices", "label"}`` document per line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"task file not found: {path}")
    name = path.name.split(".")[0]
    return TaskDefinition(
        name=name,
        version=1,
        metrics=METRICS,
        path=path,
        data_files={"test": (path.name,)},
        eval_split="test",
        doc_to_text="context",
        doc_to_choice="choices",
        doc_to_target="label",
        base_dir=path.parent,
    )


def _check_plain(task: TaskDefinition) -> None:
    """A plain JSONL task's first line must have context (str), choices (list), label (int)."""
    for _, line, doc in task.read_docs(task.eval_split):
        for key, kind in (("context", str), ("choices", list), ("label", int)):
            if key not in doc:
                raise ConfigError(f"{task.path}:{line}: field '{key}' is missing")
            if not isinstance(doc[key], kind) or isinstance(doc[key], bool):
                raise ConfigError(
                    f"{task.path}:{line}: field '{key}' must be {kind.__name__}, "
                    f"got {type(doc[key]).__name__}"
                )
        return


# --------------------------------------------------------------------------- lookup


def is_task_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml", ".jsonl", ".jsonl.bz2", ".jsonl.gz"))


def load_task_file(path: str | Path) -> TaskDefinition:
    """A task file by path: YAML (lm-eval format) or plain JSONL."""
    path = Path(path)
    if path.name.endswith((".yaml", ".yml")):
        return parse_yaml_task(path)
    task = jsonl_task(path)
    _check_plain(task)
    return task


@cache
def builtin_tasks() -> dict[str, TaskDefinition]:
    """The YAML tasks shipped in ``ramp_edge/data/tasks``, by name, sorted by name."""
    tasks = [parse_yaml_task(p) for p in sorted(default_data_dir().glob("*.yaml"))]
    return {t.name: t for t in sorted(tasks, key=lambda t: t.name)}


def builtin_names() -> list[str]:
    return list(builtin_tasks())


def get_task(name: str) -> TaskDefinition:
    """A built-in task by name, else a task file by path.

    Raises:
        ConfigError: neither (the message lists the built-in names) or a bad task file.
    """
    tasks = builtin_tasks()
    if name in tasks:
        return tasks[name]
    if is_task_file(name) or Path(name).is_file():
        return load_task_file(name)
    raise ConfigError(
        f"unknown task {name!r}; known: {', '.join(tasks)}, or a .yaml/.jsonl task file"
    )


# --------------------------------------------------------------------------- lookup (host)


def builtin_task_names() -> list[str]:
    """Names of the tasks shipped in ``ramp_edge/data/tasks``, in their documented order."""
    return builtin_names()


def parse_task_names(spec: str | Iterable[str]) -> list[str]:
    """``"arc_easy, piqa, my.yaml"`` or a list -> validated names/paths without duplicates;
    ``all`` = every built-in task."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        for name in builtin_task_names() if part == "all" else [part]:
            get_task(name)
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"no task given; known: {', '.join(builtin_task_names())}")
    return names


def evaluate_tasks(
    runner: Runner,
    task_names: str | Iterable[str],
    limit: int | None = None,
    progress: ProgressFn | None = None,
    data_dir: Path | None = None,
) -> list[TaskResult]:
    """Evaluate `runner` on each task, first `limit` documents each (all when None).

    Args:
        runner: scores (context, continuation) pairs, e.g. a LlamaCppScorer or FakeRunner.
        task_names: names or task-file paths, or a comma-separated string (``all`` = built-ins).
        limit: documents per task, the first N in file order (as ``lm_eval --limit``).
        progress: ``(done, total, description)`` callback over all items of all tasks.
        data_dir: where built-in tasks find their data files (default: beside their YAML).

    Returns:
        One TaskResult per task, in the order given.

    Raises:
        ConfigError: unknown task name, a bad task file or a bad limit.
        ArtifactError: missing or malformed data file.
    """
    check_limit(limit)
    tasks = [get_task(name) for name in parse_task_names(task_names)]
    loaded = [(task, task.load(limit, data_dir)) for task in tasks]
    total = sum(len(items) for _, items in loaded)
    offset = 0
    results: list[TaskResult] = []
    for task, items in loaded:
        tick: Callable[[int], None] | None = None
        if progress is not None:
            progress(offset, total, task.name)

            def tick(
                done: int,
                _base: int = offset,
                _name: str = task.name,
                _report: ProgressFn = progress,
            ) -> None:
                _report(_base + done, total, _name)

        results.append(evaluate_items(runner, task, items, tick))
        offset += len(items)
    return results
