"""`recsys tune` and `recsys sweep`."""

from __future__ import annotations

from pathlib import Path

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

GridOption = typer.Option([], "--grid", "-g", metavar="KEY=V1,V2,...",
                          help="A config key and its values (repeatable); every combination runs.")


@handle_errors
def tune(
    config: Path = ConfigArgument,
    trials: int | None = typer.Option(None, "--trials", "-n", min=1, help="Trials in the study (default: "
                                      "search.trials); a resumed study counts the trials it already has."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes on this machine sharing the study, "
                             "each with its share of the CPU threads (or its own GPU)."),
    storage: str | None = typer.Option(None, "--storage", envvar="RECSYS_TUNE_STORAGE",
                                       help="Database URL shared by several machines, e.g. "
                                            "postgresql://user@host:5432/db (default: a journal file in the "
                                            "study folder). Also read from RECSYS_TUNE_STORAGE."),
    study: str | None = typer.Option(None, "--study", help="Study name: letters, digits, '.', '_' and '-' "
                                     "(default: the experiment name and a hash of the config); machines sharing "
                                     "a database use the same one."),
    refit: str = typer.Option("train", "--refit", help="After the search, fit the best config on train (as in the "
                              "search) or train+val and evaluate it on test; none skips it."),
    overrides: list[str] = SetOption,
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Search the config's search.space with Optuna, on validation only; then best.yaml and a refit on test.

    Each trial is an ordinary run under runs/<time>-<name>-tune/trials/, evaluated on the validation
    split; trainable models report every validation value, and pruned trials stop at once. At the end:
    trials.csv, plots/, best.yaml and the best config refitted and evaluated on test. Rerunning the
    same command resumes the study.

    Example: recsys tune configs/search/ease.yaml --trials 30 --set data.dataset=movielens-100k
    """
    from recsys_cli.tuning import tune as run_tune

    console.set_verbosity(quiet=quiet, verbose=verbose)
    outcome = run_tune(load(config, overrides), trials=trials, jobs=jobs, storage=storage, study=study, refit=refit)
    console.success(f"study {outcome.study_name}: {outcome.trials} trials ({_states(outcome.states)}); "
                    f"report in {outcome.study_dir}")
    if as_json:
        out = {"study_dir": str(outcome.study_dir), "study": outcome.study_name, "trials": outcome.trials,
               "states": outcome.states, "best_value": outcome.best_value, "best_params": outcome.best_params,
               "best_yaml": str(outcome.best_yaml) if outcome.best_yaml else None,
               "refit_run_dir": str(outcome.refit_run_dir) if outcome.refit_run_dir else None}
        if outcome.refit_metrics is not None:
            out["refit_metrics"] = outcome.refit_metrics.to_records()
        print_json(out)


@handle_errors
def sweep(
    config: Path = ConfigArgument,
    grid: list[str] = GridOption,
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds; each combination runs with each."),
    overrides: list[str] = SetOption,
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Run every combination of the --grid values (and --seeds) as an ordinary run; print the leaderboard.

    Runs go to runs/<time>-<name>-sweep/, evaluated as the config says (test by default), with
    compare.csv and compare.md beside them.

    Example: recsys sweep configs/ease.yaml --grid model.l2_norm=100,500,1000 --seeds 0,1,2
    """
    from recsys_cli.tuning.sweep import parse_grid, parse_seeds
    from recsys_cli.tuning.sweep import sweep as run_sweep

    console.set_verbosity(quiet=quiet, verbose=verbose)
    folder, table = run_sweep(load(config, overrides), parse_grid(grid), seeds=parse_seeds(seeds))
    console.success(f"sweep of {len(table)} runs: {folder}")
    if as_json:
        print_json({"sweep_dir": str(folder), "runs": table})


def _states(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
