"""Classification pipeline (the MLP-on-Iris sanity check): load, fit, report accuracy."""

from __future__ import annotations

import pandas as pd
import torch

from recsys_cli import atomic, console
from recsys_cli.config import Config
from recsys_cli.models.base import Model
from recsys_cli.rundir import RunDirectory, write_tidy_metrics


def train(config: Config, run: RunDirectory, model_cls: type[Model], device: torch.device,
          dtype: torch.dtype, *, evaluate: bool = True) -> list[dict]:
    from recsys_cli.models.mlp_iris import load_iris_split

    with run.timing.phase("data_load"):
        data = load_iris_split(config.model)
        console.info(f"iris: {len(data.x_train)} train rows, {len(data.x_test)} test rows")
    from recsys_cli.memory import check_constructed
    from recsys_cli.tasks.recommendation import memory_budget

    check_constructed(model_cls, config.model, dtype, config.training.batch_size, memory_budget(config, device))
    model = model_cls(config.model, device=device, dtype=dtype, seed=config.experiment.seed)
    with run.timing.phase("fit"):
        curve = model.fit(data, config.training)
    with atomic.atomic_path(run.path / "loss_curve.csv") as tmp:
        pd.DataFrame(curve).to_csv(tmp, index=False)
    (run.path / "model").mkdir(exist_ok=True)
    with atomic.atomic_path(run.path / "model" / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state().items()}, tmp)
    last = curve[-1]
    rows = [
        {"split": "test", "metric": "accuracy", "value": last["test_accuracy"]},
        {"split": "test", "metric": "loss", "value": last["test_loss"]},
        {"split": "train", "metric": "accuracy", "value": last["train_accuracy"]},
        {"split": "train", "metric": "loss", "value": last["train_loss"]},
    ]
    with run.timing.phase("evaluate"):
        write_tidy_metrics(run.path, rows, title=f"{config.experiment.name}: mlp-iris")
    console.success(
        f"test accuracy {last['test_accuracy']:.4f} (test loss {last['test_loss']:.4f}); "
        f"train accuracy {last['train_accuracy']:.4f}"
    )
    return rows
