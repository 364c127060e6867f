"""Hyperparameter search on Optuna: ``recsys tune`` (a study) and ``recsys sweep`` (a grid of runs).

    from recsys_cli import load_config
    from recsys_cli.tuning import tune
    outcome = tune(load_config("configs/search/ease.yaml"), trials=20)
    print(outcome.study_dir, outcome.best_value, outcome.best_params)
"""

from recsys_cli.tuning.study import TuneOutcome, tune
from recsys_cli.tuning.sweep import sweep

__all__ = ["TuneOutcome", "sweep", "tune"]
