"""From a validated ``search.space`` to Optuna suggestions, grids, and the trial's config."""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys_cli.config import Config
from recsys_cli.config.search import SearchParam, get_dotted, set_dotted
from recsys_cli.errors import ConfigError

GRID_LIMIT = 10_000


def suggest(trial: Any, space: dict[str, SearchParam]) -> dict[str, Any]:
    """One value per key, drawn by the trial's sampler; keys keep their dotted names in Optuna."""
    params: dict[str, Any] = {}
    for key, p in space.items():
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, [_hashable(c) for c in p.choices or []])
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return {k: _unhashable(v) for k, v in params.items()}


def base_params(config: Config) -> tuple[dict[str, Any] | None, str]:
    """The config's own values of the space's keys, as Optuna params, or None and the key that lies outside."""
    data = config.model_dump(mode="json")
    params: dict[str, Any] = {}
    for key, p in config.search.space.items():
        value = get_dotted(data, key)
        if p.type == "categorical":
            inside = _hashable(value) in [_hashable(c) for c in p.choices or []]
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            inside = False
        else:
            on_step = p.step is None or abs((value - p.low) / p.step - round((value - p.low) / p.step)) < 1e-9
            inside = p.low <= value <= p.high and on_step and (p.type == "float" or value == int(value))
        if not inside:
            return None, f"{key}={value!r}"
        params[key] = _hashable(int(value) if p.type == "int" else float(value) if p.type == "float" else value)
    return params, ""


def grid(space: dict[str, SearchParam]) -> dict[str, list[Any]]:
    """Every value of each key, for Optuna's GridSampler: choices, or a stepped range."""
    out: dict[str, list[Any]] = {}
    for key, p in space.items():
        if p.type == "categorical":
            out[key] = [_hashable(c) for c in p.choices or []]
            continue
        if p.type == "float" and p.step is None:
            raise ConfigError(f"search.sampler grid cannot enumerate the continuous range of '{key}'",
                              hint="give it a step, or make it categorical with choices")
        step = p.step or 1
        values = np.arange(p.low, p.high + step / 2, step)
        if len(values) > GRID_LIMIT:
            raise ConfigError(f"search.space '{key}' has {len(values)} grid values", hint="use a larger step")
        out[key] = [int(v) for v in values] if p.type == "int" else [float(v) for v in values]
    return out


def apply(config: Config, params: dict[str, Any], **fixed: Any) -> Config:
    """``config`` with the params (and ``fixed`` dotted keys) set, validated again like a loaded config."""
    data = config.model_dump(mode="json")
    for key, value in {**params, **fixed}.items():
        set_dotted(data, key, value)
    return Config.model_validate(data)


# Optuna stores categorical choices that are None, bool, int, float or str; lists (layer sizes) travel as
# their YAML text and come back as lists.
def _hashable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    import json

    return "json:" + json.dumps(value)


def _unhashable(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("json:"):
        import json

        return json.loads(value[5:])
    return value


def decode(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored params → config values."""
    return {k: _unhashable(v) for k, v in params.items()}
