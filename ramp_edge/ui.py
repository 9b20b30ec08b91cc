"""Console, logging and progress bars. Everything here writes to stderr; stdout carries results."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
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


def progress_interval_s() -> float:
    """Seconds between progress lines off a TTY: $RAMP_EDGE_PROGRESS_INTERVAL, default 10."""
    try:
        return max(0.05, float(os.environ.get("RAMP_EDGE_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextlib.contextmanager
def _progress_lines(description: str, interval_s: float) -> Iterator[ProgressFn]:
    """Off a TTY (CI, nohup, logs): one plain stderr line every `interval_s` while the work
    runs, whether or not the core reports progress, so long phases are never silent."""
    start = time.monotonic()
    state: dict[str, object] = {"done": None, "total": None, "desc": description}
    stop = threading.Event()

    def line() -> str:
        elapsed = time.monotonic() - start
        done, total = state["done"], state["total"]
        text = f"{state['desc']}: "
        if isinstance(done, int | float) and isinstance(total, int | float) and total > 0:
            text += f"{done:g}/{total:g} ({100.0 * done / total:.0f}%), {_clock(elapsed)}"
            if 0 < done < total:
                text += f", ~{_clock(elapsed * (total - done) / done)} left"
        else:
            text += f"running, {_clock(elapsed)}"
        return text

    def beat() -> None:
        while not stop.wait(interval_s):
            sys.stderr.write(line() + "\n")
            sys.stderr.flush()

    def update(done: float, total: float, desc: str = "") -> None:
        state.update(done=done, total=total, desc=desc or description)

    thread = threading.Thread(target=beat, name="ramp-edge-progress", daemon=True)
    thread.start()
    try:
        yield update
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def progress(description: str) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr; off a TTY a plain line every ~10 s instead (see
    `progress_interval_s`); nothing with --quiet. Yields a (done, total, description) callback."""
    if _quiet:
        yield lambda done, total, desc="": None
        return
    if not sys.stderr.isatty():
        with _progress_lines(description, progress_interval_s()) as update:
            yield update
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
