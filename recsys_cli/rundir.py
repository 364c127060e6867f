"""Run directories: one folder per train/run, holding everything needed to read and reproduce it.

Layout (every file written atomically)::

    runs/<UTC time>-<experiment name>-<config hash>/
        config.yaml   resolved config          env.json     versions, device, git commit, command line
        status.json   running/succeeded/failed/interrupted, with the error, the pid and the host
        log.txt       what was printed, as it was printed   timing.json  seconds per phase, peak memory, throughput
        metrics.csv/.json/.md                  model/       saved model (when the model has one)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from recsys_cli import atomic, console
from recsys_cli.config import Config, config_hash, load_config, to_yaml
from recsys_cli.errors import ConfigError, RecsysError, Terminated, disk_full
from recsys_cli.processes import hostname, process_started, same_process
from recsys_cli.redact import redact
from recsys_cli.timing import Timing

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_commit(path: Path = PROJECT_ROOT) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5, check=False,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment(device: str | None = None) -> dict[str, Any]:
    import numpy
    import scipy
    import torch

    from recsys_cli import __version__

    return {
        "recsys_cli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": device,
        "git_commit": git_commit(),
        "command_line": redact(shlex.join(sys.argv)) if sys.argv else None,
        "cwd": os.getcwd(),
    }


def dataset_tag(dataset: str) -> str:
    """A short data set label for run names: movielens-100k → ml100k, synthetic → synthetic."""
    return dataset.replace("movielens-", "ml")


def run_label(config: Config) -> str:
    """The run name's middle part: the experiment name, then the model and data set it actually used.

    Each is added only when the name does not already say it, so ``name: ease`` with
    ``--set data.dataset=movielens-100k`` gives ``ease-ml100k``, and a name that hard-codes a data set
    another --set replaced cannot mislead (``ease-ml10m`` run on ML-100K reads ``ease-ml10m-ml100k``).
    """
    from recsys_cli.models.registry import get_model_class

    default_name = type(config.experiment).model_fields["name"].default
    parts = [] if config.experiment.name == default_name else [config.experiment.name]
    if config.model.name not in config.experiment.name:
        parts.append(config.model.name)
    try:
        uses_data = get_model_class(config.model.name).task == "recommendation"
    except ValueError:
        uses_data = True
    tag = dataset_tag(config.data.dataset)
    if uses_data and tag not in config.experiment.name.split("-"):
        parts.append(tag)
    return "-".join(parts)


def _folder_error(path: Path, exc: OSError) -> RecsysError:
    file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    reason = f"{file} is a file" if file is not None else exc.strerror or str(exc)
    return disk_full(exc) or ConfigError(f"cannot create the folder {path}: {reason}",
                                         hint="set experiment.runs_dir (or RECSYS_RUNS_DIR) to a writable folder")


def make_runs_folder(runs_dir: Path) -> None:
    """Create the runs folder (and its parents): a one-line error when a file is in the way or it is
    not writable."""
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _folder_error(runs_dir, exc) from None


class RunDirectory:
    """A run's folder and its lifecycle: ``running`` → ``succeeded`` | ``failed`` | ``interrupted``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.timing = Timing()

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, config: Config, *, runs_dir: Path | None = None) -> RunDirectory:
        runs_dir = Path(runs_dir or config.experiment.runs_dir)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{stamp}-{run_label(config)}-{config_hash(config)}"
        make_runs_folder(runs_dir)
        for attempt in range(1000):
            name = base if attempt == 0 else f"{base}-{attempt + 1}"
            try:
                (runs_dir / name).mkdir()
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise _folder_error(runs_dir / name, exc) from None
        else:  # pragma: no cover - a thousand runs of one config in one second
            raise RecsysError(f"could not create a unique run directory under {runs_dir}")
        run = cls(runs_dir / name)
        atomic.write_text(run.path / "config.yaml", to_yaml(config))
        run.write_status("running")
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDirectory:
        path = Path(path)
        configured = os.environ.get("RECSYS_RUNS_DIR")
        if configured and not path.exists() and not path.is_absolute() and path.parts[:1] == ("runs",):
            path = Path(configured).expanduser().joinpath(*path.parts[1:])  # the README's `runs/latest`
        if path.name == "latest" and path.is_file() and not path.is_symlink():
            path = path.parent / path.read_text().strip()
        if not path.is_dir():
            raise RecsysError(f"run directory {path} does not exist", hint="pass a folder under runs/, or runs/latest")
        if not (path / "config.yaml").is_file():
            raise RecsysError(f"{path} is not a run directory (no config.yaml)", hint="pass a folder made by recsys train/run")
        return cls(path.resolve())

    def point_latest(self) -> None:
        """``runs/latest`` names the newest succeeded run: a relative symlink, replaced atomically. Never
        fails the run: a folder of the user's at that name is left alone, other problems are warnings."""
        link = self.path.parent / "latest"
        if link.is_dir() and not link.is_symlink():
            console.warn(f"{link} is a folder, not a link to the latest run; left as it is")
            return
        try:
            self._replace_latest(link)
        except OSError as exc:
            console.warn(f"could not point {link} at {self.path.name}: {exc.strerror or exc}")

    def _replace_latest(self, link: Path) -> None:
        tmp = self.path.parent / f".latest.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            tmp.symlink_to(self.path.name, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:  # filesystems without symlinks get a plain file naming the run
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if link.is_symlink() or link.is_dir():
                with contextlib.suppress(OSError):
                    link.unlink()
            atomic.write_text(link, self.path.name + "\n")

    # -- contents -------------------------------------------------------------------------------
    def config(self, overrides: list[str] | None = None) -> Config:
        return load_config(self.path / "config.yaml", overrides or [], env={})

    def write_status(self, state: str, **extra: Any) -> None:
        body = {"status": state, "updated": utc_now(), "pid": os.getpid(), "pid_started": process_started(os.getpid()),
                "host": hostname(), **extra}
        atomic.write_json(self.path / "status.json", body)

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {"status": "unknown"}
        return data if isinstance(data, dict) else {"status": "unknown"}  # valid JSON, but not an object

    def write_json(self, name: str, obj: Any) -> None:
        atomic.write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def write_timing(self) -> None:
        atomic.write_json(self.path / "timing.json", self.timing.as_dict())

    def update_env(self, **extra: Any) -> None:
        path = self.path / "env.json"
        env = json.loads(path.read_text()) if path.exists() else {}
        env.update(extra)
        atomic.write_json(path, env)

    # -- lifecycle ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def active(self, *, device: str | None = None, final_status: bool = True) -> Iterator[RunDirectory]:
        """Append the log to log.txt as it is printed, record the environment, leave an honest status
        whatever happens, and point ``runs/latest`` here when the run succeeds."""
        with console.tee(self.path / "log.txt"):
            try:
                self.update_env(**environment(device))
                console.info(f"run directory: {self.path}")
                yield self
            except KeyboardInterrupt as exc:
                cause = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
                console.error(f"{'terminated' if cause == 'SIGTERM' else 'interrupted'} ({cause}); "
                              "the run is marked interrupted")
                self.write_status("interrupted", error=cause)
                raise
            except BaseException as exc:
                full = disk_full(exc)
                if full is not None:
                    with contextlib.suppress(OSError):  # the status may not fit on the full disk either
                        self.write_status("failed", error=full.one_line())
                    raise full from None
                reason = exc.one_line() if isinstance(exc, RecsysError) else f"{type(exc).__name__}: {exc}"
                self.write_status(
                    "failed", error=reason, traceback=traceback.format_exc(limit=20)
                )
                raise
            else:
                if final_status:
                    self.write_status("succeeded")
                    self.point_latest()
            finally:
                with contextlib.suppress(OSError):
                    self.write_timing()


def effective_status(run: RunDirectory | str | os.PathLike[str]) -> str:
    """A run's status, with ``running`` read as ``dead`` when its process is gone from this host.

    status.json records the pid, its start time and the host of the process that wrote it (the start
    time tells a reused pid from the run's own process); a run on another host cannot
    be checked from here and keeps ``running``. ``unknown`` when status.json is missing or unreadable.
    """
    path = run.path if isinstance(run, RunDirectory) else Path(run)
    try:
        status = json.loads((path / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown"
    if not isinstance(status, dict):
        return "unknown"
    state = str(status.get("status", "unknown"))
    pid = status.get("pid")
    started = status.get("pid_started")
    if state == "running" and status.get("host") == hostname() and isinstance(pid, int) and \
            not same_process(pid, started if isinstance(started, int) else None):
        return "dead"
    return state


def write_tidy_metrics(run_path: Path, rows: list[dict[str, Any]], *, title: str) -> None:
    """metrics.csv (tidy), metrics.json and metrics.md, replaced together (all or none); rows share their keys."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    header = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "---|" * len(frame.columns)
    body = "\n".join("| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False))
    atomic.write_together({
        run_path / "metrics.csv": frame.to_csv(index=False),
        run_path / "metrics.json": atomic.json_text(rows),
        run_path / "metrics.md": f"# {title}\n\n{header}\n{sep}\n{body}\n",
    })


def _fmt(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
