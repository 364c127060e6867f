"""--resume: the checkpoint is one atomic unit, and a changed config is compared with what the run recorded."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from recsys_cli.errors import ConfigError
from recsys_cli.models.dae import DAE, DAEConfig
from recsys_cli.training import Trainer
from recsys_cli.training import checkpoint as ckpt

from .conftest import CONFIGS
from .test_engine import CPU, _ctx, _data, _mean_validation_score


def test_a_kill_between_the_checkpoint_files_never_trains_an_epoch_twice(tmp_path, monkeypatch):
    train, _ = _data()

    def make():
        return DAE(DAEConfig(hidden=[16, 4], noise="salt-pepper", noise_p=0.2), device=CPU, dtype=torch.float32,
                   seed=3)

    full = make()
    Trainer(full, _ctx(tmp_path / "a", early_stopping={"enabled": False}), evaluator=_mean_validation_score).fit(train)

    real_write_json = ckpt.atomic.write_json

    def killed_before_epoch_3_json(path, data, *args, **kwargs):
        if path.name == "last.json" and data["epoch"] == 3:
            raise KeyboardInterrupt  # SIGKILL after last.pt (epoch 3) is in place, before last.json
        return real_write_json(path, data, *args, **kwargs)

    monkeypatch.setattr(ckpt.atomic, "write_json", killed_before_epoch_3_json)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make(), _ctx(tmp_path / "b", early_stopping={"enabled": False}),
                evaluator=_mean_validation_score).fit(train)
    monkeypatch.setattr(ckpt.atomic, "write_json", real_write_json)
    assert json.loads(ckpt.checkpoint_paths(tmp_path / "b", "last")[1].read_text())["epoch"] == 2  # stale copy

    resumed = make()
    trainer = Trainer(resumed, _ctx(tmp_path / "b", resume=True, early_stopping={"enabled": False}),
                      evaluator=_mean_validation_score)
    trainer.fit(train)
    assert [row["epoch"] for row in trainer.history] == [1, 2, 3, 4]  # epoch 3 ran once
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


SYNTHETIC = ["data.dataset=synthetic", "data.synthetic.n_users=120", "data.synthetic.n_items=60",
             "data.synthetic.n_interactions=2000", "training.epochs=2", "training.batch_size=32",
             "model.hidden=[16,4]", "device.accelerator=cpu"]


@pytest.fixture
def two_epoch_run():
    from recsys_cli import experiment
    from recsys_cli.config import load_config

    return experiment.train(load_config(CONFIGS / "dae.yaml", SYNTHETIC)).run_dir


@pytest.mark.parametrize(("override", "named"), [
    ("training.learning_rate=0.5", "training.learning_rate (0.001 → 0.5)"),
    ("model.hidden=[32,4]", "model.hidden ([16, 4] → [32, 4])"),
    ("data.split.test_fraction=0.3", "data.split.test_fraction (0.2 → 0.3)"),
])
def test_resume_refuses_a_changed_config_naming_the_keys(two_epoch_run, override, named):
    from recsys_cli import experiment
    from recsys_cli.config import load_config

    before = (two_epoch_run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as err:
        experiment.train(load_config(CONFIGS / "dae.yaml", [*SYNTHETIC, override]), resume=two_epoch_run)
    message = str(err.value)
    assert f"differs from what {two_epoch_run} was trained with in {named}" in message
    assert "\n" not in message and err.value.exit_code == 2
    assert (two_epoch_run / "config.yaml").read_text() == before


def test_resume_with_more_epochs_extends_the_run(two_epoch_run):
    from recsys_cli import experiment
    from recsys_cli.config import load_config

    config = load_config(CONFIGS / "dae.yaml", [*SYNTHETIC, "training.epochs=3"])
    experiment.train(config, resume=two_epoch_run)
    rows = list(csv.DictReader((two_epoch_run / "train_log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert json.loads((two_epoch_run / "model" / "model.json").read_text())["epochs_trained"] == 3
    assert load_config(two_epoch_run / "config.yaml").training.epochs == 3
    assert "resuming with training.epochs changed: 2 → 3" in (two_epoch_run / "log.txt").read_text()


def test_resume_refuses_a_run_that_is_still_running_or_has_no_checkpoint(two_epoch_run):
    import shutil

    from recsys_cli import experiment
    from recsys_cli.config import load_config
    from recsys_cli.errors import DataError
    from recsys_cli.rundir import RunDirectory

    run = RunDirectory.open(two_epoch_run)
    config = load_config(CONFIGS / "dae.yaml", [*SYNTHETIC, "training.epochs=3"])
    run.write_status("running")  # this very process: alive, so a second trainer must not join it
    with pytest.raises(ConfigError, match=f"{two_epoch_run} is still running \\(pid \\d+ on "):
        experiment.train(config, resume=two_epoch_run)
    assert run.status()["status"] == "running"
    # interrupted before its first epoch ended: nothing to resume, and the run is left as it was
    run.write_status("interrupted")
    shutil.rmtree(two_epoch_run / ckpt.CHECKPOINT_DIR)
    with pytest.raises(DataError, match="no last checkpoint"):
        experiment.train(config, resume=two_epoch_run)
    assert run.status()["status"] == "interrupted"
