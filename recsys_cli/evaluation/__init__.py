"""The course's holdout evaluator (27 columns), vectorised and batched. See docs/metrics.md."""

from __future__ import annotations

from recsys_cli.errors import NotBuiltYet


def evaluate(*args, **kwargs):  # pragma: no cover - replaced by the evaluator issue
    raise NotBuiltYet("the evaluator is not built yet", hint="see the evaluator issue")
