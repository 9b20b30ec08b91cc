"""`ramp-edge report`: one self-contained HTML page of everything in the results database."""

from __future__ import annotations

import click


@click.command("report")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="report.html",
    show_default=True,
    help="The HTML file to write.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Results database [default: $RAMP_EDGE_HOME/results.sqlite].",
)
@click.option(
    "--recipe",
    "recipes",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Also draw this allocation (a .recipe.json); repeatable.",
)
@click.option("--title", default="ramp-edge report", show_default=True, help="Page title.")
def report(out: str, db: str | None, recipes: tuple[str, ...], title: str) -> None:
    """Write an HTML report: size vs KLD/PPL, speed per device, fleet runs with their
    failures, task accuracy and per-tensor type maps of the allocations.

    One file with the plots inline (PNG, base64) and no scripts or links, so it opens
    offline and can be attached to a mail. Recipes saved beside deployed artifacts
    (<artifact>.recipe.json) are found on their own.

    \b
    Example:
      ramp-edge report --out report.html
      ramp-edge report --db lab.sqlite --recipe out/smol.recipe.json --out lab.html
    """
    from pathlib import Path

    from ramp_edge.report import write_report
    from ramp_edge.store import Store

    with Store(Path(db) if db else None) as store:
        path = write_report(out, store, recipes, title=title)
    click.echo(str(path))
