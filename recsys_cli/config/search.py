"""The ``search:`` section of a config: what ``recsys tune`` optimises and over which config keys.

    search:
      metric: NDCG@10            # a validation column at a cutoff
      direction: maximize
      trials: 30
      space:
        model.l2_norm: {type: float, low: 1.0, high: 10000.0, log: true}
        model.implicit: {type: categorical, choices: [true, false]}

Each key of ``space`` is a dotted config key. :func:`check_space` (called when a config loads)
rejects keys the schema does not have (with a did-you-mean) and ranges whose ends or choices the
key's own type refuses, so a bad space stops at load time, not in trial 17.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from recsys_cli.errors import ConfigError

if TYPE_CHECKING:
    from recsys_cli.config.schema import Config

_METRIC = re.compile(r"^\s*([A-Za-z_]+)\s*@\s*(\d+)\s*$")


def canonical_metric(name: str) -> str:
    """An evaluator column's canonical name, for a config validator: a ValueError with a did-you-mean."""
    from recsys_cli.evaluation.report import metric_name

    try:
        return metric_name(name)
    except ConfigError as exc:
        raise ValueError(exc.one_line()) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class SearchParam(_Strict):
    """One dimension of the space: a float or int range, or a list of choices."""

    type: Literal["float", "int", "categorical"] = Field(..., description="float, int or categorical.")
    low: float | None = Field(None, description="Lower end (float, int).")
    high: float | None = Field(None, description="Upper end, inclusive (float, int).")
    log: bool = Field(False, description="Sample on a log scale (needs low > 0).")
    step: float | None = Field(None, gt=0, description="Grid step of the range (not with log).")
    choices: list[Any] | None = Field(None, description="Values to choose from (categorical).")

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("categorical takes 'choices', not low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not 'choices' (use type: categorical)")
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs both 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)
                                   or (self.step is not None and self.step != int(self.step))):
            raise ValueError("int ranges need whole-number low, high and step")
        return self

    def ends(self) -> list[Any]:
        """The values to try against the key's own type: both ends, or every choice."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class SearchConfig(_Strict):
    metric: str = Field("NDCG@10", description="Validation metric to optimise, COLUMN@CUTOFF.")
    direction: Literal["maximize", "minimize"] = Field("maximize", description="Whether higher or lower is better.")
    trials: int = Field(30, ge=1, description="Trials in the study (all workers together; resumed studies count "
                                              "earlier trials).")
    timeout: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds.")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler (grid needs choices or "
                                                                         "stepped ranges).")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="Optuna pruner for trainable "
                                                                                 "models.")
    startup_trials: int = Field(5, ge=0, description="Trials the pruner and TPE watch before acting.")
    warmup_epochs: int = Field(0, ge=0, description="Epochs of a trial that are never pruned.")
    seed: int | None = Field(None, description="Sampler seed (default: experiment.seed).")
    start_from_base: bool = Field(True, description="Trial 0 runs the config's own values of the space's keys "
                                                    "(when they lie in the space), so the best trial is never "
                                                    "worse on validation than the config the search started from.")
    space: dict[str, SearchParam] = Field({}, description="Dotted config key → {type, low, high, log, step, "
                                                          "choices}.")

    @field_validator("metric")
    @classmethod
    def _metric_at_cutoff(cls, value: str) -> str:
        match = _METRIC.match(value)
        if not match or int(match.group(2)) < 1:
            raise ValueError("must be COLUMN@CUTOFF, e.g. NDCG@10")
        return f"{canonical_metric(match.group(1))}@{int(match.group(2))}"

    @property
    def metric_name(self) -> str:
        return self.metric.split("@")[0]

    @property
    def cutoff(self) -> int:
        return int(self.metric.split("@")[1])


def leaf_keys(config: Config) -> list[str]:
    """Every dotted key of the config (model keys of its own model), for did-you-mean."""
    from recsys_cli.config.schema import Config as ConfigCls

    keys: list[str] = []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        for name, field in cls.model_fields.items():
            annotation = field.annotation
            if cls is ConfigCls and name == "search":
                continue
            if cls is ConfigCls and name == "model":
                walk(type(config.model), "model.")
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            else:
                keys.append(f"{prefix}{name}")

    walk(ConfigCls, "")
    return keys


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    """The value at a dotted key of a nested dict, or None where a part is missing."""
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def check_space(config: Config) -> None:
    """Reject space keys the schema lacks and values the key's type refuses; the message names the key."""
    from recsys_cli.config.schema import Config as ConfigCls

    known = leaf_keys(config)
    base = config.model_dump(mode="json")
    for key, param in config.search.space.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"search.space: unknown key '{key}'",
                              hint=f"{hint}space keys are dotted config keys such as model.{_first_model_key(known)}")
        if key in ("model.name", "experiment.runs_dir", "data.data_dir"):
            raise ConfigError(f"search.space: '{key}' cannot be searched", hint="search hyperparameters, not paths or "
                              "the model; tune each model with its own config")
        for value in param.ends():
            trial = _copy(base)
            set_dotted(trial, key, value)
            try:
                ConfigCls.model_validate(trial)
            except ValidationError as exc:
                msg = exc.errors(include_url=False)[0].get("msg", "invalid value")
                raise ConfigError(f"search.space: '{key}' cannot take {value!r}: {msg}",
                                  hint="keep the range inside what the key accepts (recsys models lists them)"
                                  ) from None


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(data)


def _first_model_key(known: list[str]) -> str:
    model_keys = [k.split(".", 1)[1] for k in known if k.startswith("model.") and k != "model.name"]
    return model_keys[0] if model_keys else "NAME"
