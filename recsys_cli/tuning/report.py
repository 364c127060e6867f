"""The end of a study: trials.csv, a table, Optuna's plots, best.yaml, and the refit evaluated on test."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_cli import atomic, console, experiment
from recsys_cli.config import Config, load_config, to_yaml
from recsys_cli.errors import RecsysError
from recsys_cli.redact import redact
from recsys_cli.tuning import space

PLOTS = ("optimization_history", "param_importances", "slice")


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value, seconds (ask to tell), run_seconds (the run alone), one
    ``param.KEY`` column per key, epochs reported, run directory, message."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        state = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
        row: dict[str, Any] = {"number": t.number, "state": state, "value": t.value, "seconds": seconds,
                               "run_seconds": t.user_attrs.get("run_seconds")}
        row.update({f"param.{k}": v for k, v in space.decode(t.params).items()})
        row["epochs_reported"] = len(t.intermediate_values)
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        row["message"] = redact(str(t.user_attrs.get("message", "")))
        rows.append(row)
    return pd.DataFrame(rows)


def best_config(base: Config, params: dict[str, Any]) -> Config:
    """The base config with the best params: the config a user reruns (its own split, runs folder, name)."""
    return space.apply(base, params)


def finish(study: Any, config: Config, study_dir: Path, *, n_trials: int, refit: str | None):
    import optuna

    from recsys_cli.tuning.study import TuneOutcome, counted

    frame = trials_frame(study)
    atomic.write_text(study_dir / "trials.csv", frame.to_csv(index=False))
    all_trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for state in frame.get("state", pd.Series(dtype=str)):
        states[state] = states.get(state, 0) + 1
    outcome = TuneOutcome(study_dir, study.study_name, len(counted(all_trials)), states)
    _print_table(frame, config)
    complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        console.warn("no trial completed: no best.yaml and no refit")
        return outcome
    best = study.best_trial
    outcome.best_value = float(best.value)
    outcome.best_params = space.decode(best.params)
    outcome.best_run_dir = Path(best.user_attrs["run_dir"]) if best.user_attrs.get("run_dir") else None
    chosen = best_config(config, outcome.best_params)
    outcome.best_yaml = study_dir / "best.yaml"
    header = (f"# best of study {study.study_name}: trial {best.number}, validation {config.search.metric} "
              f"{best.value:.6f}\n# params: {outcome.best_params}\n")
    atomic.write_text(outcome.best_yaml, header + to_yaml(chosen))
    console.success(f"best trial {best.number}: {config.search.metric} {best.value:.6f} on validation "
                    f"with {outcome.best_params}; config in {outcome.best_yaml}")
    write_plots(study, study_dir / "plots")
    finished = outcome.trials >= n_trials or config.search.timeout is not None  # a timeout is an end too
    if refit is not None and refit != "none" and finished:
        outcome.refit_run_dir, outcome.refit_metrics = refit_best(chosen, study_dir, best, how=refit)
    return outcome


def _print_table(frame: pd.DataFrame, config: Config, top: int = 10) -> None:
    from rich.table import Table

    if frame.empty:
        return
    ascending = config.search.direction == "minimize"
    shown = frame.sort_values("value", ascending=ascending, na_position="last").head(top)
    params = [c for c in frame.columns if c.startswith("param.")]
    table = Table(title=f"trials (best {min(top, len(frame))} of {len(frame)}, validation {config.search.metric})")
    for col in ["number", "state", "value", *params, "seconds"]:
        table.add_column(col.removeprefix("param."), justify="right" if col != "state" else "left")
    for _, row in shown.iterrows():
        table.add_row(*[_fmt(row[c]) for c in ["number", "state", "value", *params, "seconds"]])
    if console.screen_level() <= console.NORMAL:
        console.console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_plots(study: Any, folder: Path) -> list[Path]:
    """Optuna's matplotlib plots; each one that Optuna cannot draw (too few trials) is skipped with a note."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
                axes = getattr(ovm, f"plot_{name}")(study, **_plot_options(name))
            fig = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4.5))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # slice plots have colour bars tight_layout cannot place
                fig.tight_layout()
            with atomic.atomic_path(folder / f"{name}.png", suffix=".png") as tmp:
                fig.savefig(tmp, format="png", dpi=110)
            written.append(folder / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 - a plot is a convenience; the study's results are in trials.csv
            console.info(f"plot {name} skipped: {' '.join(str(exc).split())[:160]}")
        finally:
            plt.close("all")
    return written


def _plot_options(name: str) -> dict[str, Any]:
    if name != "param_importances":
        return {}
    # PED-ANOVA (Watanabe et al., IJCAI 2023) instead of Optuna's default fANOVA: a random forest
    # fitted on the trials, ~1 s for 20 trials, as long as five EASE trials on MovieLens-100K
    from optuna.importance import PedAnovaImportanceEvaluator

    return {"evaluator": PedAnovaImportanceEvaluator()}


def refit_best(chosen: Config, study_dir: Path, best: Any, *, how: str) -> tuple[Path, Any]:
    """Train the best config once and evaluate it on test: on train (as in the search) or on train+val."""
    fixed: dict[str, Any] = {"experiment.runs_dir": str(study_dir), "evaluation.split": "test",
                             "experiment.name": f"{chosen.experiment.name}-refit-{how.replace('+', '-')}"}
    if how == "train+val":
        fixed.update(_train_val_split(chosen, study_dir, best))
    config = space.apply(chosen, {}, **fixed)
    done = _finished_refit(config, study_dir)
    if done is not None:  # a rerun of a finished study: read the refit again instead of fitting again
        console.info(f"refit of the best config on {how} already in {done}")
        result = experiment.evaluate(done)
        return result.run_dir, result.metrics
    console.info(f"refit of the best config on {how}, evaluated on test")
    result = experiment.run(config)
    return result.run_dir, result.metrics


def _finished_refit(config: Config, study_dir: Path) -> Path | None:
    from recsys_cli.config import config_hash
    from recsys_cli.rundir import RunDirectory, run_label

    for path in sorted(study_dir.glob(f"*-{run_label(config)}-{config_hash(config)}*"), reverse=True):
        run = RunDirectory(path)
        if run.status().get("status") == "succeeded" and (path / "model" / "model.pt").is_file():
            return path
    return None


def _train_val_split(chosen: Config, study_dir: Path, best: Any) -> dict[str, Any]:
    """An imported split whose train is train+val and whose test is the study's test split."""
    import scipy.sparse as sp

    from recsys_cli.models.registry import get_model_class
    from recsys_cli.tasks.recommendation import prepare_split

    _dataset, split = prepare_split(chosen)
    if split.val is None:
        raise RecsysError("--refit train+val needs a validation part", hint="use a split with val_fraction > 0")
    folder = study_dir / "refit-split"
    folder.mkdir(exist_ok=True)
    for part, matrix in (("train", (split.train + split.val).tocsr()), ("test", split.test)):
        with atomic.atomic_path(folder / f"{part}.npz", suffix=".npz") as tmp:
            sp.save_npz(tmp, matrix)
    fixed: dict[str, Any] = {"data.split.protocol": "import", "data.split.import_dir": str(folder.resolve())}
    if getattr(get_model_class(chosen.model.name), "trainable", False):
        # no validation part is left to stop on: train as many epochs as the best trial's best epoch
        epochs = _best_epoch(best, maximize=chosen.search.direction == "maximize")
        fixed.update({"training.early_stopping.enabled": False, "training.epochs": epochs})
    return fixed


def _best_epoch(best: Any, *, maximize: bool) -> int:
    values = best.intermediate_values
    if not values:
        raise RecsysError("--refit train+val of a trainable model needs the best trial's validation curve",
                          hint="use --refit train")
    pick = max if maximize else min
    return int(pick(values, key=lambda epoch: values[epoch]))


def load_best(study_dir: Path) -> Config:
    return load_config(study_dir / "best.yaml", env={})
