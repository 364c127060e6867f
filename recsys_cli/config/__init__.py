"""Config schema and loading. See :mod:`recsys_cli.config.schema` for every key."""

from recsys_cli.config.loader import config_hash, load_config, resolved_dict, to_yaml
from recsys_cli.config.schema import (
    Config,
    DataConfig,
    DeviceConfig,
    EvaluationConfig,
    ExperimentConfig,
    ModelConfig,
    SplitConfig,
    TrainingConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "DeviceConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "SplitConfig",
    "TrainingConfig",
    "config_hash",
    "load_config",
    "resolved_dict",
    "to_yaml",
]
