"""`ramp-edge eval`: perplexity, KL divergence, commonsense tasks, retention reports."""

from __future__ import annotations

import importlib

import click

from ramp_edge.cli._common import emit_json, json_option

_SUBCOMMANDS = {
    "tasks": "ramp_edge.cli.eval_tasks:tasks",
    "compare": "ramp_edge.cli.eval_compare:compare",
}


class _EvalGroup(click.Group):
    def list_commands(self, ctx):
        names = set(super().list_commands(ctx))
        for name, target in _SUBCOMMANDS.items():
            if importlib.util.find_spec(target.split(":")[0]) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx, cmd_name):
        if cmd_name in _SUBCOMMANDS:
            module, attr = _SUBCOMMANDS[cmd_name].split(":")
            if importlib.util.find_spec(module) is None:
                return None
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)


@click.group("eval", cls=_EvalGroup)
def eval_group() -> None:
    """Measure quality: perplexity, KL divergence, commonsense accuracy."""


def gguf_path(ref: str):
    """A GGUF path for a model reference (built-in name or file)."""
    from ramp_edge.errors import ConfigError
    from ramp_edge.models import resolve

    model = resolve(ref)
    if model.kind != "gguf":
        raise ConfigError(
            f"{ref} is a Hugging Face directory; export it to GGUF first (ramp-edge export)"
        )
    return model.path


data_option = click.option(
    "--data",
    default="wikitext2-test",
    show_default=True,
    help="Shipped dataset name or a UTF-8 text file.",
)
ctx_option = click.option(
    "--ctx", "n_ctx", default=512, show_default=True, help="Window size in tokens."
)
chunks_option = click.option(
    "--chunks", "n_chunks", type=int, default=None, help="Number of windows (default: all)."
)


@eval_group.command("ppl")
@click.argument("model")
@data_option
@ctx_option
@chunks_option
@json_option
def ppl(model: str, data: str, n_ctx: int, n_chunks: int | None, as_json: bool) -> None:
    """Perplexity of a GGUF, computed like llama-perplexity.

    Non-overlapping windows of --ctx tokens; the second half of each window is
    scored, so numbers compare with llama.cpp's own tool on the same file.

    \b
    Example:
      ramp-edge eval ppl smol-q4_0.gguf --chunks 20 --json
    """
    from ramp_edge.evaluate.perplexity import perplexity
    from ramp_edge.ui import out_console, progress

    path = gguf_path(model)
    with progress("Perplexity") as bar:
        result = perplexity(path, data, n_ctx, n_chunks, progress=bar)
    if as_json:
        emit_json({"model": str(path), "data": data, **result.to_dict()})
        return
    out_console.print(
        f"PPL = {result.ppl:.4f} +/- {result.ppl_stderr:.4f}  "
        f"({result.n_tokens} tokens, {result.n_chunks} x {n_ctx}, {result.seconds:.1f} s)"
    )


@eval_group.command("kld")
@click.argument("candidate")
@click.option("--reference", required=True, help="Reference model (built-in name or GGUF).")
@data_option
@ctx_option
@chunks_option
@click.option(
    "--top-k",
    default=256,
    show_default=True,
    help="Reference log-probs kept per token in the cache.",
)
@json_option
def kld(
    candidate: str,
    reference: str,
    data: str,
    n_ctx: int,
    n_chunks: int | None,
    top_k: int,
    as_json: bool,
) -> None:
    """KL divergence of CANDIDATE from a reference, like llama-perplexity --kl-divergence.

    Reports mean and 99th-percentile KLD, top-1 agreement ("same top p") and both
    perplexities over the same tokens. The reference is evaluated once and cached.

    \b
    Example:
      ramp-edge eval kld smol-q4_0.gguf --reference smollm2-135m --chunks 20
    """
    from ramp_edge.evaluate.perplexity import kl_divergence
    from ramp_edge.ui import out_console, progress

    cand, ref = gguf_path(candidate), gguf_path(reference)
    with progress("KL divergence") as bar:
        r = kl_divergence(cand, ref, data, n_ctx, n_chunks, top_k, progress=bar)
    if as_json:
        emit_json({"candidate": str(cand), "reference": str(ref), "data": data, **r.to_dict()})
        return
    from rich.table import Table

    table = Table(title=f"KLD {cand.name} vs {ref.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in (
        ("mean KLD", f"{r.mean_kld:.6f} ± {r.kld_stderr:.6f}"),
        ("99% KLD", f"{r.kld_p99:.6f}"),
        ("median KLD", f"{r.kld_median:.6f}"),
        ("same top p", f"{100 * r.same_top_p:.2f} %"),
        ("PPL reference", f"{r.ppl_ref:.4f}"),
        ("PPL candidate", f"{r.ppl_cand:.4f}"),
        ("PPL ratio", f"{r.ppl_ratio:.4f}"),
        ("tokens", str(r.n_tokens)),
    ):
        table.add_row(label, value)
    out_console.print(table)
