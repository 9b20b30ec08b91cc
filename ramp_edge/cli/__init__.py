"""The `ramp-edge` command: a click group over lazily imported subcommands.

Each subcommand lives in `ramp_edge/cli/<name>.py` and is imported only when invoked, so
`ramp-edge --help` stays fast and never loads torch, llama_cpp or paramiko. This module is
the one place that maps RampEdgeError to exit codes.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ramp_edge import __version__
from ramp_edge.errors import RampEdgeError

# command name -> "module:attribute"
LAZY_COMMANDS: dict[str, str] = {
    "models": "ramp_edge.cli.models:models",
    "inspect": "ramp_edge.cli.inspect:inspect_cmd",
    "export": "ramp_edge.cli.export:export",
    "eval": "ramp_edge.cli.eval:eval_group",
    "deploy": "ramp_edge.cli.deploy:deploy",
    "devices": "ramp_edge.cli.devices:devices",
    "budget": "ramp_edge.cli.budget:budget",
    "profile": "ramp_edge.cli.profile:profile",
    "allocate": "ramp_edge.cli.allocate:allocate",
    "features": "ramp_edge.cli.features:features",
    "train": "ramp_edge.cli.train:train",
    "fleet": "ramp_edge.cli.fleet:fleet",
    "results": "ramp_edge.cli.results:results",
    "report": "ramp_edge.cli.report:report",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        for name, target in LAZY_COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module_name, attr = LAZY_COMMANDS[cmd_name].split(":")
            if importlib.util.find_spec(module_name) is None:
                return None
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        """The one place that turns expected failures into a one-line message and an exit code."""
        debug = "--debug" in sys.argv or bool(os.environ.get("RAMP_EDGE_DEBUG"))
        try:
            return super().invoke(ctx)
        except RampEdgeError as err:
            if debug:
                raise
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            # Remote processes were already stopped and finished results committed where the
            # interrupt was caught (fleet.group, fleet.ssh); here only the exit status.
            click.echo("\nInterrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except MemoryError:
            click.echo("Error: out of memory", err=True)
            ctx.exit(1)
        except OSError as err:
            if debug:
                raise
            where = f": {err.filename}" if err.filename else ""
            click.echo(f"Error: {err.strerror or err}{where}", err=True)
            ctx.exit(1)
        except Exception as err:
            # Last net for library errors that escaped the core's mapping: SSH errors exit like
            # RemoteError, database errors like any expected failure; anything else is a bug.
            code = _library_exit_code(err)
            if code is None or debug:
                raise
            click.echo(f"Error: {type(err).__name__}: {err}", err=True)
            ctx.exit(code)


EXIT_INTERRUPTED = 130


def _library_exit_code(err: BaseException) -> int | None:
    module = type(err).__module__ or ""
    if module.startswith("paramiko"):
        return 7
    if module.startswith("sqlite3"):
        return 1
    return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ramp-edge")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings only.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool, debug: bool) -> None:
    """ramp-edge: put quantized LLMs on edge devices.

    Give every weight tensor its own GGUF quantization type under a size budget
    (RAMP), export a standard GGUF that stock llama.cpp runs, measure it, and
    deploy it to devices.

    \b
    Example:
      ramp-edge deploy --device localhost
      ramp-edge export smollm2-135m --recipe Q4_K_M --out smol.gguf
    """
    from ramp_edge.ui import setup_logging

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging(verbose=verbose, quiet=quiet)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="ramp-edge")
