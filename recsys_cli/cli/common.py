"""Shared CLI plumbing: options that several commands take, and error → exit-code handling."""

from __future__ import annotations

import functools
import inspect
import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from recsys_cli import atomic, console
from recsys_cli.config import Config, load_config
from recsys_cli.errors import RecsysError, Terminated, disk_full

F = TypeVar("F", bound=Callable[..., Any])


class HeldOut(str, Enum):
    """Choices of --split (Typer shows them in --help and refuses anything else with exit 2)."""

    val = "val"
    test = "test"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"

SET_HELP = (
    "Override one config key, typed by the schema: --set section.key=value (repeatable), "
    "e.g. --set training.epochs=5 --set evaluation.cutoffs=5,10 (a list: comma-separated, or quoted '[5,10]')."
)
SetOption = typer.Option([], "--set", "-s", help=SET_HELP, metavar="KEY=VALUE")
ConfigArgument = typer.Argument(..., help="Experiment config (YAML).", metavar="CONFIG")
JsonOption = typer.Option(False, "--json", help="Also print the machine-readable result as JSON on stdout.")
QuietOption = typer.Option(False, "--quiet", "-q", help="Print only warnings and errors on stderr.")
VerboseOption = typer.Option(
    False, "--verbose", "-v", help="Also print details on stderr: data statistics, per-epoch lines, phase timings."
)


EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # the shell's 128 + signal number


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def handle_errors(func: F) -> F:
    """Turn a :class:`RecsysError` into one line on stderr and its exit code; Ctrl-C into exit 130 and
    SIGTERM into exit 143.

    SIGTERM is raised as :class:`Terminated` (a KeyboardInterrupt) where the process is, so it is
    handled like Ctrl-C: whatever was being written is discarded by the atomic writers, a training run
    keeps its last checkpoint, and a run is marked ``interrupted``.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
        try:
            return func(*args, **kwargs)
        except RecsysError as exc:
            console.error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # an unexpected failure: one line here, the traceback in the run's status.json
            full = disk_full(exc)
            if full is not None:
                console.error(full.one_line())
                raise typer.Exit(full.exit_code) from None
            if os.environ.get("RECSYS_DEBUG"):
                raise
            console.error(f"{type(exc).__name__}: {' '.join(str(exc).split())} — this looks like a bug; rerun "
                          "with RECSYS_DEBUG=1 for the traceback (runs keep it in status.json)")
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
            console.error(f"{what}; nothing half-written was kept")
            raise typer.Exit(EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


_escaped: set[int] = set()


def literal_help(func):
    """Escape square brackets in a command's docstring and its options' help texts.

    Typer renders help through rich markup, which silently drops text such as ``[min–max]`` or
    ``[-seed<seed>]``; our help texts mean their brackets literally. Option objects shared between
    commands (``--set``) are escaped once.
    """
    if func.__doc__:
        func.__doc__ = escape(inspect.cleandoc(func.__doc__))
    for parameter in inspect.signature(func).parameters.values():
        info = parameter.default
        if getattr(info, "help", None) and id(info) not in _escaped:
            _escaped.add(id(info))
            info.help = escape(info.help)
    return func


def load(config: Path, overrides: list[str]) -> Config:
    return load_config(config, overrides)


def print_json(obj: Any) -> None:
    sys.stdout.write(atomic.json_text(obj))
    sys.stdout.flush()


def parse_cutoffs(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise RecsysError(f"--cutoffs {text!r} is not a comma-separated list of integers", hint="e.g. --cutoffs 5,10,20") from None
    if not values or values[0] < 1:
        raise RecsysError(f"--cutoffs {text!r} must list positive integers", hint="e.g. --cutoffs 5,10,20")
    return values
