"""Is a process still there? Used to tell a run or a temporary folder whose process was killed from a live one."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    try:  # a killed child not yet reaped by its parent still answers signal 0
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat's 22nd field), or None where
    /proc cannot tell (another platform, the process is gone). With the pid it names one process: a
    pid reused by a later process has another start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[-1].split()
        return int(fields[19])  # fields[0] is the state, the 3rd field of the line
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is alive and, when ``started`` was recorded, still the process that recorded it."""
    if not pid_alive(pid):
        return False
    return started is None or process_started(pid) in (None, started)
