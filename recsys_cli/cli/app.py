"""The `recsys` command: a thin Typer layer over the Python API."""

from __future__ import annotations

import typer

from recsys_cli import __version__
from recsys_cli.cli import config_cmds, info_cmd, run_cmds

app = typer.Typer(
    name="recsys",
    help="Experiment runner for recommender-systems research: download, split, train, evaluate, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
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


def _register() -> None:
    from recsys_cli.cli import bench_cmd, data_cmds, eval_cmds, tune_cmds

    app.command("download")(data_cmds.download)
    app.command("split")(data_cmds.split)
    app.command("train")(run_cmds.train)
    app.command("evaluate")(eval_cmds.evaluate)
    app.command("run")(run_cmds.run)
    app.command("compare")(eval_cmds.compare)
    app.command("bench-dtype")(bench_cmd.bench_dtype)
    app.add_typer(config_cmds.app, name="config")
    app.command("info")(info_cmd.info)
    app.command("models")(info_cmd.models)
    app.command("tune")(tune_cmds.tune)
    app.command("sweep")(tune_cmds.sweep)


_register()


def main() -> None:
    app()
