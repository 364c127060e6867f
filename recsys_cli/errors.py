"""Exceptions that the CLI turns into a one-line message and an exit code.

Every error a user can cause derives from :class:`RecsysError`: it carries the problem, the fix,
and the exit code (2 for bad input, 1 for a run that failed or a bound that did not hold).
"""

from __future__ import annotations

import errno

# write errors that mean the disk (or the user's quota) is full: the user's to fix, not a bug
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class RecsysError(Exception):
    """A problem the user can fix. ``str(err)`` is the one-line message shown on stderr."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} — {self.hint}"
        return " ".join(text.split())


class ConfigError(RecsysError):
    """Malformed YAML, unknown keys, wrong types, bad values, missing config files."""


class DataError(RecsysError):
    """Missing, corrupt or inconsistent data, downloads, caches and splits."""


class DeviceError(RecsysError):
    """An accelerator or dtype that is not available here."""


class ResourceError(RecsysError):
    """Not enough memory (or another resource) for the requested work."""


class RunFailed(RecsysError):
    """A run that started but could not finish (NaN loss, failed assertion, ...)."""

    exit_code = 1



class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, CI cancellation, Slurm, Kubernetes), raised where the process was, like Ctrl-C,
    so that everything that handles KeyboardInterrupt (checkpoints, run status) handles it too."""


def disk_full(exc: BaseException) -> ResourceError | None:
    """A one-line ResourceError for a write that failed on a full disk, else None."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_FULL:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return ResourceError(f"the disk is full{where}: {exc.strerror or exc}",
                         hint="free some disk space (or choose another RECSYS_RUNS_DIR / RECSYS_DATA_DIR) and rerun")
