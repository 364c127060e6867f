"""Groups of runs whose configs differ only in the seed, and their summary statistics.

A group's key is its flattened config without the keys that do not change what is computed (the seed
itself, the experiment's name, folders, data sources, threads and memory budgets: IGNORED). Its
summary of a metric over the group's runs is the mean, the sample standard deviation (ddof 1) and the
t-based confidence interval of the mean, mean ± t(1 − (1 − level)/2, n − 1) · sd / √n (SciPy's
Student t quantile). One run has sd and interval NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SEED_KEY = "experiment.seed"
# flattened config keys that never make two runs different experiments
IGNORED = (
    SEED_KEY, "experiment.name", "experiment.runs_dir", "data.data_dir", "data.source", "data.md5",
    "data.verify", "device.threads", "device.memory_budget_gb",
)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"l2_norm": 5}}`` → ``{"model.l2_norm": 5}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def group_key(config: Mapping[str, Any]) -> str:
    """The same string for configs that differ only in IGNORED keys (the seed among them)."""
    flat = {k: v for k, v in flatten(config).items() if k not in IGNORED}
    return json.dumps(flat, sort_keys=True, default=str)


def group_indices(configs: Iterable[Mapping[str, Any]]) -> list[list[int]]:
    """Indices of the configs, grouped by :func:`group_key`, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(group_key(config), []).append(i)
    return list(groups.values())


def differing_keys(configs: list[Mapping[str, Any]]) -> list[str]:
    """Flattened keys (not IGNORED) whose values are not the same in every config, in config order."""
    flats = [flatten(c) for c in configs]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys and k not in IGNORED]
    missing = object()
    return [k for k in keys if len({json.dumps(f.get(k, missing), default=str, sort_keys=True) for f in flats}) > 1]


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: Iterable[float], level: float = 0.95) -> Summary:
    """Mean, sample sd and t confidence interval of the mean of ``values`` (NaNs left out)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(1 - (1 - level) / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)
