"""`recsys export mlflow`: copy run directories into an MLflow tracking store."""

from __future__ import annotations

import typer

from recsys_cli import console
from recsys_cli.cli.common import JsonOption, QuietOption, VerboseOption, handle_errors, print_json

app = typer.Typer(help="Copy run directories into experiment trackers.", no_args_is_help=True)


@handle_errors
def mlflow(
    run_dirs: list[str] = typer.Argument(..., help="Run directories or quoted globs, e.g. 'runs/*'."),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///mlflow.db or file:./mlruns "
        "(default: MLFLOW_TRACKING_URI, else MLflow's own default)."),
    experiment: str = typer.Option("recsys", "--experiment", help="MLflow experiment to put the runs in."),
    artifact_location: str | None = typer.Option(
        None, "--artifact-location", help="Where a new experiment keeps its files (default for sqlite:///PATH: "
        "mlartifacts/ beside the database; else MLflow's default)."),
    include_model: bool = typer.Option(True, "--model/--no-model",
                                       help="Upload model/ and checkpoints/ with the other files."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Export each run directory as one MLflow run: config as params, metrics, epoch log, files, tags.

    Metric names map NAME@K to NAME_at_K (MLflow names cannot hold @). A second export skips
    unchanged runs and replaces the MLflow run of a directory whose files changed, so there is one
    MLflow run per run directory (tag recsys.run_id). Needs MLflow:
    pip install 'recsys-cli[mlflow]'.

    Example: recsys export mlflow 'runs/*' --tracking-uri sqlite:///mlflow.db
    """
    from recsys_cli.evaluation.compare import expand_run_dirs
    from recsys_cli.mlflow_export import export_runs

    console.set_verbosity(quiet=quiet, verbose=verbose)
    result = export_runs(expand_run_dirs(run_dirs), tracking_uri=tracking_uri, experiment=experiment,
                         include_model=include_model, artifact_location=artifact_location)
    console.success(f"MLflow experiment {result.experiment!r} at {result.tracking_uri}: {len(result.created)} created, "
                    f"{len(result.replaced)} replaced, {len(result.unchanged)} unchanged")
    if as_json:
        print_json({"tracking_uri": result.tracking_uri, "experiment": result.experiment, "created": result.created,
                    "replaced": result.replaced, "unchanged": result.unchanged, "runs": result.mlflow_run_ids})
