"""`ramp-edge eval tasks`: zero-shot commonsense accuracy of a GGUF, scored like lm-eval."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ramp_edge.evaluate.tasks import TaskResult

logger = logging.getLogger(__name__)

ALL_TASKS = "arc_easy,arc_challenge,piqa,hellaswag,winogrande,boolq"


@click.command("tasks")
@click.argument("model")
@click.option(
    "--tasks",
    "task_spec",
    default=ALL_TASKS,
    show_default=True,
    help="Comma-separated built-in task names, 'all', or task files (lm-eval YAML or JSONL).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Score only the first N documents of each task (the subset lm_eval --limit N scores).",
)
@click.option(
    "--n-ctx",
    type=click.IntRange(min=8),
    default=2048,
    show_default=True,
    help="Context window; longer prompts are left-truncated (lm-eval's max_length).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads [default: $RAMP_EDGE_THREADS, else all cores].",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of a table.")
def tasks(
    model: str, task_spec: str, limit: int | None, n_ctx: int, threads: int | None, as_json: bool
) -> None:
    """Multiple-choice accuracy: ARC, PIQA, HellaSwag, WinoGrande, BoolQ or your own task.

    MODEL is a built-in model name or a .gguf file. Prompts, acc and acc_norm
    (log-likelihood divided by the answer's length in characters) follow
    lm-evaluation-harness, so numbers are comparable with `lm_eval` at the same
    --limit. The built-in tasks ship with ramp-edge; nothing is downloaded.

    A task of your own is a file: the multiple-choice subset of lm-eval's YAML
    task format (local data via dataset_path: json and dataset_kwargs.data_files,
    Jinja-style doc_to_text/doc_to_choice/doc_to_target, acc/acc_norm,
    num_fewshot with lm-eval's seed), or JSONL lines of {"context", "choices",
    "label"}.

    \b
    Example:
      ramp-edge eval tasks smollm2-135m --tasks arc_easy,piqa --limit 200
      ramp-edge eval tasks model.gguf --tasks my_task.yaml,plain.jsonl --json
    """
    from ramp_edge import models
    from ramp_edge.errors import ConfigError
    from ramp_edge.evaluate.taskfile import evaluate_tasks, parse_task_names
    from ramp_edge.evaluate.tasks import check_limit
    from ramp_edge.ui import progress

    names = parse_task_names(task_spec)  # unknown names fail before the model loads
    check_limit(limit)
    resolved = models.resolve(model)
    if resolved.kind != "gguf":
        raise ConfigError(
            f"{model} is a {resolved.kind} model directory; eval tasks scores GGUF files: "
            "convert it with ramp-edge export first"
        )
    from ramp_edge.evaluate.loglik import LlamaCppScorer

    with LlamaCppScorer(resolved.path, n_ctx=n_ctx, n_threads=threads) as scorer:
        with progress(f"{resolved.model_id}") as update:
            results = evaluate_tasks(scorer, names, limit, progress=update)

    if as_json:
        from ramp_edge.schema import wrap

        doc = wrap(
            "ramp-edge/eval",
            {
                "evaluation": "tasks",
                "model": resolved.model_id,
                "model_path": str(resolved.path),
                "limit": limit,
                "n_ctx": n_ctx,
                "results": [r.to_dict() for r in results],
            },
        )
        click.echo(json.dumps(doc, indent=2))
        return
    _print_table(resolved.model_id, limit, results)


def _fmt(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")


def _print_table(model_id: str, limit: int | None, results: list[TaskResult]) -> None:
    from rich.table import Table

    from ramp_edge.ui import out_console

    subset = f"first {limit} per task" if limit else "full splits"
    table = Table(title=f"{model_id}: zero-shot, {subset}")
    for column in ("task", "version", "n", "acc", "acc_norm", "items/s"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in results:
        table.add_row(
            r.task,
            str(r.version),
            str(r.n),
            _fmt(r.acc, r.acc_stderr),
            _fmt(r.acc_norm, r.acc_norm_stderr),
            f"{r.items_per_s:.2f}",
        )
    out_console.print(table)
