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

from recsys_cli import atomic, console
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
from recsys_cli.rundir import RunDirectory, effective_status


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
    preflight(config, model_cls)
    run, notes = _reopen_for_resume(config, resume, model_cls) if resume else (RunDirectory.create(config), [])
    threads = torch.get_num_threads()
    try:
        return _train_in(run, notes, config, model_cls, evaluate=evaluate, resume=resume, hooks=hooks)
    finally:  # device.threads is this run's: a caller running several (tune, --seeds) keeps its own
        torch.set_num_threads(threads)


def _train_in(run: RunDirectory, notes: list[str], config: Config, model_cls, *, evaluate: bool,
              resume: str | Path | None, hooks: list | None) -> RunResult:
    with run.active(device=None):
        for note in notes:
            console.info(note)
        device, dtype = _runtime(config)
        # the count in effect now that device.threads applies (env.json was first written before it)
        run.update_env(device=describe_device(device), dtype=config.device.dtype, tf32=config.device.tf32,
                       torch_threads=torch.get_num_threads())
        console.info(f"experiment {config.experiment.name}: model {model_cls.name}, seed {config.experiment.seed}")
        resume_from = run.path if resume else None
        task = _task(model_cls.task)
        if model_cls.task == "classification":
            metrics = task.train(config, run, model_cls, device, dtype, evaluate=True)
        else:
            metrics = task.train(config, run, model_cls, device, dtype, evaluate=evaluate, resume_from=resume_from,
                                 hooks=hooks)
    return RunResult(run.path, "succeeded", metrics)


def preflight(config: Config, model_cls=None) -> None:
    """The checks that need no data and no run directory, made before one is created (by run, tune,
    sweep): the data set's name (checked when the config loads too; a config changed in Python since
    is checked again here), the accelerator and dtype, and the synthetic generator's memory."""
    from recsys_cli.data.registry import SYNTHETIC, check_name

    model_cls = model_cls or get_model_class(config.model.name)
    if model_cls.task == "recommendation":
        check_name(config.data.dataset)
        if config.data.dataset == SYNTHETIC:
            from recsys_cli.data.synthetic import check_memory

            check_memory(config.data.synthetic)
    resolve_dtype(config.device.dtype, resolve_device(config.device.accelerator, log=False))


def _reopen_for_resume(config: Config, resume: str | Path, model_cls) -> tuple[RunDirectory, list[str]]:
    """``--resume RUN_DIR`` continues in the same run directory.

    The config is compared with what the run recorded: the model and training sections of its last
    checkpoint, the rest from its config.yaml. Keys in ``checkpoint.SAFE_ON_RESUME`` (e.g.
    ``training.epochs``, to extend a run) may change, and config.yaml is then updated; any other
    change is refused naming the keys. Returns the run and the lines that say what changed.
    """
    from recsys_cli.config import resolved_dict, to_yaml
    from recsys_cli.config.search import get_dotted
    from recsys_cli.errors import ConfigError
    from recsys_cli.training import checkpoint as ckpt

    run = RunDirectory.open(resume)
    if not getattr(model_cls, "trainable", False) or model_cls.task != "recommendation":
        raise ConfigError(f"{model_cls.name} has no checkpoints to resume from",
                          hint="start a new run without --resume")
    if effective_status(run) == "running":  # two processes would train into one folder
        status = run.status()
        raise ConfigError(f"{run.path} is still running (pid {status.get('pid')} on {status.get('host')})",
                          hint="let it finish, or stop it (Ctrl-C) and resume then")
    # checked before anything is touched: a refused resume leaves the run's status as it was
    _, side = ckpt.load_checkpoint(run.path, "last")
    recorded = resolved_dict(run.config())
    for section in ("model", "training"):
        if isinstance(side.get(section), dict):
            recorded[section] = side[section]
    new = resolved_dict(config)
    allowed, refused = ckpt.resume_changes(recorded, new)
    if refused:
        changes = ", ".join(f"{k} ({_short(get_dotted(recorded, k))} → {_short(get_dotted(new, k))})"
                            for k in refused)
        raise ConfigError(
            f"--resume: the config differs from what {run.path} was trained with in {changes}",
            hint=f"only {', '.join(ckpt.SAFE_ON_RESUME[:5])}, … may change on resume; resume with the run's own "
                 f"config (recsys train {run.path / 'config.yaml'} --resume {run.path}) or start a new run",
        )
    notes = [f"resuming with {key} changed: {_short(get_dotted(recorded, key))} → {_short(get_dotted(new, key))}"
             for key in allowed]
    if allowed:
        atomic.write_text(run.path / "config.yaml", to_yaml(config))
    run.write_status("running", resumed=True)
    return run, notes


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


@dataclass
class TrainedRun:
    """A finished run's directory, config, split and saved recommender, loaded on the config's device."""

    run: RunDirectory
    config: Config
    model: Any
    split: Any


def load_trained(run_dir: str | Path, overrides: list[str] | None = None, *, run: RunDirectory | None = None
                 ) -> TrainedRun:
    """Open a run directory and load its split (fingerprint checked) and its saved recommender."""
    run = run or RunDirectory.open(run_dir)
    config = run.config(overrides)
    model_cls = get_model_class(config.model.name)
    if model_cls.task == "classification":
        raise RecsysError(f"{config.model.name} runs report their metrics during training",
                          hint=f"read {run.path / 'metrics.csv'}")
    if not (run.path / "model" / "model.pt").is_file():
        if not config.run.save_model:
            raise RecsysError(f"{run.path} has no saved model: it ran with run.save_model: false",
                              hint="rerun it with --set run.save_model=true to evaluate it again later")
        raise RecsysError(f"{run.path} has no saved model (model/model.pt)",
                          hint="the run did not finish fitting; rerun recsys train")
    from recsys_cli.data import load_split_for_run

    device, dtype = _runtime(config)
    split_obj = load_split_for_run(run, config)
    model = _load_model(model_cls, run.path / "model", train=split_obj.train, device=device, dtype=dtype)
    return TrainedRun(run, config, model, split_obj)


def evaluate(run_dir: str | Path, *, split: str | None = None, cutoffs: list[int] | None = None,
             overrides: list[str] | None = None) -> RunResult:
    """Evaluate a trained run from its saved model, without refitting.

    The training-time table is never lost: ``cutoffs`` are added to it (the model and split are the
    same, so its rows come out the same), and a re-evaluation with ``overrides`` goes beside it, to
    ``evaluations/`` (see :func:`recsys_cli.evaluation.report.write_metrics`)."""
    _check_reevaluation_keys(overrides or [])
    run = RunDirectory.open(run_dir)
    config = run.config(overrides)
    beside = list(overrides) if overrides else None
    if not overrides:  # with or without new cutoffs, the table keeps every cutoff it has
        from recsys_cli.evaluation.report import metrics_stem, table_cutoffs

        existing = table_cutoffs(run.path / f"{metrics_stem(split or config.evaluation.split)}.csv")
        cutoffs = sorted(set(cutoffs or config.evaluation.cutoffs) | set(existing))
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
        trained = load_trained(run.path, overrides, run=run)
        result = evaluate_model(trained.config, run, trained.model, trained.split, which=split, cutoffs=cutoffs,
                                overrides=beside)
        run.write_timing()
    return RunResult(run.path, "succeeded", result)


# what a re-evaluation of a saved model can change: how it is evaluated, where, and where the data lives
REEVALUATION_KEYS = ("evaluation.", "device.", "data.data_dir", "data.source", "data.md5", "data.verify")


def _check_reevaluation_keys(overrides: list[str]) -> None:
    from recsys_cli.config.loader import parse_override
    from recsys_cli.errors import ConfigError

    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if not any(key == k or key.startswith(k) for k in REEVALUATION_KEYS):
            raise ConfigError(f"--set {key} cannot apply to a re-evaluation: the model is saved and its split fixed",
                              hint="evaluate --set takes evaluation.* and device.* keys (and data.data_dir, "
                                   f"data.source); train a new run to change {key}")


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
