"""The engine's steps: loss read-back, hooks that stop a fit, extra logged values, models without an optimizer."""

from __future__ import annotations

import csv
import json

import pytest
import scipy.sparse as sp
import torch
from torch import nn

from recsys_cli.models.dae import DAE, DAEConfig
from recsys_cli.models.two_tower import TwoTower, TwoTowerConfig
from recsys_cli.training import Trainer
from recsys_cli.training.checkpoint import checkpoint_paths
from recsys_cli.training.engine import TrainableRecommender
from recsys_cli.training.hooks import TrainingHook

from .test_engine import CPU, _ctx, _data, _mean_validation_score


def _two_tower():
    return TwoTower(TwoTowerConfig(layers=[8, 4]), device=CPU, dtype=torch.float32, seed=3)


@pytest.mark.parametrize("every", [3, 1000])
def test_loss_read_back_every_n_steps_logs_the_same_epoch_loss_as_every_step(every):
    train, _ = _data()
    losses = {}
    for n in (1, every):
        model = _two_tower()
        trainer = Trainer(model, _ctx(None, epochs=2), evaluator=_mean_validation_score, loss_readback_every=n)
        trainer.fit(train)
        losses[n] = [row["loss"] for row in trainer.history]
        assert trainer.global_step == 2 * model.num_batches(train)
    assert losses[1] == losses[every]  # the same device sum, read back less often
    assert all(0.1 < value < 2 for value in losses[1])


class Recorder(TrainingHook):
    """Records every call; asks to stop at the validation of epoch ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        self.calls: list[tuple] = []
        self.stop_at = stop_at

    def on_fit_start(self, model, *, epochs, start_epoch):
        self.calls.append(("start", epochs, start_epoch))

    def on_epoch_end(self, epoch, step, logs):
        self.calls.append(("epoch", epoch, step, round(logs["loss"], 6)))

    def on_validation(self, epoch, step, value, metrics):
        self.calls.append(("validation", epoch, step, dict(metrics)))
        return "pruned by the test" if epoch == self.stop_at else None

    def on_fit_end(self, epoch, step, stop_reason):
        self.calls.append(("end", epoch, step, stop_reason))


def test_a_hook_stops_training_and_the_run_says_why(tmp_path, capsys):
    from recsys_cli.timing import Timing

    train, _ = _data()
    script = iter([0.3, 0.2, 0.1, 0.5, 0.6])
    hook, quiet = Recorder(stop_at=3), Recorder()
    ctx = _ctx(tmp_path, epochs=10, early_stopping={"patience": 5})
    ctx.hooks, ctx.timing = [hook, quiet], Timing()
    model = _two_tower()
    trainer = Trainer(model, ctx, evaluator=lambda *a: next(script))
    trainer.fit(train)
    per_epoch = model.num_batches(train)

    assert model.epochs_trained == 3 and model.best_epoch == 1
    assert model.stop_reason == "pruned by the test" == ctx.timing.figures["stop_reason"]
    assert model.extra_metadata()["stop_reason"] == "pruned by the test"
    assert hook.calls[0] == ("start", 10, 1)
    assert [c[:3] for c in hook.calls if c[0] == "epoch"] == [("epoch", e, e * per_epoch) for e in (1, 2, 3)]
    assert [(c[1], c[3]) for c in hook.calls if c[0] == "validation"] == [
        (1, {"NDCG@10": 0.3}), (2, {"NDCG@10": 0.2}), (3, {"NDCG@10": 0.1})]
    assert hook.calls[-1] == ("end", 3, 3 * per_epoch, "pruned by the test")
    assert quiet.calls == hook.calls  # every hook sees every value, whichever asked to stop
    # the best epoch's weights are restored, the checkpoint is finished and says why
    best = torch.load(checkpoint_paths(tmp_path, "best")[0], weights_only=True)["model"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    side = json.loads(checkpoint_paths(tmp_path, "last")[1].read_text())
    assert side["finished"] and side["stop_reason"] == "pruned by the test" and side["global_step"] == 3 * per_epoch
    assert "stopped after epoch 3: pruned by the test" in capsys.readouterr().err


def test_early_stopping_is_a_recorded_stop_reason():
    train, _ = _data()
    script = iter([0.3, 0.2, 0.1])
    model = _two_tower()
    Trainer(model, _ctx(None, epochs=10, early_stopping={"patience": 2}), evaluator=lambda *a: next(script)).fit(train)
    assert model.epochs_trained == 3
    assert model.stop_reason == "early stopping: no NDCG@10 improvement > 0 in 2 evaluations"


def test_values_a_model_returns_from_train_epoch_land_in_train_log(tmp_path):
    train, _ = _data()

    class Logging(DAE):
        def train_epoch(self, trainer, train, epoch, generator):
            logs = super().train_epoch(trainer, train, epoch, generator)
            return {**logs, "epoch_squared": float(epoch**2)}

    model = Logging(DAEConfig(hidden=[16, 4]), device=CPU, dtype=torch.float32, seed=3)
    Trainer(model, _ctx(tmp_path, epochs=3), evaluator=_mean_validation_score).fit(train)
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    assert [float(r["epoch_squared"]) for r in rows] == [1.0, 4.0, 9.0]
    assert all(float(r["loss"]) > 0 for r in rows)


class ItemMeans(TrainableRecommender):
    """No gradients: each epoch moves the item scores halfway to the items' training frequency."""

    name = "test-item-means"
    Config = DAEConfig
    uses_optimizer = False

    def build(self, train):
        self.scores = nn.Parameter(torch.zeros(self.n_items), requires_grad=False)

    def train_epoch(self, trainer, train, epoch, generator):
        target = torch.from_numpy((sp.csr_matrix(train).getnnz(axis=0) / train.shape[0]).astype("float32"))
        self.scores.data += 0.5 * (target - self.scores.data)
        return {"loss": float((target - self.scores.data).abs().sum())}

    def score(self, users):
        return self.scores.expand(len(users), -1).clone()


def test_a_model_without_an_optimizer_trains_checkpoints_and_resumes(tmp_path):
    train, _ = _data()
    full = ItemMeans(DAEConfig(), device=CPU, dtype=torch.float32, seed=3)
    trainer = Trainer(full, _ctx(tmp_path / "a", epochs=4, early_stopping={"enabled": False}),
                      evaluator=_mean_validation_score)
    trainer.fit(train)
    assert trainer.optimizer is None and trainer.global_step == 4
    losses = [row["loss"] for row in trainer.history]
    assert losses == sorted(losses, reverse=True) and losses[-1] == pytest.approx(losses[0] / 8, rel=1e-5)
    assert set(torch.load(checkpoint_paths(tmp_path / "a", "last")[0], weights_only=True)) == {"model", "sidecar"}

    half = ItemMeans(DAEConfig(), device=CPU, dtype=torch.float32, seed=3)
    Trainer(half, _ctx(tmp_path / "b", epochs=2, early_stopping={"enabled": False}),
            evaluator=_mean_validation_score).fit(train)
    resumed = ItemMeans(DAEConfig(), device=CPU, dtype=torch.float32, seed=3)
    Trainer(resumed, _ctx(tmp_path / "b", resume=True, epochs=4, early_stopping={"enabled": False}),
            evaluator=_mean_validation_score).fit(train)
    assert torch.equal(resumed.scores, full.scores)


def test_patience_in_epochs_with_every_epoch_validated_early_then_every_eval_every():
    train, _ = _data()
    script = iter([0.1, 0.3, 0.2, 0.25, 0.2, 0.9])
    model = _two_tower()
    ctx = _ctx(None, epochs=20, eval_every=2, eval_every_epoch_until=3,
               early_stopping={"patience": 2, "patience_epochs": 4})
    trainer = Trainer(model, ctx, evaluator=lambda *a: next(script))
    trainer.fit(train)
    # validated at 1, 2, 3 (every epoch), then 4, 6 (every 2); patience 2 evaluations would stop at 4,
    # 4 epochs after the best (2) stops at the first validation from epoch 6 on
    assert [r["epoch"] for r in trainer.history if r["val_metric"] is not None] == [1, 2, 3, 4, 6]
    assert model.epochs_trained == 6 and model.best_epoch == 2
    assert model.stop_reason == "early stopping: no NDCG@10 improvement > 0 in 4 epochs (patience_epochs 4)"


def test_training_stopped_inside_an_epoch_ends_the_fit_with_its_reason():
    from recsys_cli.training.hooks import TrainingStopped

    train, _ = _data()

    class Budgeted(DAE):
        def train_epoch(self, trainer, train, epoch, generator):
            if epoch == 3:
                raise TrainingStopped("time budget spent")
            return super().train_epoch(trainer, train, epoch, generator)

    model = Budgeted(DAEConfig(hidden=[16, 4]), device=CPU, dtype=torch.float32, seed=3)
    trainer = Trainer(model, _ctx(None, epochs=6), evaluator=_mean_validation_score)
    trainer.fit(train)
    assert [r["epoch"] for r in trainer.history] == [1, 2]
    assert model.epochs_trained == 2 and model.stop_reason == "time budget spent"
