"""Zero-shot multiple-choice tasks scored the way lm-evaluation-harness scores them.

Each task is a versioned `MultipleChoiceTask` record: a reader that turns the shipped data files
(``ramp_edge/data/tasks/<source>/``, each with its SOURCE.md) into documents shaped like the
Hugging Face rows lm-eval reads, and a ``doc_to_item`` that builds the prompts exactly as the
lm-eval task YAMLs do (``doc_to_text``, ``doc_to_choice``, ``target_delimiter=" "``):

=============  ================================================  ==================  ===========
task           context (doc_to_text)                             continuations       metrics
=============  ================================================  ==================  ===========
arc_easy       ``Question: {stem}\\nAnswer:``                     `` {choice text}``  acc, norm
arc_challenge  same                                              same                acc, norm
piqa           ``Question: {goal}\\nAnswer:``                     `` {sol1|sol2}``    acc, norm
hellaswag      ``preprocess(label: ctx_a + " " + Ctx_b)``        `` {ending}``       acc, norm
winogrande     sentence up to ``_`` with each option (partial)   `` {rest}``         acc
boolq          ``{passage}\\nQuestion: {question}?\\nAnswer:``     `` no``/`` yes``    acc
=============  ================================================  ==================  ===========

Scoring follows lm-eval's ``ConfigurableTask.process_results``: ``acc`` is 1 when the gold
choice has the highest summed log-likelihood (ties go to the first choice, ``np.argmax``);
``acc_norm`` divides each log-likelihood by ``len(choice)``, the length in *characters* (Python
``str`` code points) of the ``doc_to_choice`` string without the target delimiter, which is what
lm-eval does. Standard errors are lm-eval's ``mean_stderr``: sample standard deviation (n-1)
over sqrt(n). Only the metrics lm-eval's YAML lists are reported (winogrande and boolq: acc).

``limit`` keeps the first N documents of the split in file order, the same subset as
``lm_eval --limit N``; no shuffling, so a limit is reproducible and comparable with lm-eval.

Known differences from lm-eval on these offline copies (see each SOURCE.md):

- hellaswag: the shipped file has ``ctx`` but not ``ctx_a``/``ctx_b``. The reader splits ``ctx``
  after its last ". " when the text after it starts with a lowercase letter (ActivityNet
  contexts end with a lowercase fragment such as "he" or "the lady"), which restores lm-eval's
  ``ctx_b.capitalize()`` for those items; other items keep ``ctx_b=""``.
- winogrande: the shipped file is MosaicML's partial-evaluation form. The reader rebuilds
  ``sentence``/``option1``/``option2`` so that lm-eval's ``partial_context`` and
  ``partial_target`` give back exactly the shipped context options and continuation.

To add a task: write a reader and a ``doc_to_item``, register a `MultipleChoiceTask` in
`TASKS`, put five items under ``tests/data/tasks/`` and add a prompt test. Bump ``version``
whenever prompts, data or scoring change, so stored results are never compared across versions.

Pure: stdlib + numpy + ramp_edge.errors; it ships to devices with ``runner.py`` and ``loglik.py``.
"""

from __future__ import annotations

import bz2
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramp_edge.errors import ArtifactError, ConfigError, RampEdgeError
from ramp_edge.evaluate.runner import Runner

logger = logging.getLogger(__name__)

TARGET_DELIMITER = " "  # lm-eval's default target_delimiter for multiple_choice tasks

# (done, total, description), as ramp_edge.ui.progress yields
ProgressFn = Callable[[float, float, str], None]
Doc = dict[str, Any]
# a reader yields (file name, 1-based line number, document) from a task data directory
DocReader = Callable[[Path], Iterator[tuple[str, int, Doc]]]


def default_data_dir() -> Path:
    """The task data shipped inside the package: ``ramp_edge/data/tasks``."""
    return Path(__file__).resolve().parent.parent / "data" / "tasks"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Item:
    """One document as loglikelihood requests: a (context, continuation) per choice.

    Attributes:
        requests: one (context, continuation) pair per choice, in choice order.
        gold: index of the correct choice.
        choice_chars: ``len()`` in characters of each lm-eval ``doc_to_choice`` string, the
            divisor of ``acc_norm``.
    """

    requests: tuple[tuple[str, str], ...]
    gold: int
    choice_chars: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.requests) < 2:
            raise ArtifactError(f"an item needs at least 2 choices, got {len(self.requests)}")
        if len(self.choice_chars) != len(self.requests):
            raise ArtifactError("choice_chars and requests differ in length")
        if not 0 <= self.gold < len(self.requests):
            raise ArtifactError(
                f"gold index {self.gold} out of range for {len(self.requests)} choices"
            )
        if any(n <= 0 for n in self.choice_chars):
            raise ArtifactError("empty answer choice")
        for context, continuation in self.requests:
            if (
                not isinstance(context, str)
                or not isinstance(continuation, str)
                or not continuation
            ):
                raise ArtifactError("requests must be (str, non-empty str) pairs")


@dataclass(frozen=True, slots=True)
class MultipleChoiceTask:
    """A versioned zero-shot multiple-choice task (see the module docstring for the prompts).

    Attributes:
        name: lm-eval task name, e.g. ``arc_easy``.
        version: ramp-edge's version of prompts + data + scoring; bumped on any change.
        reference: the lm-eval task and metadata version this reproduces.
        split: the data split scored.
        source: folder under the data directory holding the files and SOURCE.md.
        files: data files inside ``source``.
        n_docs: documents in the full split (checked when the whole split is read).
        metrics: metrics lm-eval reports for the task: ``acc`` and maybe ``acc_norm``.
        read_docs: data directory -> (file, line, lm-eval-shaped document) in split order.
        doc_to_item: document -> `Item`, mirroring the lm-eval YAML.
    """

    name: str
    version: int
    reference: str
    split: str
    source: str
    files: tuple[str, ...]
    n_docs: int
    metrics: tuple[str, ...]
    read_docs: DocReader
    doc_to_item: Callable[[Doc], Item]

    def __post_init__(self) -> None:
        if self.version < 1 or not self.files or "acc" not in self.metrics:
            raise ConfigError(f"task {self.name}: needs version >= 1, files and the acc metric")

    def load(self, limit: int | None = None, data_dir: Path | None = None) -> list[Item]:
        """Read the first `limit` documents (all when None) as items.

        Raises:
            ConfigError: limit < 1.
            ArtifactError: a data file is missing or malformed (message names file and line).
        """
        check_limit(limit)
        folder = Path(data_dir if data_dir is not None else default_data_dir()) / self.source
        items: list[Item] = []
        for file_name, line, doc in self.read_docs(folder):
            try:
                items.append(self.doc_to_item(doc))
            except ArtifactError as err:
                raise ArtifactError(f"{folder / file_name}:{line}: {err}") from None
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
                what = f"missing field {err}" if isinstance(err, KeyError) else str(err)
                raise ArtifactError(
                    f"{folder / file_name}:{line}: malformed {self.name} document ({what})"
                ) from None
            if limit is not None and len(items) >= limit:
                break  # stop before reading further lines
        if not items:
            raise ArtifactError(f"{folder}: no {self.name} documents found")
        if limit is None and data_dir is None and len(items) != self.n_docs:
            raise ArtifactError(
                f"{folder}: {len(items)} {self.name} documents, expected {self.n_docs}; "
                "the data is truncated, reinstall ramp-edge"
            )
        return items


@dataclass(frozen=True, slots=True)
class TaskResult:
    """Accuracy of one model on one task. Stderrs are None for n < 2; acc_norm is None where
    lm-eval does not report it (winogrande, boolq)."""

    task: str
    version: int
    n: int
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    items_per_s: float

    def __post_init__(self) -> None:
        if self.n < 1 or not 0.0 <= self.acc <= 1.0:
            raise ArtifactError(f"bad TaskResult for {self.task}: n={self.n}, acc={self.acc}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "version": self.version,
            "n": self.n,
            "acc": self.acc,
            "acc_stderr": self.acc_stderr,
            "acc_norm": self.acc_norm,
            "acc_norm_stderr": self.acc_norm_stderr,
            "items_per_s": self.items_per_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- prompts


def _item(context: str, choices: Sequence[str], gold: int) -> Item:
    """The usual case: one context, the choices as continuations after the target delimiter."""
    return Item(
        requests=tuple((context, TARGET_DELIMITER + str(choice)) for choice in choices),
        gold=int(gold),
        choice_chars=tuple(len(str(choice)) for choice in choices),
    )


def arc_doc_to_item(doc: Doc) -> Item:
    """lm-eval arc_easy/arc_challenge: ``Question: {{question}}\\nAnswer:``, gold by answerKey."""
    labels = list(doc["choices"]["label"])
    if doc["answerKey"] not in labels:
        raise ValueError(f"answerKey {doc['answerKey']!r} not among labels {labels}")
    return _item(
        f"Question: {doc['question']}\nAnswer:",
        doc["choices"]["text"],
        labels.index(doc["answerKey"]),
    )


def piqa_doc_to_item(doc: Doc) -> Item:
    """lm-eval piqa: ``Question: {{goal}}\\nAnswer:``, choices [sol1, sol2], gold = label."""
    return _item(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"])


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess``: drop WikiHow bracket markers, collapse double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_doc_to_item(doc: Doc) -> Item:
    """lm-eval hellaswag ``process_docs``: query = preprocess(label: ctx_a + " " + Ctx_b)."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    query = hellaswag_preprocess(doc["activity_label"] + ": " + ctx)
    choices = [hellaswag_preprocess(ending) for ending in doc["endings"]]
    return _item(query, choices, int(doc["label"]))


def winogrande_doc_to_item(doc: Doc) -> Item:
    """lm-eval winogrande (partial scoring): one context per option, a shared continuation.

    Context = sentence up to ``_`` with the option filled in; continuation = target delimiter +
    the stripped text after ``_``. lm-eval's doc_to_choice strings are the contexts.
    """
    sentence = doc["sentence"]
    blank = sentence.index("_")
    contexts = [sentence[:blank] + option for option in (doc["option1"], doc["option2"])]
    continuation = TARGET_DELIMITER + sentence[blank + 1 :].strip()
    gold = {"1": 0, "2": 1}[str(doc["answer"])]
    return Item(
        requests=tuple((context, continuation) for context in contexts),
        gold=gold,
        choice_chars=tuple(len(context) for context in contexts),
    )


def boolq_doc_to_item(doc: Doc) -> Item:
    """lm-eval boolq: ``{{passage}}\\nQuestion: {{question}}?\\nAnswer:``, choices no/yes."""
    return _item(
        f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"], int(doc["label"])
    )


# --------------------------------------------------------------------------- readers


def _open_text(path: Path) -> Iterator[str]:
    if not path.is_file():
        raise ArtifactError(f"{path}: task data file is missing; reinstall ramp-edge")
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            yield from handle
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: unreadable task data file ({err})") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, Doc]]:
    for line_no, line in enumerate(_open_text(path), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        if not isinstance(doc, dict):
            raise ArtifactError(f"{path}:{line_no}: expected a JSON object")
        yield line_no, doc


def _arc_reader(file_name: str) -> DocReader:
    """AI2 ARC jsonl -> HF ai2_arc rows: question, choices{text, label}, answerKey."""

    def read(folder: Path) -> Iterator[tuple[str, int, Doc]]:
        for line_no, raw in _read_jsonl(folder / file_name):
            try:
                question = raw["question"]
                doc = {
                    "id": raw.get("id"),
                    "question": question["stem"],
                    "choices": {
                        "text": [c["text"] for c in question["choices"]],
                        "label": [c["label"] for c in question["choices"]],
                    },
                    "answerKey": raw["answerKey"],
                }
            except (KeyError, TypeError) as err:
                raise ArtifactError(
                    f"{folder / file_name}:{line_no}: malformed ARC row ({err!r})"
                ) from None
            yield file_name, line_no, doc

    return read


def _read_piqa(folder: Path) -> Iterator[tuple[str, int, Doc]]:
    """valid.jsonl + line-aligned valid-labels.lst -> HF piqa rows (goal, sol1, sol2, label)."""
    labels_path = folder / "valid-labels.lst"
    labels = iter(enumerate(_open_text(labels_path), start=1))
    for line_no, raw in _read_jsonl(folder / "valid.jsonl"):
        label_no, label = next(labels, (line_no, None))
        if label is None:
            raise ArtifactError(
                f"{labels_path}:{line_no}: missing label (fewer lines than valid.jsonl)"
            )
        if label.strip() not in ("0", "1"):
            raise ArtifactError(
                f"{labels_path}:{label_no}: label must be 0 or 1, got {label.strip()!r}"
            )
        yield "valid.jsonl", line_no, {**raw, "label": int(label)}


_LOWER_FRAGMENT = re.compile(r"\. (?=[a-z])")


def split_hellaswag_ctx(ctx: str) -> tuple[str, str]:
    """Recover (ctx_a, ctx_b) from ``ctx_a + " " + ctx_b``: split after the last ". " that is
    followed by a lowercase letter when no later sentence starts (see the module docstring)."""
    cut = ctx.rfind(". ")
    if cut >= 0 and _LOWER_FRAGMENT.match(ctx, cut):
        return ctx[: cut + 1], ctx[cut + 2 :]
    return ctx, ""


def _read_hellaswag(folder: Path) -> Iterator[tuple[str, int, Doc]]:
    """llama.cpp 6-line format (label: ctx / gold / 4 endings) -> HF hellaswag-like rows."""
    path = folder / "hellaswag_val_full.txt.bz2"
    group: list[str] = []
    first = 1
    for line_no, line in enumerate(_open_text(path), start=1):
        if not group:
            first = line_no
        group.append(line.rstrip("\n"))
        if len(group) < 6:
            continue
        header, gold, *endings = group
        group = []
        label, sep, ctx = header.partition(": ")
        if not sep:
            raise ArtifactError(f"{path}:{first}: expected 'activity label: context'")
        if gold.strip() not in ("0", "1", "2", "3"):
            raise ArtifactError(f"{path}:{first + 1}: gold label must be 0-3, got {gold.strip()!r}")
        ctx_a, ctx_b = split_hellaswag_ctx(ctx)
        yield (
            path.name,
            first,
            {
                "activity_label": label,
                "ctx_a": ctx_a,
                "ctx_b": ctx_b,
                "endings": endings,
                "label": int(gold),
            },
        )
    if any(part.strip() for part in group):
        raise ArtifactError(f"{path}:{first}: truncated item ({len(group)} of 6 lines)")


def winogrande_from_partial(
    context_options: Sequence[str], continuation: str
) -> tuple[str, str, str]:
    """Rebuild (sentence, option1, option2) from MosaicML's partial form.

    The blank is placed after the last space of the options' common prefix, so that lm-eval's
    ``sentence[:blank] + option`` reproduces each context option exactly.
    """
    first, second = context_options
    if first == second:
        raise ValueError("the two context options are identical")
    common = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        common += 1
    blank = first.rfind(" ", 0, common) + 1  # 0 when the blank starts the sentence
    return first[:blank] + "_ " + continuation.strip(), first[blank:], second[blank:]


def _read_winogrande(folder: Path) -> Iterator[tuple[str, int, Doc]]:
    path = folder / "winogrande.jsonl"
    for line_no, raw in _read_jsonl(path):
        try:
            options = raw["context_options"]
            if not isinstance(options, list) or len(options) != 2:
                raise ValueError("context_options must hold 2 strings")
            sentence, option1, option2 = winogrande_from_partial(options, raw["continuation"])
            gold = int(raw["gold"])
            if gold not in (0, 1):
                raise ValueError(f"gold must be 0 or 1, got {gold}")
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{path}:{line_no}: malformed WinoGrande row ({err!r})") from None
        yield (
            path.name,
            line_no,
            {
                "sentence": sentence,
                "option1": option1,
                "option2": option2,
                "answer": str(gold + 1),
            },
        )


_BOOL_LABELS = {"true": 1, "false": 0, True: 1, False: 0}  # True == 1 and False == 0 as keys


def _read_boolq(folder: Path) -> Iterator[tuple[str, int, Doc]]:
    """SuperGLUE BoolQ jsonl (label "true"/"false") -> HF super_glue/boolq rows (label 0/1)."""
    path = folder / "val.jsonl"
    for line_no, raw in _read_jsonl(path):
        label = raw.get("label")
        key = label.lower() if isinstance(label, str) else label
        if key not in _BOOL_LABELS:
            raise ArtifactError(f"{path}:{line_no}: label must be true/false, got {label!r}")
        yield path.name, line_no, {**raw, "label": _BOOL_LABELS[key]}


# --------------------------------------------------------------------------- registry

TASKS: dict[str, MultipleChoiceTask] = {
    task.name: task
    for task in (
        MultipleChoiceTask(
            name="arc_easy",
            version=1,
            reference="lm-eval arc_easy (metadata version 1.0)",
            split="test",
            source="arc",
            files=("ARC-Easy-Test.jsonl",),
            n_docs=2376,
            metrics=("acc", "acc_norm"),
            read_docs=_arc_reader("ARC-Easy-Test.jsonl"),
            doc_to_item=arc_doc_to_item,
        ),
        MultipleChoiceTask(
            name="arc_challenge",
            version=1,
            reference="lm-eval arc_challenge (metadata version 1.0)",
            split="test",
            source="arc",
            files=("ARC-Challenge-Test.jsonl",),
            n_docs=1172,
            metrics=("acc", "acc_norm"),
            read_docs=_arc_reader("ARC-Challenge-Test.jsonl"),
            doc_to_item=arc_doc_to_item,
        ),
        MultipleChoiceTask(
            name="piqa",
            version=1,
            reference="lm-eval piqa (metadata version 1.0)",
            split="validation",
            source="piqa",
            files=("valid.jsonl", "valid-labels.lst"),
            n_docs=1838,
            metrics=("acc", "acc_norm"),
            read_docs=_read_piqa,
            doc_to_item=piqa_doc_to_item,
        ),
        MultipleChoiceTask(
            name="hellaswag",
            version=1,
            reference="lm-eval hellaswag (metadata version 1.0); ctx_a/ctx_b split heuristically",
            split="validation",
            source="hellaswag",
            files=("hellaswag_val_full.txt.bz2",),
            n_docs=10042,
            metrics=("acc", "acc_norm"),
            read_docs=_read_hellaswag,
            doc_to_item=hellaswag_doc_to_item,
        ),
        MultipleChoiceTask(
            name="winogrande",
            version=1,
            reference="lm-eval winogrande, winogrande_xl (version 1.0)",
            split="validation",
            source="winogrande",
            files=("winogrande.jsonl",),
            n_docs=1267,
            metrics=("acc",),
            read_docs=_read_winogrande,
            doc_to_item=winogrande_doc_to_item,
        ),
        MultipleChoiceTask(
            name="boolq",
            version=1,
            reference="lm-eval boolq, super_glue (version 2.0)",
            split="validation",
            source="boolq",
            files=("val.jsonl",),
            n_docs=3270,
            metrics=("acc",),
            read_docs=_read_boolq,
            doc_to_item=boolq_doc_to_item,
        ),
    )
}


def get_task(name: str) -> MultipleChoiceTask:
    """Look a task up by its lm-eval name; ConfigError lists the known names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def parse_task_names(spec: str | Iterable[str]) -> list[str]:
    """``"arc_easy, piqa"`` or a list -> validated names without duplicates; ``all`` = all tasks."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        for name in TASKS if part == "all" else [part]:
            get_task(name)
            if name not in names:
                names.append(name)
    if not names:
        raise ConfigError(f"no task given; known: {', '.join(TASKS)}")
    return names


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")


# --------------------------------------------------------------------------- scoring


def score_item(item: Item, results: Sequence[tuple[float, bool]]) -> tuple[float, float]:
    """(acc, acc_norm) of one item from its per-choice (loglikelihood, is_greedy) results."""
    if len(results) != len(item.requests):
        raise RampEdgeError(
            f"runner returned {len(results)} results for {len(item.requests)} choices"
        )
    lls = np.array([float(ll) for ll, _ in results], dtype=np.float64)
    acc = float(int(np.argmax(lls)) == item.gold)
    acc_norm = float(int(np.argmax(lls / np.array(item.choice_chars, np.float64))) == item.gold)
    return acc, acc_norm


def mean_stderr(values: Sequence[float]) -> float | None:
    """lm-eval's ``mean_stderr``: sample standard deviation (ddof=1) / sqrt(n); None if n < 2."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance) / math.sqrt(n)


def evaluate_items(
    runner: Runner,
    task: MultipleChoiceTask,
    items: Sequence[Item],
    progress: Callable[[int], None] | None = None,
) -> TaskResult:
    """Score `items` of `task` with `runner`, one runner call per item (so KV reuse applies).

    `progress`, if given, is called with the number of items done after each item.
    """
    accs: list[float] = []
    norms: list[float] = []
    start = time.perf_counter()
    for done, item in enumerate(items, start=1):
        results = runner.loglikelihood(item.requests)
        acc, acc_norm = score_item(item, results)
        accs.append(acc)
        norms.append(acc_norm)
        if progress is not None:
            progress(done)
    elapsed = max(time.perf_counter() - start, 1e-9)
    with_norm = "acc_norm" in task.metrics
    result = TaskResult(
        task=task.name,
        version=task.version,
        n=len(items),
        acc=math.fsum(accs) / len(accs),
        acc_stderr=mean_stderr(accs),
        acc_norm=math.fsum(norms) / len(norms) if with_norm else None,
        acc_norm_stderr=mean_stderr(norms) if with_norm else None,
        items_per_s=len(items) / elapsed,
    )
    logger.info(
        "%s: acc %.4f over %d items (%.2f items/s)",
        task.name,
        result.acc,
        result.n,
        result.items_per_s,
    )
    return result


def evaluate_tasks(
    runner: Runner,
    task_names: str | Iterable[str],
    limit: int | None = None,
    progress: ProgressFn | None = None,
    data_dir: Path | None = None,
) -> list[TaskResult]:
    """Evaluate `runner` zero-shot on each task, first `limit` documents each (all when None).

    Args:
        runner: scores (context, continuation) pairs, e.g. a LlamaCppScorer or FakeRunner.
        task_names: names or a comma-separated string (``all`` = every task).
        limit: documents per task, the first N in file order (as ``lm_eval --limit``).
        progress: ``(done, total, description)`` callback over all items of all tasks.
        data_dir: task data root; the packaged ``ramp_edge/data/tasks`` by default.

    Returns:
        One TaskResult per task, in the order given.

    Raises:
        ConfigError: unknown task name or a bad limit.
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
