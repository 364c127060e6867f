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
    from recsys_cli.data import get_split, load_dataset, split_seed

    def phase(name: str) -> contextlib.AbstractContextManager:
        return run.timing.phase(name) if run is not None else contextlib.nullcontext()

    with phase("data_load"):
        dataset = load_dataset(config.data, seed=split_seed(config))
    with phase("split"), console.spinner("splitting"):
        split = get_split(dataset, config.data, seed=split_seed(config))
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
    dataset, split = prepare_split(config, run)
    model = model_cls(config.model, device=device, dtype=dtype, seed=config.experiment.seed)
    ctx = FitContext(
        device=device, dtype=dtype, seed=config.experiment.seed, training=config.training,
        evaluation=config.evaluation, validation=split.val, run_dir=run.path, resume_from=resume_from,
        memory_budget_bytes=memory_budget(config, device), timing=run.timing, hooks=list(hooks or []),
        plot_formats=tuple(config.run.plot_formats),
    )
    from recsys_cli.memory import check_trainable

    check_trainable(model, split.train, config.training.batch_size, ctx.memory_budget_bytes)  # engine-built only
    console.info(f"fitting {model_cls.name} on {split.train.shape[0]} users × {split.train.shape[1]} items, "
                 f"{split.train.nnz} training interactions")
    # trainable models draw their own per-epoch bars; a closed-form fit gets a spinner
    fitting = contextlib.nullcontext() if model_cls.trainable else console.spinner(f"fitting {model_cls.name}")
    with run.timing.phase("fit"), fitting:
        model.fit(split.train, ctx)
    console.info(f"fit done in {run.timing.phases['fit']:.2f} s")
    if config.run.save_model:
        model.save(run.path / "model")
        if model_cls.trainable:
            from recsys_cli.training import checkpoint as ckpt

            ckpt.discard(run.path, "best")  # the same weights as model/model.pt: kept once
    else:
        console.info("run.save_model is false: the fitted model is not saved (recsys evaluate cannot reload it)")
    if not evaluate:
        return None
    result = evaluate_model(config, run, model, split, dataset=dataset)
    if config.evaluation.save_recommendations:
        from recsys_cli.evaluation.recommend import DEFAULT_NAME, write_recommendations

        with run.timing.phase("recommend"):
            write_recommendations(config, model, split, run.path / DEFAULT_NAME, k=config.evaluation.save_recommendations,
                                  exclude_seen=config.evaluation.exclude_seen, dataset=dataset)
    return result


def evaluate_model(config: Config, run: RunDirectory, model: Recommender, split, *, which: str | None = None,
                   cutoffs: list[int] | None = None, overrides: list[str] | None = None, dataset=None):
    """Evaluate and write the metrics files; ``overrides`` (a list) marks a re-evaluation written beside
    the training-time table (see :func:`recsys_cli.evaluation.report.write_metrics`)."""
    from recsys_cli.data.ids import user_ids_or_none
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
    user_ids = user_ids_or_none(config.data, split, dataset)
    if user_ids is None:
        console.warn("the data set's user ids are not cached; the per-user file's user_id column is left empty")
    result.extra["metrics_file"] = str(write_metrics(
        run.path, result, split_name=which, title=f"{config.experiment.name}: {model.name}", overrides=overrides,
        user_ids=user_ids, fingerprint=split.fingerprint or None))
    print_table(result)
    return result

