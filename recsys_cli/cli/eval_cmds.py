"""`recsys evaluate` and `recsys compare` (placeholders until the evaluator issue lands)."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli.cli.common import handle_errors
from recsys_cli.errors import NotBuiltYet


@handle_errors
def evaluate(run_dir: Path = typer.Argument(..., help="A run directory (or runs/latest).")) -> None:
    """Evaluate a trained run from its saved model (not built yet)."""
    raise NotBuiltYet("recsys evaluate is not built yet")


@handle_errors
def compare(run_dirs: list[Path] = typer.Argument(..., help="Run directories.")) -> None:
    """Leaderboard of several runs (not built yet)."""
    raise NotBuiltYet("recsys compare is not built yet")
