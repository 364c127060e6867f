"""Human-facing output through the standard :mod:`logging` module, shown on stderr by rich.

Three levels, chosen per command with ``-q`` (warnings and errors), the default (progress facts) and
``-v`` (details: the data set's statistics block, per-epoch lines, per-phase timings). Every level
is mirrored into the active run's log (:func:`capture`) whatever the screen shows, so ``log.txt``
always has the details. Machine-readable results never go through here; they are written to files
(and stdout with --json).

Other code logs through the functions below (``console.info(...)``) or through
``logging.getLogger("recsys")`` and its children; both end up in the same handlers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from recsys_cli.redact import redact

console = Console(stderr=True, highlight=False, soft_wrap=True)
logger = logging.getLogger("recsys")
logger.setLevel(logging.DEBUG)  # handlers filter: the screen by verbosity, run logs take everything
logger.propagate = False
_STYLES = {"success": "green", "warning": "yellow", "error": "bold red"}


class _ScreenHandler(RichHandler):
    """Plain lines on stderr (no time or level columns: a CLI, not a server log), styled by kind."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = _STYLES.get(getattr(record, "kind", ""), None)
            console.print(redact(self.format(record)), style=style, markup=False, highlight=False)
        except Exception:  # noqa: BLE001 - logging must never raise into the program
            self.handleError(record)


class _SinkHandler(logging.Handler):
    """Writes every record, timestamped, into a text stream (a run's log)."""

    def __init__(self, stream: io.TextIOBase):
        super().__init__(logging.DEBUG)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        self.stream.write(f"{stamp} {redact(record.getMessage())}\n")
        with contextlib.suppress(AttributeError, ValueError, OSError):
            self.stream.flush()


_screen = _ScreenHandler(console=console, show_time=False, show_level=False, show_path=False)
_screen.setLevel(logging.INFO)
logger.addHandler(_screen)
QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


def set_verbosity(*, quiet: bool = False, verbose: bool = False) -> None:
    """-q: warnings and errors only; -v: details too; both: -v wins (asking for more is deliberate)."""
    _screen.setLevel(VERBOSE if verbose else QUIET if quiet else NORMAL)


def set_quiet(quiet: bool) -> None:
    set_verbosity(quiet=quiet)


def screen_level() -> int:
    return _screen.level


def _emit(text: str, level: int, kind: str = "") -> None:
    logger.log(level, text, extra={"kind": kind})


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Nothing on the terminal, not even warnings, while active (the tuner's trials); logs get every line."""
    before = _screen.level
    _screen.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        _screen.setLevel(before)


def debug(text: str) -> None:
    """A detail: on screen only with -v, always in the run's log."""
    _emit(text, logging.DEBUG)


def info(text: str) -> None:
    _emit(text, logging.INFO)


def success(text: str) -> None:
    _emit(text, logging.INFO, "success")


def warn(text: str) -> None:
    _emit(f"warning: {text}", logging.WARNING, "warning")


def error(text: str) -> None:
    _emit(f"error: {text}", logging.ERROR, "error")


@contextlib.contextmanager
def capture() -> Iterator[io.StringIO]:
    """Mirror every line printed while active into a buffer (used for a run's log.txt)."""
    sink = io.StringIO()
    handler = _SinkHandler(sink)
    logger.addHandler(handler)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def tee(path: str | os.PathLike[str]) -> Iterator[None]:
    """Append every line printed while active to the file ``path``, flushed line by line (a run's
    log.txt: a killed process loses nothing it printed)."""
    with open(path, "a", encoding="utf-8", buffering=1) as sink:
        handler = _SinkHandler(sink)
        logger.addHandler(handler)
        try:
            yield
        finally:
            logger.removeHandler(handler)


def progress_enabled() -> bool:
    return _screen.level <= NORMAL and os.environ.get("RECSYS_NO_PROGRESS", "") in ("", "0") and sys.stderr is not None


_spinners: list[Progress] = []


class _Bar(Progress):
    """A progress bar that pauses the spinner around it: rich shows one live display at a time."""

    def __enter__(self) -> _Bar:
        if _spinners:
            _spinners[-1].stop()
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if _spinners:
            _spinners[-1].start()


def progress(*, unit: str = "it", transient: bool = True) -> Progress:
    """A rich progress bar on stderr (``done/total unit``); disabled (but still usable) when output is quiet."""
    return _Bar(
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


@contextlib.contextmanager
def spinner(description: str) -> Iterator[None]:
    """A transient spinner with the elapsed time, for a step of unknown length (parse, split, fit)."""
    if _spinners:  # already inside a spinner: the outer step describes it
        yield
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                   transient=True, disable=not progress_enabled())
    bar.add_task(description, total=None)
    _spinners.append(bar)
    bar.start()
    try:
        yield
    finally:
        _spinners.pop()
        bar.stop()
