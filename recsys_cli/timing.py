"""Phase timers and peak-memory figures for timing.json."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from recsys_cli.devices import peak_rss_bytes


class Timing:
    """Seconds per named phase, plus free-form figures (users/s, samples/s, ...)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.figures: dict[str, Any] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": {k: round(v, 6) for k, v in self.phases.items()}}
        out["seconds"]["total"] = round(sum(self.phases.values()), 6)
        out["peak_rss_bytes"] = peak_rss_bytes()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_cuda_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
        out.update(self.figures)
        return out
