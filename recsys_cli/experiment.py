"""The Python API behind the CLI: ``train``, ``run`` and ``evaluate`` one experiment.

    from recsys_cli import load_config, experiment
    result = experiment.run(load_config("configs/mlp-iris.yaml"))
    print(result.run_dir, result.metrics)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recsys_cli import console
from recsys_cli.config import Config
from recsys_cli.devices import (
    configure_tf32,
    configure_threads,
    describe_device,
    resolve_device,
    resolve_dtype,
    seed_everything,
)
from recsys_cli.errors import RecsysError
from recsys_cli.models.registry import get_model_class
from recsys_cli.rundir import RunDirectory


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: Any = None  # evaluation result (recommenders) or metric rows (classifiers)


def _task(name: str):
    if name == "classification":
        from recsys_cli.tasks import classification

        return classification
    from recsys_cli.tasks import recommendation

    return recommendation


def train(config: Config, *, evaluate: bool = False, resume: str | Path | None = None,
          hooks: list | None = None) -> RunResult:
    """Create a run directory, then split (if needed), fit and save the model; optionally evaluate.

    ``hooks`` (:class:`recsys_cli.training.hooks.TrainingHook`) see each epoch's values and each
    validation value of a trainable model, and may stop its fit.
    """
    try:
        model_cls = get_model_class(config.model.name)
    except ValueError as exc:
        raise RecsysError(str(exc)) from None
    _preflight(config, model_cls)
    run = _reopen_for_resume(config, resume, model_cls) if resume else RunDirectory.create(config)
    with run.active(device=None):
        device, dtype = _runtime(config)
        run.update_env(device=describe_device(device), dtype=config.device.dtype, tf32=config.device.tf32)
        console.info(f"experiment {config.experiment.name}: model {model_cls.name}, seed {config.experiment.seed}")
        resume_from = run.path if resume else None
        task = _task(model_cls.task)
        if model_cls.task == "classification":
            metrics = task.train(config, run, model_cls, device, dtype, evaluate=True)
        else:
            metrics = task.train(config, run, model_cls, device, dtype, evaluate=evaluate, resume_from=resume_from,
                                 hooks=hooks)
    return RunResult(run.path, "succeeded", metrics)


def _preflight(config: Config, model_cls) -> None:
    """The checks that need no data and no run directory, made before one is created: the data set's
    name, the accelerator, and (for the synthetic data set) the generator's memory."""
    from recsys_cli.data.registry import SYNTHETIC, check_name

    if model_cls.task == "recommendation":
        check_name(config.data.dataset)
        if config.data.dataset == SYNTHETIC:
            from recsys_cli.data.synthetic import check_memory

            check_memory(config.data.synthetic)
    resolve_dtype(config.device.dtype, resolve_device(config.device.accelerator, log=False))


def _reopen_for_resume(config: Config, resume: str | Path, model_cls) -> RunDirectory:
    """``--resume RUN_DIR`` continues in the same run directory, with the config it was started with."""
    from recsys_cli.config import config_hash
    from recsys_cli.errors import ConfigError

    run = RunDirectory.open(resume)
    if not getattr(model_cls, "trainable", False) or model_cls.task != "recommendation":
        raise ConfigError(f"{model_cls.name} has no checkpoints to resume from",
                          hint="start a new run without --resume")
    if config_hash(run.config()) != config_hash(config):
        raise ConfigError(f"the config differs from the one {run.path} was started with",
                          hint=f"resume with the run's own config: recsys train {run.path / 'config.yaml'} "
                               f"--resume {run.path}")
    run.write_status("running", resumed=True)
    return run


def _runtime(config: Config) -> tuple[torch.device, torch.dtype]:
    """Threads, TF32, seeds, then the device and dtype: the same for training and re-evaluation."""
    configure_threads(config.device.threads)
    configure_tf32(config.device.tf32)
    seed_everything(config.experiment.seed)
    device = resolve_device(config.device.accelerator)
    return device, resolve_dtype(config.device.dtype, device)


def run(config: Config, *, hooks: list | None = None) -> RunResult:
    """The everyday command: split (if needed), train and evaluate in one go."""
    return train(config, evaluate=True, hooks=hooks)


def evaluate(run_dir: str | Path, *, split: str | None = None, cutoffs: list[int] | None = None,
             overrides: list[str] | None = None) -> RunResult:
    """Evaluate a trained run from its saved model, without refitting.

    The training-time table is never lost: ``cutoffs`` are added to it (the model and split are the
    same, so its rows come out the same), and a re-evaluation with ``overrides`` goes beside it, to
    ``evaluations/`` (see :func:`recsys_cli.evaluation.report.write_metrics`)."""
    run = RunDirectory.open(run_dir)
    config = run.config(overrides)
    beside = list(overrides) if overrides else None
    if cutoffs and not overrides:
        from recsys_cli.evaluation.report import metrics_stem, table_cutoffs

        cutoffs = sorted(set(cutoffs) | set(table_cutoffs(run.path / f"{metrics_stem(split or config.evaluation.split)}.csv")))
    model_cls = get_model_class(config.model.name)
    if model_cls.task == "classification":
        raise RecsysError(f"{config.model.name} runs report their metrics during training",
                          hint=f"read {run.path / 'metrics.csv'}")
    if not (run.path / "model" / "model.pt").is_file():
        raise RecsysError(f"{run.path} has no saved model (model/model.pt)",
                          hint="the run did not finish fitting; rerun recsys train")
    from recsys_cli.data import load_split_for_run
    from recsys_cli.tasks.recommendation import evaluate_model

    # keep the original run's phases (fit, split, ...) in timing.json; only "evaluate" is replaced
    try:
        previous_timing = run.read_json("timing.json")
    except (OSError, ValueError):
        previous_timing = {}
    for name, seconds in (previous_timing.get("seconds") or {}).items():
        if name not in ("total", "evaluate"):
            run.timing.phases[name] = seconds
    for name, value in previous_timing.items():
        if name not in ("seconds", "peak_rss_bytes", "peak_cuda_allocated_bytes"):
            run.timing.figures[name] = value

    with console.tee(run.path / "log.txt"):
        device, dtype = _runtime(config)
        split_obj = load_split_for_run(run, config)
        model = _load_model(model_cls, run.path / "model", train=split_obj.train, device=device, dtype=dtype)
        result = evaluate_model(config, run, model, split_obj, which=split, cutoffs=cutoffs, overrides=beside)
        run.write_timing()
    return RunResult(run.path, "succeeded", result)


def _load_model(model_cls, directory: Path, **kwargs):
    """``model_cls.load``, with damaged or foreign model files reported as one line, not a traceback."""
    import pickle

    from recsys_cli.errors import DataError

    try:
        return model_cls.load(directory, **kwargs)
    except RecsysError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"the saved model in {directory} cannot be loaded ({type(exc).__name__}: {reason[:200]})",
                        hint="its files are damaged or from another version; train the run again") from None
