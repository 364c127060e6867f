"""`recsys train` and `recsys run`."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli import console, experiment
from recsys_cli.cli.common import ConfigArgument, JsonOption, QuietOption, SetOption, handle_errors, load, print_json


def _result_json(result: experiment.RunResult) -> dict:
    out = {"run_dir": str(result.run_dir), "status": result.status}
    metrics = result.metrics
    if metrics is None:
        return out
    if isinstance(metrics, list):
        out["metrics"] = metrics
    elif hasattr(metrics, "to_records"):
        out["metrics"] = metrics.to_records()
    return out


@handle_errors
def train(
    config: Path = ConfigArgument,
    overrides: list[str] = SetOption,
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the interrupted run in this run directory from its last checkpoint."
    ),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Fit the model of CONFIG and save it in a new run directory (splitting the data first if needed).

    Recommenders are evaluated later with `recsys evaluate RUN_DIR`; mlp-iris reports its test
    accuracy at the end of training. Use `recsys run` to train and evaluate in one go.
    """
    console.set_quiet(quiet)
    result = experiment.train(load(config, overrides), resume=resume)
    console.success(f"run finished: {result.run_dir}")
    if as_json:
        print_json(_result_json(result))


@handle_errors
def run(
    config: Path = ConfigArgument,
    overrides: list[str] = SetOption,
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Split (if needed), train and evaluate CONFIG in one go: the everyday command.

    Leaves config.yaml, env.json, log.txt, status.json, timing.json, the saved model and
    metrics.csv/.json/.md in runs/<UTC time>-<name>-<hash>/ (runs/latest points at it).
    """
    console.set_quiet(quiet)
    result = experiment.run(load(config, overrides))
    console.success(f"run finished: {result.run_dir}")
    if as_json:
        print_json(_result_json(result))
