"""Groups of runs whose configs differ only in the seed, and their summary statistics.

A group's key is its flattened config without the keys that do not change what is computed (the seed
itself, the experiment's name, folders, data sources, threads, memory budgets and what is saved: IGNORED;
and the whole `training` section for a model that never trains, such as EASE: :func:`effective`). A key
set to null and a key that is absent are the same. Its
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
    # what a run keeps on disk, not what it computes
    "evaluation.save_recommendations", "run.save_model", "run.plot_formats",
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


def effective(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` without the `training` section when its model is a registered closed-form model
    (``trainable`` False): those keys keep their defaults but change nothing that model computes."""
    from recsys_cli.models.registry import get_model_class

    model = config.get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    try:
        trainable = get_model_class(name).trainable if isinstance(name, str) else True
    except ValueError:  # a model this version does not know: keep every key
        trainable = True
    return config if trainable else {k: v for k, v in config.items() if k != "training"}


def _flat_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened keys that make an experiment (not IGNORED, not null)."""
    return {k: v for k, v in flatten(effective(config)).items() if k not in IGNORED and v is not None}


def group_key(config: Mapping[str, Any]) -> str:
    """The same string for configs that differ only in IGNORED keys (the seed among them), in keys their
    model ignores, or in keys one sets to null and the other leaves out."""
    return json.dumps(_flat_settings(config), sort_keys=True, default=str)


def group_indices(configs: Iterable[Mapping[str, Any]]) -> list[list[int]]:
    """Indices of the configs, grouped by :func:`group_key`, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(group_key(config), []).append(i)
    return list(groups.values())


def differing_keys(configs: list[Mapping[str, Any]]) -> list[str]:
    """Flattened keys (not IGNORED) whose values are not the same in every config, in config order.

    A model key differs when any two configs disagree, one of them lacking it included: each model's
    own hyperparameters tell the rows apart. A key of another section differs only when two configs
    that set it disagree: a DAE's learning rate is no difference from EASE, which has none. Null keys
    and a closed-form model's `training` keys count as absent (:func:`group_key`)."""
    flats = [_flat_settings(c) for c in configs]
    keys: list[str] = []
    for flat in flats:
        keys += [k for k in flat if k not in keys]

    def differs(key: str) -> bool:
        values = [f.get(key) for f in flats] if key.startswith("model.") else [f[key] for f in flats if key in f]
        return len({json.dumps(v, default=str, sort_keys=True) for v in values}) > 1

    return [k for k in keys if differs(k)]


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
