"""Console, logging and progress bars. Everything here writes to stderr; stdout carries results."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

err_console = Console(stderr=True)
out_console = Console()

# A core function's progress callback: (done, total, description).
ProgressFn = Callable[[float, float, str], None]

_quiet = False


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    global _quiet
    _quiet = quiet
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )
    # gguf-py announces every file it writes at INFO; that is noise for our users.
    logging.getLogger("gguf").setLevel(logging.WARNING)


@contextlib.contextmanager
def progress(description: str) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr, hidden off a TTY or with --quiet; yields a callback."""
    if _quiet or not sys.stderr.isatty():
        yield lambda done, total, desc="": None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=None)

        def update(done: float, total: float, desc: str = "") -> None:
            bar.update(task, completed=done, total=total, description=desc or description)

        yield update
