"""`recsys download` and `recsys split` (placeholders until the data issue lands)."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli.cli.common import ConfigArgument, SetOption, handle_errors
from recsys_cli.errors import NotBuiltYet


@handle_errors
def download(name: str = typer.Argument("movielens-10m", help="Data set name.")) -> None:
    """Download a data set, verify it and build its processed cache (not built yet)."""
    raise NotBuiltYet("recsys download is not built yet")


@handle_errors
def split(config: Path = ConfigArgument, overrides: list[str] = SetOption) -> None:
    """Make (or reuse) the split a config asks for (not built yet)."""
    raise NotBuiltYet("recsys split is not built yet")
