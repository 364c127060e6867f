"""The `recsys` command: a thin Typer layer over the Python API.

Command modules import nothing heavy at module level (torch, numpy, the data code): `recsys --help`
and shell completion must answer in well under a second, so each command imports what it needs
when it runs.
"""

from __future__ import annotations

import typer

from recsys_cli import __version__
from recsys_cli.cli import (
    bench_cmd,
    config_cmds,
    data_cmds,
    eval_cmds,
    export_cmd,
    info_cmd,
    recommend_cmd,
    run_cmds,
    tune_cmds,
)
from recsys_cli.cli.common import literal_help

app = typer.Typer(
    name="recsys",
    help="Experiment runner for recommender-systems research: download, split, train, evaluate, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recsys {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Experiment runner for recommender-systems research."""


def command(name: str, func, target: typer.Typer = app) -> None:
    target.command(name)(literal_help(func))


def _register() -> None:
    command("download", data_cmds.download)
    command("split", data_cmds.split)
    command("train", run_cmds.train)
    command("evaluate", eval_cmds.evaluate)
    command("run", run_cmds.run)
    command("compare", eval_cmds.compare)
    command("recommend", recommend_cmd.recommend)
    command("mlflow", export_cmd.mlflow, export_cmd.app)
    app.add_typer(export_cmd.app, name="export")
    command("bench-dtype", bench_cmd.bench_dtype)
    app.add_typer(config_cmds.app, name="config")
    command("info", info_cmd.info)
    command("models", info_cmd.models)
    command("tune", tune_cmds.tune)
    command("sweep", tune_cmds.sweep)


_register()


def main() -> None:
    """The ``recsys`` console script: a command-line mistake (an unknown option, a bad value) is one
    error line naming the command's --help, exit code 2, like every other bad input."""
    import sys

    from recsys_cli import console

    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C before a command took over
        sys.exit(130)
    except typer.TyperException as exc:  # Click's usage errors, as Typer raises them
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # a bare `recsys` or `recsys config`: its help, as before
            sys.exit(getattr(exc, "exit_code", 2))
        where = f" — see {ctx.command_path} --help" if ctx is not None else ""
        console.error(" ".join(exc.format_message().split()) + where)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
