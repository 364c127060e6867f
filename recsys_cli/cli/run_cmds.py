"""`recsys train` and `recsys run`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from recsys_cli import console
from recsys_cli.cli.common import (
    ConfigArgument,
    JsonOption,
    QuietOption,
    SetOption,
    VerboseOption,
    handle_errors,
    load,
    print_json,
)

if TYPE_CHECKING:
    from recsys_cli import experiment


class SeedsSplit(str, Enum):
    """Choices of run --seeds-split (recsys_cli.seeds)."""

    vary = "vary"
    fixed = "fixed"


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
    verbose: bool = VerboseOption,
) -> None:
    """Fit the model of CONFIG and save it in a new run directory (splitting the data first if needed).

    Recommenders are evaluated later with `recsys evaluate RUN_DIR`; mlp-iris reports its test
    accuracy at the end of training. Use `recsys run` to train and evaluate in one go.

    Example: recsys train configs/dae.yaml --set training.epochs=5
    """
    from recsys_cli import experiment

    console.set_verbosity(quiet=quiet, verbose=verbose)
    result = experiment.train(load(config, overrides), resume=resume)
    console.success(f"run finished: {result.run_dir}")
    if as_json:
        print_json(_result_json(result))


@handle_errors
def run(
    config: Path = ConfigArgument,
    overrides: list[str] = SetOption,
    seeds: str | None = typer.Option(
        None, "--seeds", help="Run once per seed, e.g. 0,1,2,3,4, and summarise: mean, sd, 95 % CI per metric."),
    seeds_split: SeedsSplit = typer.Option(
        SeedsSplit.vary, "--seeds-split", help="With --seeds: vary (a split per seed) or fixed (one split, model seeds only)."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Split (if needed), train and evaluate CONFIG in one go: the everyday command.

    Leaves config.yaml, env.json, log.txt, status.json, timing.json, the saved model and
    metrics.csv/.json/.md in runs/<UTC time>-<name>-<hash>/ (runs/latest points at it).
    With --seeds, one such run per seed and a group folder runs/<UTC time>-<name>-seeds/ with
    summary.csv/.json/.md (mean, sd, Student-t 95 % CI) and members.csv.

    Example: recsys run configs/ease.yaml --set data.dataset=movielens-100k

    Example: recsys run configs/ease.yaml --seeds 0,1,2,3,4 --seeds-split fixed
    """
    from recsys_cli import experiment

    console.set_verbosity(quiet=quiet, verbose=verbose)
    if seeds is not None:
        from recsys_cli.cli.seeds_cmd import run_group

        run_group(load(config, overrides), seeds, SeedsSplit(seeds_split).value, as_json=as_json)
        return
    result = experiment.run(load(config, overrides))
    console.success(f"run finished: {result.run_dir}")
    if as_json:
        print_json(_result_json(result))
