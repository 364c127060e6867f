"""recsys tune and sweep: search-space validation, a planted optimum, pruning, resume, best.yaml, masking."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from recsys_cli import experiment
from recsys_cli.cli.app import app
from recsys_cli.config import load_config
from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.models.registry import available, register
from recsys_cli.models.toppop import TopPop
from recsys_cli.redact import redact
from recsys_cli.training.hooks import first_stop_reason
from recsys_cli.tuning import tune
from recsys_cli.tuning.sweep import parse_grid

from .conftest import CONFIGS

runner = CliRunner()
SEARCH_DIR = CONFIGS / "search"


def _config(space: dict, *, model: dict | None = None, **search) -> dict:
    return {
        "experiment": {"name": "syn", "seed": 3},
        "data": {"dataset": "synthetic",
                 "synthetic": {"n_users": 300, "n_items": 120, "n_interactions": 6000, "n_factors": 4}},
        "model": model or {"name": "ease", "l2_norm": 100.0},
        "evaluation": {"cutoffs": [10]},
        "device": {"accelerator": "cpu", "threads": 1},
        "search": {"metric": "NDCG@10", "trials": 4, "space": space, **search},
    }


LAMBDA = {"model.l2_norm": {"type": "float", "low": 1.0, "high": 10000.0, "log": True}}


# -- the search section ----------------------------------------------------------------------------
@pytest.mark.parametrize(("space", "needle"), [
    ({"model.l2_nrom": {"type": "float", "low": 1, "high": 2}}, "unknown key 'model.l2_nrom' — did you mean 'model.l2_norm'"),
    ({"training.learnin_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}, "did you mean 'training.learning_rate'"),
    ({"model.l2_norm": {"type": "float", "low": 5, "high": 5}}, "'search.space.model.l2_norm'"),
    ({"model.l2_norm": {"type": "float", "low": 0, "high": 10, "log": True}}, "log: true needs low > 0"),
    ({"model.implicit": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
    ({"model.topk": {"type": "int", "low": 0, "high": 50}}, "'model.topk' cannot take 0"),
    ({"model.implicit": {"type": "categorical", "choices": [True, "sometimes"]}}, "'model.implicit' cannot take 'sometimes'"),
    ({"model.l2_norm": {"type": "float", "low": -5, "high": 10}}, "'model.l2_norm' cannot take -5.0"),
    ({"model.name": {"type": "categorical", "choices": ["ease", "gfcf"]}}, "'model.name' cannot be searched"),
])
def test_bad_search_spaces_are_refused_at_load_naming_the_key(space, needle):
    with pytest.raises(ConfigError) as err:
        load_config(data=_config(space))
    assert needle in str(err.value)


def test_search_section_is_left_out_of_run_configs_and_hashes():
    from recsys_cli.config import config_hash, to_yaml

    plain = _config({})
    del plain["search"]
    with_search = load_config(data=_config(LAMBDA))
    assert with_search.search.space["model.l2_norm"].log is True
    assert "search" not in yaml.safe_load(to_yaml(with_search))
    assert config_hash(with_search) == config_hash(load_config(data=plain))


def test_bad_space_exits_2_from_the_cli(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_config({"model.l2_norm": {"type": "float", "low": 10, "high": 1}})))
    result = runner.invoke(app, ["tune", str(path)])
    assert result.exit_code == 2
    assert "search.space.model.l2_norm" in result.output and "low (10) must be below high (1)" in result.output


# -- shipped search files --------------------------------------------------------------------------
SEARCH_FILES = sorted(SEARCH_DIR.glob("*.yaml"))


def _search_model(path: Path) -> str | None:
    """The model a search file tunes: the one of the config it includes (None when that is not here)."""
    base = path.parent / yaml.safe_load(path.read_text())["base"]
    return yaml.safe_load(base.read_text())["model"]["name"] if base.is_file() else None


@pytest.mark.parametrize("path", SEARCH_FILES, ids=[p.stem for p in SEARCH_FILES])
def test_shipped_search_spaces_load(path):
    model = _search_model(path)
    if model is None or model not in available():
        pytest.skip(f"{path.name}: its model ({model or path.stem}) is not registered on this branch")
    config = load_config(path, env={})
    assert config.model.name == model and config.search.space, f"{path} has an empty search.space"
    assert config.evaluation.split == "test"  # trials switch to val themselves; the refit reads test


def test_every_registered_recommender_has_a_search_file():
    shipped = {_search_model(p) for p in SEARCH_FILES}
    missing = [m for m in available() if m not in shipped and m not in ("mlp-iris", "toppop")]
    assert not missing, f"no configs/search/ file for {missing}"


# -- studies on synthetic data ---------------------------------------------------------------------
def _brute_force_best(config, lambdas) -> tuple[float, float]:
    """Validation NDCG@10 of EASE over a fine λ grid, fitted directly (no run directories)."""
    from recsys_cli.evaluation import evaluate
    from recsys_cli.models.base import FitContext
    from recsys_cli.models.ease import EASE
    from recsys_cli.tasks.recommendation import prepare_split

    _, split = prepare_split(config)
    values = []
    for lam in lambdas:
        model = EASE(config.model.model_copy(update={"l2_norm": float(lam)}), device=torch.device("cpu"),
                     dtype=torch.float32, seed=3)
        model.fit(split.train, FitContext(device=torch.device("cpu"), dtype=torch.float32, seed=3))
        values.append(evaluate(model, split.train, split.val, [10]).value("NDCG", 10))
    best = int(np.argmax(values))
    return float(lambdas[best]), float(values[best])


def test_study_finds_the_planted_optimum_of_ease_lambda(runs_dir):
    config = load_config(data=_config(LAMBDA, trials=14, startup_trials=5, start_from_base=False))
    lam_star, ndcg_star = _brute_force_best(config, np.geomspace(1, 1e4, 41))
    outcome = tune(config, refit="none")
    assert outcome.trials == 14 and outcome.states == {"complete": 14}
    # the grid's best λ lies inside the range, not at an end: the optimum is planted in the middle
    assert 1 < lam_star < 1e4
    assert outcome.best_value >= ndcg_star - 0.005, (outcome.best_params, lam_star, ndcg_star)
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert list(frame["number"]) == list(range(14)) and (frame["state"] == "complete").all()
    assert set(frame.columns) >= {"number", "state", "value", "seconds", "param.model.l2_norm", "run_dir"}
    for run_dir in frame["run_dir"]:
        run = Path(run_dir)
        assert (run / "metrics-val.csv").is_file() and not (run / "metrics.csv").exists()  # never the test split
        assert yaml.safe_load((run / "config.yaml").read_text())["evaluation"]["split"] == "val"
    assert {p.name for p in (outcome.study_dir / "plots").iterdir()} >= {"optimization_history.png"}


def test_best_yaml_reruns_to_the_best_trials_metrics_and_refit_reads_test(runs_dir):
    config = load_config(data=_config({**LAMBDA, "model.implicit": {"type": "categorical",
                                                                      "choices": [True, False]}}, trials=4))
    outcome = tune(config, refit="train")
    best = load_config(outcome.best_yaml)
    assert best.model.l2_norm == pytest.approx(outcome.best_params["model.l2_norm"], rel=0, abs=0)
    assert best.evaluation.split == "test" and best.experiment.name == "syn"
    rerun = experiment.run(load_config(outcome.best_yaml, ["evaluation.split=val"]))
    trial_metrics = pd.read_csv(outcome.best_run_dir / "metrics-val.csv")
    rerun_metrics = pd.read_csv(rerun.run_dir / "metrics-val.csv")
    pd.testing.assert_frame_equal(trial_metrics, rerun_metrics)
    assert rerun.metrics.value("NDCG", 10) == outcome.best_value
    # the refit is the best config evaluated on test, once
    assert (outcome.refit_run_dir / "metrics.csv").is_file()
    refit_cfg = yaml.safe_load((outcome.refit_run_dir / "config.yaml").read_text())
    assert refit_cfg["model"]["l2_norm"] == best.model.l2_norm and refit_cfg["evaluation"]["split"] == "test"
    # the same command on the finished study runs no trial and no second refit
    again = tune(config, refit="train")
    assert again.study_dir == outcome.study_dir and again.refit_run_dir == outcome.refit_run_dir
    assert again.refit_metrics.value("NDCG", 10) == outcome.refit_metrics.value("NDCG", 10)
    assert len(list((outcome.study_dir / "trials").glob("*-syn-trial*"))) == 4


def test_refit_on_train_plus_val_trains_on_both_parts(runs_dir):
    config = load_config(data=_config(LAMBDA, trials=2))
    outcome = tune(config, refit="train+val")
    env = json.loads((outcome.refit_run_dir / "env.json").read_text())
    import scipy.sparse as sp

    from recsys_cli.tasks.recommendation import prepare_split

    _, split = prepare_split(config)
    imported = sp.load_npz(outcome.study_dir / "refit-split" / "train.npz")
    assert imported.nnz == split.train.nnz + split.val.nnz
    assert (sp.load_npz(outcome.study_dir / "refit-split" / "test.npz") != split.test).nnz == 0
    assert env["split"]["directory"]
    assert (outcome.refit_run_dir / "metrics.csv").is_file()


def _raise_on_call(monkeypatch, number: int, exc: BaseException) -> None:
    """Make the ``number``-th trial's run raise ``exc`` (a failure, or Ctrl-C) before it starts."""
    from recsys_cli.tuning import objective

    real_run = experiment.run
    calls = {"n": 0}

    def run(config, hooks=None):
        calls["n"] += 1
        if calls["n"] == number:
            raise exc
        return real_run(config, hooks=hooks)

    monkeypatch.setattr(objective.experiment, "run", run)


def test_failed_trials_are_recorded_with_their_message_and_the_study_goes_on(runs_dir, monkeypatch):
    from recsys_cli.errors import RunFailed

    _raise_on_call(monkeypatch, 2, RunFailed("the loss became NaN at epoch 3", hint="lower the learning rate"))
    outcome = tune(load_config(data=_config(LAMBDA, trials=3)), refit="none")
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert list(frame["state"]) == ["complete", "fail", "complete"]
    assert "the loss became NaN at epoch 3" in frame.loc[1, "message"]
    assert outcome.trials == 3


def test_resume_after_ctrl_c_continues_the_trial_count(runs_dir, monkeypatch):
    config = load_config(data=_config(LAMBDA, trials=5))
    _raise_on_call(monkeypatch, 3, KeyboardInterrupt())
    with pytest.raises(RecsysError) as err:
        tune(config, refit="none")
    assert err.value.exit_code == 130 and "interrupted (Ctrl-C) with 2 of 5 trials done" in str(err.value)
    assert "rerun the same command to resume" in str(err.value)
    study_dirs = list(runs_dir.glob("*-syn-ease-synthetic-tune"))
    assert len(study_dirs) == 1
    first = pd.read_csv(study_dirs[0] / "trials.csv")
    assert list(first["state"]) == ["complete", "complete", "interrupted"]

    outcome = tune(config, refit="none")  # the same command again
    assert outcome.study_dir == study_dirs[0] and outcome.trials == 5
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert list(frame["number"]) == [0, 1, 2, 3, 4, 5]
    assert list(frame["state"]) == ["complete", "complete", "interrupted", "complete", "complete", "complete"]
    # the first two trials were not run again: each number has one run directory
    assert len(list((outcome.study_dir / "trials").glob("*-syn-trial0000-*"))) == 1


def test_one_trial_runs_exactly_the_base_config(runs_dir):
    outcome = tune(load_config(data=_config(LAMBDA, trials=1)), refit="none")
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert outcome.trials == 1 and outcome.states == {"complete": 1}
    assert list(frame["number"]) == [0] and frame.loc[0, "param.model.l2_norm"] == 100.0
    assert outcome.best_params == {"model.l2_norm": 100.0}


def test_a_resumed_study_draws_new_points_and_the_same_commands_draw_the_same(tmp_path, monkeypatch):
    def grow(folder: str) -> list[float]:
        monkeypatch.setenv("RECSYS_RUNS_DIR", str(tmp_path / folder))
        for n in (2, 3, 4):  # three commands on one study, each asking for one more trial
            outcome = tune(load_config(data=_config(LAMBDA, trials=n, sampler="random")), refit="none")
        return list(pd.read_csv(outcome.study_dir / "trials.csv")["param.model.l2_norm"])

    first = grow("a")
    assert first[0] == 100.0 and len(set(first)) == 4  # each rerun's sampler proposed a new point
    assert grow("b") == first
    monkeypatch.setenv("RECSYS_RUNS_DIR", str(tmp_path / "c"))
    fresh = tune(load_config(data=_config(LAMBDA, trials=2, sampler="random")), refit="none")
    assert list(pd.read_csv(fresh.study_dir / "trials.csv")["param.model.l2_norm"]) == first[:2]


def test_a_study_in_which_no_trial_completed_fails(runs_dir, monkeypatch):
    from recsys_cli.errors import RunFailed
    from recsys_cli.tuning import objective

    def run(config, hooks=None):
        raise RunFailed("the loss became NaN at epoch 1")

    monkeypatch.setattr(objective.experiment, "run", run)
    with pytest.raises(RunFailed) as err:
        tune(load_config(data=_config(LAMBDA, trials=2)), refit="none")
    assert err.value.exit_code == 1 and "completed (2 fail)" in str(err.value) and "trials.csv" in str(err.value)
    frame = pd.read_csv(next(runs_dir.glob("*-tune")) / "trials.csv")
    assert list(frame["state"]) == ["fail", "fail"] and "NaN at epoch 1" in frame.loc[1, "message"]


def test_sigterm_stops_two_workers_cleanly_and_the_rerun_finishes_the_study(runs_dir, tmp_path):
    import signal
    import subprocess
    import time

    from .conftest import REPO_ROOT

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(_config(LAMBDA, trials=40)))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "recsys_cli", "tune", str(path), "--jobs", "2", "--refit", "none"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(runs_dir.glob("*-tune/trials/*/trial.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-1500:]  # SIGTERM's exit code, as for every command
    assert "terminated (SIGTERM) with" in err and "rerun the same command to resume" in err
    study_dir = next(runs_dir.glob("*-syn-ease-synthetic-tune"))
    first = pd.read_csv(study_dir / "trials.csv")
    done = int((first["state"] == "complete").sum())
    # a trial writes trial.json just before it is told, so the third may have been cut short
    assert 1 <= done < 40 and set(first["state"]) <= {"complete", "interrupted"}
    assert not (study_dir / "worker-1.log").read_text().count("Traceback")

    outcome = tune(load_config(path), trials=done + 2, refit="none")  # the rerun, asking for two more
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert outcome.study_dir == study_dir and outcome.trials == done + 2
    assert int((frame["state"] == "complete").sum()) == done + 2
    assert list(frame["number"]) == list(range(len(frame)))


# -- pruning through the training hooks ------------------------------------------------------------
class _RampConfig(ModelConfig):
    name: Literal["test-ramp"] = "test-ramp"
    quality: float = 0.5


class _Ramp(TopPop):
    """TopPop whose 'validation value' climbs to ``quality`` over the epochs, reported like the engine does."""

    name: ClassVar[str] = "test-ramp"
    Config: ClassVar[type[ModelConfig]] = _RampConfig
    trainable: ClassVar[bool] = True

    def fit(self, train, ctx):
        super().fit(train, ctx)
        epochs = ctx.training.epochs
        self.epochs_trained = 0
        for epoch in range(1, epochs + 1):
            value = self.config.quality * epoch / epochs
            self.epochs_trained = epoch
            if first_stop_reason(ctx.hooks, epoch, epoch, value, {"NDCG@10": value}):
                break
        (ctx.run_dir / "epochs_trained.txt").write_text(str(self.epochs_trained))


@pytest.fixture
def ramp_model():
    """Registers the test model for one test only (the registry is global, and other tests list it)."""
    from recsys_cli.models import registry

    register(_Ramp)
    yield _Ramp
    registry._REGISTRY.pop(_Ramp.name, None)


def test_pruning_stops_a_trainable_run_at_once_and_marks_it(runs_dir, ramp_model):
    space = {"model.quality": {"type": "categorical", "choices": [0.9, 0.1, 0.8, 0.2, 0.7, 0.15]}}
    raw = _config(space, model={"name": "test-ramp"}, trials=6, sampler="grid", startup_trials=1)
    raw["training"] = {"epochs": 10}
    outcome = tune(load_config(data=raw), refit="none")
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    pruned = frame[frame["state"] == "pruned"]
    assert len(pruned) >= 1, frame
    assert sorted(frame["param.model.quality"]) == [0.1, 0.15, 0.2, 0.7, 0.8, 0.9]  # the grid, each once
    assert (pruned["param.model.quality"] < 0.5).all()  # only the weak ones fall below the running median
    for _, row in frame.iterrows():
        run = Path(row["run_dir"])
        epochs = int((run / "epochs_trained.txt").read_text())
        trial = json.loads((run / "trial.json").read_text())
        assert trial["state"] == row["state"]
        if row["state"] == "pruned":
            assert epochs < 10 and row["epochs_reported"] == epochs and "pruned at epoch" in row["message"]
        else:
            assert epochs == 10


def test_pruning_ends_weak_dae_trials_through_the_training_engine(runs_dir):
    space = {"training.learning_rate": {"type": "categorical", "choices": [1e-2, 3e-3, 1e-7, 3e-8, 1e-8]}}
    raw = _config(space, model={"name": "dae", "hidden": [32]}, trials=5, sampler="grid", startup_trials=1,
                  warmup_epochs=1)
    raw["training"] = {"epochs": 8, "batch_size": 64, "early_stopping": {"enabled": False}}
    outcome = tune(load_config(data=raw), refit="none")
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    pruned = frame[frame["state"] == "pruned"]
    assert len(pruned) >= 1, frame[["number", "state", "value", "param.training.learning_rate"]]
    assert (pruned["param.training.learning_rate"] < 1e-6).all()
    for _, row in pruned.iterrows():
        run = Path(row["run_dir"])
        epochs = len(pd.read_csv(run / "train_log.csv"))
        assert 1 < epochs < 8 and row["epochs_reported"] == epochs  # stopped at once, after the warm-up
        assert "pruned by the tuner" in json.loads((run / "timing.json").read_text())["stop_reason"]
    for _, row in frame[frame["state"] == "complete"].iterrows():
        assert len(pd.read_csv(Path(row["run_dir"]) / "train_log.csv")) == 8


# -- sweep -----------------------------------------------------------------------------------------
def test_sweep_runs_every_combination_and_seed(runs_dir, tmp_path):
    path = tmp_path / "s.yaml"
    raw = _config({})
    del raw["search"]
    path.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["sweep", str(path), "--grid", "model.l2_norm=10,1000", "--grid",
                                 "model.implicit=true,false", "--seeds", "1,2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = out["runs"]  # one row per combination, its two seeds grouped
    assert len(rows) == 4 and all(r["seeds"] == "1,2" for r in rows)
    assert {(r["model.l2_norm"], r["model.implicit"]) for r in rows} == {
        (lam, imp) for lam in (10, 1000) for imp in (True, False)}
    folder = Path(out["sweep_dir"])
    assert len([p for p in folder.iterdir() if not p.is_symlink() and (p / "metrics.csv").is_file()]) == 8
    assert (folder / "compare.csv").is_file() and (folder / "compare.md").is_file()
    ndcg = [r["NDCG@10"] for r in rows]
    assert ndcg == sorted(ndcg, reverse=True)  # best first


def test_sweep_grid_parsing_and_bad_keys():
    assert parse_grid(["model.l2_norm=1,10.5", "model.implicit=true,false"]) == {
        "model.l2_norm": [1, 10.5], "model.implicit": [True, False]}
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_grid(["model.l2_norm"])
    from recsys_cli.tuning.sweep import sweep

    raw = _config({})
    del raw["search"]
    with pytest.raises(ConfigError, match="did you mean 'model.l2_norm'"):
        sweep(load_config(data=raw), {"model.l2norm": [1, 2]})


# -- bad input: one line, exit 2, nothing left behind ----------------------------------------------
@pytest.mark.parametrize(("command", "args", "needle"), [
    ("tune", ["--set", "device.accelerator=cuda"], "'cuda' but no CUDA device is available"),
    ("sweep", ["--set", "device.accelerator=cuda"], "'cuda' but no CUDA device is available"),
    ("tune", ["--set", "data.dataset=nope"], "unknown data set 'nope'"),
    ("sweep", ["--set", "data.dataset=nope"], "unknown data set 'nope'"),
    ("tune", ["--storage", "postgresql://u:pw@127.0.0.1:1/db"], "the study storage postgresql://u:***@127.0.0.1:1/db"),
    ("tune", ["--study", "a/b"], "--study 'a/b' is not a usable study name"),
    ("tune", ["--study", "../../escape"], "--study '../../escape' is not a usable study name"),
    ("tune", ["--study", ".hidden"], "not starting with '.'"),
    ("tune", ["--study", "x" * 101], "at most 100 letters"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(runs_dir, tmp_path, monkeypatch, command, args, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    _exits_2_leaving_nothing(tmp_path, runs_dir, command, args, needle)


@pytest.mark.parametrize("command", ["tune", "sweep"])
def test_a_data_error_met_after_the_checks_leaves_nothing_either(runs_dir, tmp_path, monkeypatch, command):
    from recsys_cli.errors import DataError
    from recsys_cli.tasks import recommendation

    def prepare_split(config, run=None):
        raise DataError("the download of the data set failed", hint="check the connection and rerun")

    monkeypatch.setattr(recommendation, "prepare_split", prepare_split)
    _exits_2_leaving_nothing(tmp_path, runs_dir, command, [], "the download of the data set failed")


def _exits_2_leaving_nothing(tmp_path: Path, runs_dir: Path, command: str, args: list[str], needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(LAMBDA)))
    extra = ["--grid", "model.l2_norm=10,100"] if command == "sweep" else ["--trials", "2"]
    result = runner.invoke(app, [command, str(path), *extra, *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.output
    assert "Traceback" not in result.output and "pw@" not in result.output
    data_dir = Path(os.environ["RECSYS_DATA_DIR"])  # the split may be cached; nothing else is written
    assert [p for p in tmp_path.rglob("*") if not p.is_relative_to(data_dir) and p not in (path, runs_dir)] == []


def test_good_study_names_pass():
    from recsys_cli.tuning.study import check_study_name

    for name in ("lightgcn-ml10m", "EASE_v2.1", "a", "x" * 100):
        check_study_name(name)


# -- credentials -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://ana:s3cret@db:5432/studies", "postgresql://ana:***@db:5432/studies"),
    ("recsys tune c.yaml --storage postgresql+psycopg://u:p%40ss@10.0.0.1/optuna --jobs 2",
     "recsys tune c.yaml --storage postgresql+psycopg://u:***@10.0.0.1/optuna --jobs 2"),
    ("postgresql://ana@db/studies", "postgresql://ana@db/studies"),
    ("see http://example.org:8080/x", "see http://example.org:8080/x"),
])
def test_redact_masks_only_passwords(text, masked):
    assert redact(text) == masked


def test_storage_password_never_lands_in_run_files_or_messages(runs_dir, monkeypatch, capsys):
    secret_url = "postgresql://tuner:Sup3rSecret@127.0.0.1:1/nowhere"
    monkeypatch.setattr(sys, "argv", ["recsys", "tune", "c.yaml", "--storage", secret_url])
    from recsys_cli.tuning.storage import open_storage

    with pytest.raises(ConfigError) as err:
        open_storage(secret_url, runs_dir)
    assert "Sup3rSecret" not in str(err.value) and "tuner:***@127.0.0.1" in str(err.value)
    raw = _config({})
    del raw["search"]
    result = experiment.run(load_config(data=raw))
    from recsys_cli import console

    with console.capture() as log:  # what a run's log.txt receives
        console.info(f"connecting to {secret_url}")
        console.error(f"cannot reach {secret_url}")
    assert "Sup3rSecret" not in log.getvalue() and log.getvalue().count("tuner:***@127.0.0.1:1/nowhere") == 2
    env = json.loads((result.run_dir / "env.json").read_text())
    assert "tuner:***@" in env["command_line"]
    for path in result.run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt", ".yaml", ".csv", ".md"):
            assert "Sup3rSecret" not in path.read_text(errors="replace"), path
    assert "Sup3rSecret" not in capsys.readouterr().err


# -- trial 0 is the config the search started from ---------------------------------------------------
def test_trial_0_runs_the_base_config_when_it_lies_in_the_space(runs_dir):
    config = load_config(data=_config({**LAMBDA, "model.implicit": {"type": "categorical", "choices": [False, True]}},
                                      trials=3))
    outcome = tune(config, refit="none")
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert frame.loc[0, "param.model.l2_norm"] == 100.0
    assert bool(frame.loc[0, "param.model.implicit"]) is config.model.implicit
    assert frame.loc[1, "param.model.l2_norm"] != 100.0  # the others are drawn
    plain = _config({})
    del plain["search"]
    base_run = experiment.run(load_config(data=plain | {"evaluation": {"cutoffs": [10], "split": "val"},
                                                        "experiment": {"name": "base", "seed": 3}}))
    assert frame.loc[0, "value"] == pytest.approx(base_run.metrics.value("NDCG", 10), abs=1e-12)


@pytest.mark.parametrize(("space", "queued"), [
    ({"model.l2_norm": {"type": "float", "low": 200.0, "high": 10000.0, "log": True}}, False),  # below the range
    ({"model.l2_norm": {"type": "float", "low": 50.0, "high": 250.0, "step": 50.0}}, True),  # on the step
    ({"model.l2_norm": {"type": "float", "low": 60.0, "high": 260.0, "step": 50.0}}, False),  # off the step
    ({"model.l2_norm": {"type": "int", "low": 1, "high": 1000}}, True),
])
def test_base_values_are_queued_only_when_they_lie_in_the_space(space, queued):
    from recsys_cli.tuning.space import base_params

    config = load_config(data={**_config({}), "search": {"metric": "NDCG@10", "space": space}})
    params, outside = base_params(config)
    assert (params is not None) is queued
    if queued:
        assert params == {"model.l2_norm": 100.0}
    else:
        assert outside == "model.l2_norm=100.0"


def test_start_from_base_off_draws_trial_0_like_the_others(runs_dir):
    outcome = tune(load_config(data=_config(LAMBDA, trials=2, start_from_base=False)), refit="none")
    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    assert frame.loc[0, "param.model.l2_norm"] != 100.0
    on = tune(load_config(data=_config(LAMBDA, trials=2)), refit="none")
    assert pd.read_csv(on.study_dir / "trials.csv").loc[0, "param.model.l2_norm"] == 100.0


@pytest.mark.parametrize(("cpus", "jobs", "threads", "storage", "fork"), [
    (2, 2, None, None, True),  # one thread per worker: forked
    (8, 2, None, None, False),  # four threads each: OpenMP after a fork would hang, fresh processes
    (8, 2, 1, None, True),  # device.threads: 1 makes every trial one thread
    (2, 2, None, "postgresql://u@h/db", False),  # open database connections must not cross a fork
    (2, 1, None, None, False),  # no extra worker at all
])
def test_workers_are_forked_only_for_one_thread_cpu_journal_studies(monkeypatch, cpus, jobs, threads, storage,
                                                                     fork):
    from recsys_cli.tuning.study import forks_workers

    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(sys, "platform", "linux")
    config = load_config(data=_config(LAMBDA) | {"device": {"accelerator": "cpu", "threads": threads}})
    assert forks_workers(config, storage, jobs) is fork


@pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")
def test_a_forked_worker_that_fails_fails_the_study_with_its_message(runs_dir, monkeypatch):
    from recsys_cli.tuning import study as study_mod

    real_work = study_mod.work

    def work(config, name, storage, study_dir, *, worker=0, **kwargs):
        if worker:
            raise RecsysError("worker-side failure for the test", hint="none")
        return real_work(config, name, storage, study_dir, worker=worker, **kwargs)

    monkeypatch.setattr(study_mod, "work", work)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # one thread per worker: forked
    config = load_config(data=_config(LAMBDA, trials=3))
    assert study_mod.forks_workers(config, None, 2)
    with pytest.raises(RecsysError) as err:
        tune(config, jobs=2, refit="none")
    assert "tuning worker 1 exited with code 2: error: worker-side failure for the test" in str(err.value)
    study_dir = next(runs_dir.glob("*-syn-ease-synthetic-tune"))
    assert "worker-side failure for the test" in (study_dir / "worker-1.log").read_text()
    assert len(list((study_dir / "trials").glob("*-trial*/trial.json"))) == 3  # worker 0 finished the budget


def test_the_refit_after_two_workers_gets_every_thread_back(runs_dir, monkeypatch):
    from recsys_cli import experiment as experiment_mod

    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # --jobs 2: one thread per worker
    threads_seen = []
    real_run = experiment_mod.run

    def run(config, **kwargs):
        if config.evaluation.split == "test":  # the refit
            threads_seen.append(torch.get_num_threads())
        return real_run(config, **kwargs)

    monkeypatch.setattr(experiment_mod, "run", run)
    data = _config(LAMBDA, trials=2)
    data["device"] = {"accelerator": "cpu"}  # no fixed thread count: trials take the worker's share
    before = torch.get_num_threads()
    tune(load_config(data=data), jobs=2, refit="train")
    assert threads_seen == [before] and torch.get_num_threads() == before


def test_signals_are_held_until_the_storage_block_ends_whichever_thread_they_reach():
    import signal
    import threading
    import time

    from recsys_cli.errors import Terminated
    from recsys_cli.tuning.storage import signals_deferred
    from recsys_cli.tuning.study import terminate_as_interrupt

    reached = []
    with terminate_as_interrupt(), pytest.raises(Terminated):
        with signals_deferred():
            # sent from another thread, as a progress bar's or a BLAS thread may receive it
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
            sender.start()
            sender.join()
            time.sleep(0.05)  # the interpreter runs pending handlers at its next check
            reached.append("end of block")
    assert reached == ["end of block"]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C with Python's own handler
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached.append("end of second block")
    assert reached[-1] == "end of second block"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
