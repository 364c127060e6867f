"""`recsys recommend`: top-K lists of a trained run, with original ids."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli import console
from recsys_cli.cli.common import JsonOption, QuietOption, VerboseOption, handle_errors, print_json


@handle_errors
def recommend(
    run_dir: Path = typer.Argument(..., help="A run directory made by recsys train/run (or runs/latest).",
                                   metavar="RUN_DIR"),
    k: int = typer.Option(100, "--k", min=1, help="Length of each list."),
    users: str = typer.Option("all", "--users",
                              help="all, or a file of original user ids: one a line, or a CSV whose first column is the id "
                                   "(a recommendations CSV works; a first line user_id or userId is a header)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="File to write, .parquet or .csv (default: RUN_DIR/recommendations.parquet)."),
    include_seen: bool = typer.Option(False, "--include-seen", help="Keep each user's training items in the lists."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Write each user's top-K items of a trained run: user_id, item_id, rank, score (original ids).

    The lists are the evaluator's (same scoring, seen items removed, ties to the lower item index and
    the config's evaluation.ignore_items left out), one row per user and rank, with the 0-based
    user_index and item_index too.

    Example: recsys recommend runs/latest --k 20 --users users.txt --output top20.csv
    """
    from recsys_cli.evaluation.recommend import recommend as run_recommend

    console.set_verbosity(quiet=quiet, verbose=verbose)
    result = run_recommend(run_dir, k=k, users=users, output=output, include_seen=include_seen)
    console.success(f"{result.n_rows:,} recommendations for {result.n_users:,} users written to {result.path}")
    if as_json:
        print_json({"path": str(result.path), "k": result.k, "n_users": result.n_users, "n_rows": result.n_rows,
                    "seconds": result.seconds, "users_per_second": result.users_per_second})
