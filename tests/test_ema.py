"""The weight average (training.ema_decay): known values, what validation and checkpoints see, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from recsys_cli.config.schema import TrainingConfig
from recsys_cli.models.two_tower import TwoTower, TwoTowerConfig
from recsys_cli.training import Trainer
from recsys_cli.training.checkpoint import checkpoint_paths
from recsys_cli.training.ema import ParameterEMA

from .test_engine import CPU, _ctx, _data, _mean_validation_score, interrupting_at


def _set(p: nn.Parameter, value: float) -> None:
    with torch.no_grad():
        p.fill_(value)


def test_the_average_follows_its_recurrence_by_hand():
    layer = nn.Linear(1, 1, bias=False)
    _set(layer.weight, 0.0)
    ema = ParameterEMA(layer, decay=0.75)
    for value in (4.0, 8.0, -4.0):
        _set(layer.weight, value)
        ema.update()
    # 0 → 0.75·0 + 0.25·4 = 1 → 0.75·1 + 0.25·8 = 2.75 → 0.75·2.75 + 0.25·(−4) = 1.0625
    assert ema.average[0].item() == 1.0625
    assert ema.names == ["weight"]


def test_applied_swaps_the_average_in_and_the_raw_weights_back():
    layer = nn.Linear(2, 1)
    ema = ParameterEMA(layer, decay=0.5)
    raw = {k: v.clone() for k, v in layer.state_dict().items()}
    _set(layer.weight, 3.0)
    ema.update()  # the average is now halfway between the initial weights and 3
    after_step = {k: v.clone() for k, v in layer.state_dict().items()}
    with ema.applied():
        assert torch.equal(layer.weight, (raw["weight"] + 3.0) / 2)
        assert torch.equal(layer.bias, raw["bias"])  # unchanged weights average to themselves
    assert all(torch.equal(layer.state_dict()[k], after_step[k]) for k in after_step)
    state = ema.averaged_state(layer)
    assert torch.equal(state["weight"], (raw["weight"] + 3.0) / 2)
    assert torch.equal(layer.weight, after_step["weight"])  # averaged_state never writes the model


def test_half_precision_weights_are_averaged_in_float32():
    layer = nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    _set(layer.weight, 1.0)
    ema = ParameterEMA(layer, decay=0.999)
    _set(layer.weight, 2.0)
    ema.update()
    # 1.001 is not a bfloat16 (spacing 2^-7 near 1): kept in float32 the step survives
    assert ema.average[0].dtype == torch.float32
    assert ema.average[0].item() == pytest.approx(1.001, abs=1e-6)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValidationError, match="ema_decay"):
        TrainingConfig(ema_decay=decay)


def _two_tower() -> TwoTower:
    return TwoTower(TwoTowerConfig(layers=[8, 4]), device=CPU, dtype=torch.float32, seed=3)


def test_validation_and_the_best_checkpoint_see_the_average_and_last_keeps_the_raw_weights(tmp_path):
    train, _ = _data()
    seen: list[dict[str, torch.Tensor]] = []
    trainer_box: list[Trainer] = []

    def evaluator(model, train, validation):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        expected = trainer_box[0].ema.averaged_state(model)
        assert all(torch.equal(seen[-1][k], expected[k]) for k in expected)
        return float(len(seen))  # every epoch improves

    model = _two_tower()
    trainer = Trainer(model, _ctx(tmp_path, epochs=3, ema_decay=0.9), evaluator=evaluator)
    trainer_box.append(trainer)
    trainer.fit(train)

    assert len(seen) == 3
    raw_last = torch.load(checkpoint_paths(tmp_path, "last")[0], weights_only=True)
    best = torch.load(checkpoint_paths(tmp_path, "best")[0], weights_only=True)["model"]
    assert all(torch.equal(best[k], seen[-1][k]) for k in best)
    # the last checkpoint holds the raw weights, which differ from the average, and the average
    assert any(not torch.equal(raw_last["model"][k], best[k]) for k in best)
    assert all(torch.equal(raw_last["ema"][k], best[k]) for k in raw_last["ema"])
    # the final model is the best epoch's average
    final = model.state_dict()
    assert all(torch.equal(final[k], best[k]) for k in final)


def test_the_final_model_is_the_best_epochs_average_when_a_later_epoch_is_worse(tmp_path):
    train, _ = _data()
    script = iter([0.1, 0.5, 0.2, 0.3])
    seen: list[dict[str, torch.Tensor]] = []

    def evaluator(model, train, validation):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(script)

    model = _two_tower()
    Trainer(model, _ctx(tmp_path, epochs=4, ema_decay=0.8, early_stopping={"patience": 5}),
            evaluator=evaluator).fit(train)
    assert model.best_epoch == 2
    final = model.state_dict()
    assert all(torch.equal(final[k], seen[1][k]) for k in final)


def test_without_validation_the_model_ends_with_the_average(capsys):
    train, _ = _data()
    model = _two_tower()
    ctx = _ctx(None, epochs=2, ema_decay=0.9)
    ctx.validation = None
    trainer = Trainer(model, ctx, evaluator=_mean_validation_score)
    trainer.fit(train)
    assert "keeps the last weight average" in capsys.readouterr().err
    average = trainer.ema.state_dict()
    assert all(torch.equal(model.state_dict()[k], average[k]) for k in average)


def test_the_average_changes_what_training_ends_with():
    """Off and on from the same seed: the final weights differ (the average is what the model keeps)."""
    train, _ = _data()
    plain, averaged = _two_tower(), _two_tower()
    Trainer(plain, _ctx(None, epochs=3, early_stopping={"enabled": False}), evaluator=_mean_validation_score).fit(train)
    t = Trainer(averaged, _ctx(None, epochs=3, ema_decay=0.5, early_stopping={"enabled": False}),
                evaluator=_mean_validation_score)
    t.fit(train)
    assert any(not torch.equal(plain.state_dict()[k], averaged.state_dict()[k]) for k in t.ema.names)


def test_resume_with_the_average_equals_an_uninterrupted_run(tmp_path):
    train, _ = _data()
    settings = {"ema_decay": 0.9, "early_stopping": {"enabled": False}}
    full = _two_tower()
    Trainer(full, _ctx(tmp_path / "a", **settings), evaluator=_mean_validation_score).fit(train)

    with pytest.raises(KeyboardInterrupt):
        Trainer(_two_tower(), _ctx(tmp_path / "b", **settings), evaluator=interrupting_at(3)).fit(train)
    assert json.loads(checkpoint_paths(tmp_path / "b", "last")[1].read_text())["epoch"] == 2

    resumed = _two_tower()
    Trainer(resumed, _ctx(tmp_path / "b", resume=True, **settings), evaluator=_mean_validation_score).fit(train)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [(tmp_path / d / "train_log.csv").read_text().splitlines() for d in ("a", "b")]
    assert [line.split(",")[:3] for line in logs[0]] == [line.split(",")[:3] for line in logs[1]]


def test_resuming_a_run_without_an_average_starts_one_from_its_weights(tmp_path, capsys):
    """Only the Python API can get here (the CLI refuses a changed training.ema_decay on resume)."""
    train, _ = _data()
    settings = {"early_stopping": {"enabled": False}}
    with pytest.raises(KeyboardInterrupt):
        Trainer(_two_tower(), _ctx(tmp_path, **settings), evaluator=interrupting_at(3)).fit(train)
    saved = torch.load(checkpoint_paths(tmp_path, "last")[0], weights_only=True)["model"]
    assert "ema" not in torch.load(checkpoint_paths(tmp_path, "last")[0], weights_only=True)

    model = _two_tower()
    trainer = Trainer(model, _ctx(tmp_path, resume=True, ema_decay=0.9, **settings), evaluator=_mean_validation_score)
    trainer.setup(train)
    assert "has no weight average" in capsys.readouterr().err
    assert all(torch.equal(a, saved[name]) for name, a in trainer.ema.state_dict().items())


def test_a_model_without_an_optimizer_warns_that_the_average_is_ignored(capsys):
    from recsys_cli.models.dae import DAEConfig

    from .test_engine_steps import ItemMeans

    train, _ = _data()
    model = ItemMeans(DAEConfig(), device=CPU, dtype=torch.float32, seed=3)
    trainer = Trainer(model, _ctx(None, epochs=2, ema_decay=0.9), evaluator=_mean_validation_score)
    trainer.fit(train)
    assert trainer.ema is None
    assert "training.ema_decay is ignored: test-item-means takes no gradient steps" in capsys.readouterr().err
