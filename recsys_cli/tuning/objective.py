"""One trial: the config with the trial's values, run as an ordinary run evaluated on validation only.

Trainable models report every validation value to the study through a training hook, and stop at
once when the pruner says so; closed-form models report their one value. The test split is never
evaluated here: the trial's config says ``evaluation.split: val``.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_cli import atomic, console, experiment
from recsys_cli.config import Config
from recsys_cli.models.registry import get_model_class
from recsys_cli.redact import redact
from recsys_cli.training.hooks import TrainingHook
from recsys_cli.tuning import space


class PruningHook(TrainingHook):
    """Reports each validation value to the trial; asks the fit to stop when the pruner says so."""

    def __init__(self, trial: Any, metric: str, warmup_epochs: int = 0):
        self.trial = trial
        self.metric = metric
        self.warmup_epochs = warmup_epochs
        self.pruned_at: int | None = None

    def on_validation(self, epoch: int, step: int, value: float, metrics: Mapping[str, float]) -> str | None:
        reported = float(metrics.get(self.metric, value))
        if not math.isfinite(reported):
            return None
        self.trial.report(reported, step=epoch)
        if epoch > self.warmup_epochs and self.trial.should_prune():
            self.pruned_at = epoch
            return f"pruned by the tuner at epoch {epoch} ({self.metric} {reported:.6g})"
        return None


@dataclass
class TrialOutcome:
    state: str  # complete | pruned | failed
    value: float | None
    run_dir: Path | None
    message: str | None = None


def trial_config(base: Config, params: dict[str, Any], *, number: int, study_dir: Path,
                 threads: int | None = None) -> Config:
    """The run config of trial ``number``: validation split only, the search cutoff evaluated."""
    search = base.search
    cutoffs = sorted(set(base.evaluation.cutoffs) | {search.cutoff})
    fixed: dict[str, Any] = {
        "evaluation.split": "val",
        "evaluation.cutoffs": cutoffs,
        "experiment.runs_dir": str(study_dir / "trials"),
        "experiment.name": f"{base.experiment.name}-trial{number:04d}",
    }
    if threads is not None and base.device.threads is None:
        fixed["device.threads"] = threads
    return space.apply(base, params, **fixed)


def run_trial(trial: Any, base: Config, study_dir: Path, *, threads: int | None = None) -> TrialOutcome:
    """Run one trial and tell nothing: the caller tells the study the outcome (state and value)."""
    search = base.search
    params = space.suggest(trial, search.space)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        config = trial_config(base, params, number=trial.number, study_dir=study_dir, threads=threads)
    except Exception as exc:  # noqa: BLE001 - a combination the schema's cross-field checks refuse
        message = " ".join(redact(str(exc)).split())[:300]
        return _finish(TrialOutcome("failed", None, None, f"invalid combination: {message}"), trial)
    trainable = getattr(get_model_class(config.model.name), "trainable", False)
    hook = PruningHook(trial, search.metric, search.warmup_epochs)
    run_dir: Path | None = None
    started = time.perf_counter()
    try:
        result = experiment.run(config, hooks=[hook] if trainable else [])
        run_dir = result.run_dir
        value = result.metrics.value(search.metric_name, search.cutoff)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure ends this trial only; the study goes on
        message = redact(exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}")
        trial.set_user_attr("run_seconds", time.perf_counter() - started)
        run_dir = run_dir or _newest_run(study_dir / "trials", config.experiment.name)
        return _finish(TrialOutcome("failed", None, run_dir, " ".join(message.split())), trial)
    trial.set_user_attr("run_seconds", time.perf_counter() - started)  # the run itself; the rest is the tuner's
    if not math.isfinite(value):
        return _finish(TrialOutcome("failed", None, run_dir, f"{search.metric} is {value}"), trial)
    if hook.pruned_at is not None:
        return _finish(TrialOutcome("pruned", value, run_dir, f"pruned at epoch {hook.pruned_at}"), trial)
    if not trainable:
        trial.report(value, step=0)  # closed-form models report once
    return _finish(TrialOutcome("complete", value, run_dir), trial)


def _finish(outcome: TrialOutcome, trial: Any) -> TrialOutcome:
    if outcome.run_dir is not None:
        trial.set_user_attr("run_dir", str(outcome.run_dir))
        atomic.write_json(outcome.run_dir / "trial.json", {
            "study": trial.study.study_name, "number": trial.number, "state": outcome.state,
            "value": outcome.value, "params": space.decode(trial.params), "message": outcome.message,
        })
    if outcome.message:
        trial.set_user_attr("message", outcome.message)
    if outcome.state == "failed":
        console.warn(f"trial {trial.number} failed: {outcome.message}")
    return outcome


def _newest_run(folder: Path, name: str) -> Path | None:
    runs = sorted(p for p in folder.glob(f"*-{name}-*") if p.is_dir()) if folder.is_dir() else []
    return runs[-1] if runs else None
