"""Callbacks a caller hands to a fit: per-epoch values in, a request to stop out.

A hook receives what the training engine logs after every epoch and every validation value as it is
computed. ``on_validation`` may return a reason (a short string) to stop the fit at once: the tuner
uses this to prune a trial, and the run records the reason. Closed-form models, which have no epochs,
call ``on_validation`` once with their final validation value when the caller asks for it.

    class PrintHook(TrainingHook):
        def on_validation(self, epoch, step, value, metrics):
            print(epoch, value)
            return "pruned" if value < 0.01 else None
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class TrainingHook:
    """Base class: override what you need; every method is optional and does nothing by default."""

    def on_fit_start(self, model: Any, *, epochs: int, start_epoch: int) -> None:
        """Before the first epoch (``start_epoch`` > 1 when resuming)."""

    def on_epoch_end(self, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        """After each epoch's training pass; ``logs`` is that epoch's train_log.csv row so far."""

    def on_validation(self, epoch: int, step: int, value: float, metrics: Mapping[str, float]) -> str | None:
        """A validation value (the early-stopping metric) as soon as it is known.

        ``metrics`` maps column names at their cutoff (e.g. ``{"NDCG@10": 0.21}``) to values; ``value``
        is the early-stopping metric's. Return a non-empty reason to stop training now (e.g.
        ``"pruned by the tuner"``), else None.
        """
        return None

    def on_fit_end(self, epoch: int, step: int, stop_reason: str | None) -> None:
        """After the last epoch, whatever ended the fit."""


class TrainingStopped(Exception):
    """Raised from inside an epoch (a model's ``train_epoch``) to stop the fit at once; carries the reason.

    The engine records the reason and keeps the epochs completed before (the interrupted epoch is
    not logged or checkpointed). A reason returned by ``on_validation`` needs no exception."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def first_stop_reason(hooks: Sequence[TrainingHook], epoch: int, step: int, value: float,
                      metrics: Mapping[str, float]) -> str | None:
    """Call ``on_validation`` on every hook (all of them see the value); the first reason wins."""
    reason: str | None = None
    for hook in hooks:
        answer = hook.on_validation(epoch, step, value, metrics)
        if answer and reason is None:
            reason = str(answer)
    return reason
