"""Mult-VAE: the annealing schedule, the loss against a dense reference, logged values, exact resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_cli.models.multvae import MultVAE, MultVAEConfig, kl_weight
from recsys_cli.models.registry import get_model_class
from recsys_cli.training import Trainer
from recsys_cli.training.checkpoint import checkpoint_paths

from .test_engine import CPU, _ctx, _data, _mean_validation_score, interrupting_at


def _model(**config) -> MultVAE:
    return MultVAE(MultVAEConfig(**{"hidden": [12, 4], **config}), device=CPU, dtype=torch.float64, seed=3)


def test_kl_annealing_schedule():
    assert [kl_weight(s, 0.2, 100) for s in (0, 1, 25, 50, 99, 100, 101, 10_000)] == pytest.approx(
        [0.0, 0.002, 0.05, 0.1, 0.198, 0.2, 0.2, 0.2])
    assert kl_weight(0, 0.3, 0) == kl_weight(7, 0.3, 0) == 0.3  # no annealing: beta_max throughout
    assert get_model_class("multvae") is MultVAE


def test_training_loss_equals_a_dense_reference():
    train, _ = _data()
    model = _model(noise_p=0.0)  # no dropout: the only random draw is the latent's ε
    model.training_config = _ctx(None).training
    model.build_for(train)
    model.anneal_step = 30
    model.config.anneal_steps, model.config.beta_max = 60, 0.4  # β = 0.2
    model._kl_sum, model._kl_users = torch.zeros((), dtype=torch.float64), 0
    users = np.array([4, 0, 7, 12])
    model.rng = torch.Generator().manual_seed(11)
    loss = model.training_loss(users)

    x = torch.from_numpy((train[users].toarray() > 0).astype(np.float64))
    h = torch.tanh(F.normalize(x, dim=1) @ model.input_layer.weight + model.input_bias)
    mean, log_var = model.layers[0](h).chunk(2, dim=1)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(11)).double()  # drawn in float32
    z = mean + eps * torch.exp(0.5 * log_var)
    logits = model.layers[2](torch.tanh(model.layers[1](z)))
    nll = -(F.log_softmax(logits, dim=1) * x).sum(dim=1).mean()
    kl = (-0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(dim=1)).mean()
    torch.testing.assert_close(loss, nll + 0.2 * kl)
    assert model.anneal_step == 31 and float(model._kl_sum) == pytest.approx(4 * float(kl.detach()))


def test_scores_decode_the_latent_mean_deterministically():
    train, _ = _data()
    model = _model()
    Trainer(model, _ctx(None, epochs=1), evaluator=_mean_validation_score).fit(train)
    users = torch.arange(6)
    first, second = model.score(users), model.score(users)
    assert torch.equal(first, second)
    x = torch.from_numpy((train[:6].toarray() > 0).astype(np.float64))
    with torch.no_grad():
        mean, _ = model.layers[0](torch.tanh(F.normalize(x, dim=1) @ model.input_layer.weight
                                             + model.input_bias)).chunk(2, dim=1)
        torch.testing.assert_close(first, model.layers[2](torch.tanh(model.layers[1](mean))))


def test_kl_and_beta_are_logged_and_beta_follows_the_global_step(tmp_path):
    train, _ = _data()
    model = _model(anneal_steps=5, beta_max=0.5)
    trainer = Trainer(model, _ctx(tmp_path, epochs=3, batch_size=16), evaluator=_mean_validation_score)
    trainer.fit(train)
    per_epoch = model.num_batches(train)
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    assert [float(r["beta"]) for r in rows] == pytest.approx(
        [kl_weight(e * per_epoch - 1, 0.5, 5) for e in (1, 2, 3)])
    assert all(float(r["kl"]) > 0 for r in rows)
    assert model.anneal_step == trainer.global_step == 3 * per_epoch
    assert json.loads(checkpoint_paths(tmp_path, "last")[1].read_text())["training_state"] == {
        "anneal_step": 3 * per_epoch}


def test_resume_with_annealing_equals_an_uninterrupted_run(tmp_path):
    train, _ = _data()
    # β anneals over ~2.5 epochs of 4 batches, so the resumed epochs must continue from the saved step
    settings = {"early_stopping": {"enabled": False}, "batch_size": 16, "epochs": 4}
    full = _model(anneal_steps=10, beta_max=0.5, min_batches_per_epoch=4)
    Trainer(full, _ctx(tmp_path / "a", **settings), evaluator=_mean_validation_score).fit(train)

    with pytest.raises(KeyboardInterrupt):
        Trainer(_model(anneal_steps=10, beta_max=0.5, min_batches_per_epoch=4), _ctx(tmp_path / "b", **settings),
                evaluator=interrupting_at(3)).fit(train)
    resumed = _model(anneal_steps=10, beta_max=0.5, min_batches_per_epoch=4)
    Trainer(resumed, _ctx(tmp_path / "b", resume=True, **settings), evaluator=_mean_validation_score).fit(train)
    assert resumed.anneal_step == full.anneal_step == 16 and full.beta() == 0.5
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [list(csv.DictReader((tmp_path / d / "train_log.csv").open())) for d in ("a", "b")]
    assert [(r["loss"], r["kl"], r["beta"]) for r in logs[0]] == [(r["loss"], r["kl"], r["beta"]) for r in logs[1]]


@pytest.mark.parametrize(("cap", "min_batches", "expected"), [(500, 16, 4), (500, 4, 15), (3, 16, 3), (500, 100, 1)])
def test_users_per_batch_scale_with_the_data_set(cap, min_batches, expected):
    train, _ = _data()  # 60 users, all active
    model = _model(min_batches_per_epoch=min_batches)
    model.training_config = _ctx(None, batch_size=cap).training
    model.build_for(train)
    assert model.users_per_batch() == expected
    batches = list(model.epoch_batches(train, torch.Generator().manual_seed(0)))
    assert len(batches) == model.num_batches(train) == -(-60 // expected)
    assert sorted(np.concatenate(batches).tolist()) == list(range(60))
