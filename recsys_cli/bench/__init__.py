"""Benchmarks that are commands of their own: ``recsys bench-dtype`` (:mod:`recsys_cli.bench.dtype`).

Each measured repeat runs in a fresh Python process (:mod:`recsys_cli.bench.worker`) through the
same :func:`recsys_cli.experiment.run` as ``recsys run``, so memory figures start clean and every
number in the report can be traced to a run directory of its own.
"""

from __future__ import annotations

from recsys_cli.bench.dtype import BenchResult, Variant, bench_dtype, plan_variants

__all__ = ["BenchResult", "Variant", "bench_dtype", "plan_variants"]
