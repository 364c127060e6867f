"""Recommendation pipeline: data set → split → fit → save → evaluate → metrics files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from recsys_cli import console
from recsys_cli.config import Config
from recsys_cli.devices import available_memory_bytes
from recsys_cli.models.base import FitContext, Recommender
from recsys_cli.rundir import RunDirectory


def prepare_split(config: Config, run: RunDirectory | None = None):
    """Load (downloading if needed) the data set and make or reuse the configured split."""
    from recsys_cli.data import get_split, load_dataset

    def phase(name: str) -> contextlib.AbstractContextManager:
        return run.timing.phase(name) if run is not None else contextlib.nullcontext()

    with phase("data_load"):
        dataset = load_dataset(config.data, seed=config.experiment.seed)
    with phase("split"):
        split = get_split(dataset, config.data, seed=config.experiment.seed)
    if run is not None:
        run.update_env(split={"fingerprint": split.fingerprint, "directory": str(split.directory)})
    return dataset, split


def memory_budget(config: Config, device: torch.device) -> int:
    if config.device.memory_budget_gb is not None:
        return int(config.device.memory_budget_gb * 2**30)
    return available_memory_bytes(device)


def train(config: Config, run: RunDirectory, model_cls: type[Recommender], device: torch.device,
          dtype: torch.dtype, *, evaluate: bool = True, resume_from: Path | None = None,
          hooks: list | None = None):
    _dataset, split = prepare_split(config, run)
    model = model_cls(config.model, device=device, dtype=dtype, seed=config.experiment.seed)
    ctx = FitContext(
        device=device, dtype=dtype, seed=config.experiment.seed, training=config.training,
        evaluation=config.evaluation, validation=split.val, run_dir=run.path, resume_from=resume_from,
        memory_budget_bytes=memory_budget(config, device), timing=run.timing, hooks=list(hooks or []),
    )
    if getattr(model_cls, "trainable", False):
        from recsys_cli.memory import check_trainable

        check_trainable(model, split.train, config.training.batch_size, ctx.memory_budget_bytes)
    console.info(f"fitting {model_cls.name} on {split.train.shape[0]} users × {split.train.shape[1]} items, "
                 f"{split.train.nnz} training interactions")
    with run.timing.phase("fit"):
        model.fit(split.train, ctx)
    console.info(f"fit done in {run.timing.phases['fit']:.2f} s")
    model.save(run.path / "model")
    if not evaluate:
        return None
    return evaluate_model(config, run, model, split)


def evaluate_model(config: Config, run: RunDirectory, model: Recommender, split, *, which: str | None = None,
                   cutoffs: list[int] | None = None, overrides: list[str] | None = None):
    """Evaluate and write the metrics files; ``overrides`` (a list) marks a re-evaluation written beside
    the training-time table (see :func:`recsys_cli.evaluation.report.write_metrics`)."""
    from recsys_cli.evaluation import evaluate
    from recsys_cli.evaluation.report import print_table, write_metrics

    which = which or config.evaluation.split
    truth = split.val if which == "val" else split.test
    if truth is None:
        from recsys_cli.errors import DataError

        raise DataError(f"the split at {split.directory} has no {which} part",
                        hint="use --split test, or a split with data.split.val_fraction > 0")
    ev = config.evaluation
    with run.timing.phase("evaluate"):
        result = evaluate(
            model, split.train, truth, cutoffs or ev.cutoffs, min_ratings_per_user=ev.min_ratings_per_user,
            exclude_seen=ev.exclude_seen, ignore_users=ev.ignore_users, ignore_items=ev.ignore_items,
            block_size=ev.user_batch_size, device=model.device,
        )
    run.timing.figures["evaluation_users_per_second"] = result.users_per_second
    result.extra["metrics_file"] = str(write_metrics(run.path, result, split_name=which, overrides=overrides,
                                                     title=f"{config.experiment.name}: {model.name}"))
    print_table(result)
    return result

