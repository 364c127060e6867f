"""Human-facing output: everything goes to stderr through rich, and is mirrored to run logs.

Machine-readable results never go through here; they are written to files (and stdout with --json).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False, soft_wrap=True)
_sinks: list[IO[str]] = []
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence informational lines (errors and warnings still print)."""
    global _quiet
    _quiet = quiet


def _emit(text: str, style: str | None, *, force: bool = False) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for sink in _sinks:
        sink.write(f"{stamp} {text}\n")
    if force or not _quiet:
        console.print(text, style=style, markup=False, highlight=False)


def info(text: str) -> None:
    _emit(text, None)


def success(text: str) -> None:
    _emit(text, "green")


def warn(text: str) -> None:
    _emit(f"warning: {text}", "yellow", force=True)


def error(text: str) -> None:
    _emit(f"error: {text}", "bold red", force=True)


@contextlib.contextmanager
def capture() -> Iterator[io.StringIO]:
    """Mirror every line printed while active into a buffer (used for a run's log.txt)."""
    sink = io.StringIO()
    _sinks.append(sink)
    try:
        yield sink
    finally:
        _sinks.remove(sink)


@contextlib.contextmanager
def tee(path: str | os.PathLike[str]) -> Iterator[None]:
    """Append every line printed while active to the file ``path``, flushed line by line (a run's
    log.txt: a killed process loses nothing it printed)."""
    with open(path, "a", encoding="utf-8", buffering=1) as sink:
        _sinks.append(sink)
        try:
            yield
        finally:
            _sinks.remove(sink)


def progress_enabled() -> bool:
    return not _quiet and os.environ.get("RECSYS_NO_PROGRESS", "") in ("", "0") and sys.stderr is not None


def progress(*, unit: str = "it", transient: bool = True) -> Progress:
    """A rich progress bar on stderr (``done/total unit``); disabled (but still usable) when output is quiet."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
        disable=not progress_enabled(),
    )
