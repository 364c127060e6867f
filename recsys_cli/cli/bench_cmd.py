"""`recsys bench-dtype` (placeholder until its issue lands)."""

from __future__ import annotations

from pathlib import Path

from recsys_cli.cli.common import ConfigArgument, handle_errors
from recsys_cli.errors import NotBuiltYet


@handle_errors
def bench_dtype(config: Path = ConfigArgument) -> None:
    """Time and measure one experiment across dtypes (not built yet)."""
    raise NotBuiltYet("recsys bench-dtype is not built yet")
