"""Denoising autoencoder: the reference implementation's architecture (../shared/spec/models.md §6) with its defects fixed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from recsys_cli.config.schema import TrainingConfig
from recsys_cli.models.base import FitContext
from recsys_cli.models.dae import DAE, DAEConfig
from recsys_cli.models.registry import get_model_class

CPU = torch.device("cpu")


def _train(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((40, 30)) < 0.2) * rng.integers(1, 6, size=(40, 30))
    dense[0, :3] = [5, 3, 1]
    return sp.csr_matrix(dense.astype(np.float64))


def _fitted(epochs: int = 2, **cfg) -> tuple[DAE, sp.csr_matrix]:
    train = _train()
    model = DAE(DAEConfig(**cfg), device=CPU, dtype=torch.float32, seed=1)
    ctx = FitContext(device=CPU, dtype=torch.float32, seed=1, training=TrainingConfig(epochs=epochs, batch_size=16))
    model.fit(train, ctx)
    return model, train


def test_default_is_the_seed_architecture():
    assert get_model_class("dae") is DAE
    model = DAE(DAEConfig(), device=CPU, dtype=torch.float32)
    model.n_users, model.n_items = 5, 1000
    model.build(sp.csr_matrix((5, 1000)))
    assert model.input_layer.weight.shape == (1000, 420)  # Linear(items, 420), stored as a bag of rows
    assert [(m.in_features, m.out_features) for m in model.layers] == [(420, 69), (69, 420), (420, 1000)]
    assert model._act_after == [True, False, True, False]  # ReLU after 420 in both halves, none at 69 or out
    assert model._act is torch.relu


def test_sparse_first_layer_equals_the_dense_linear_and_scores_are_the_reconstruction():
    model, train = _fitted(hidden=[12, 5])
    x = torch.from_numpy((train.toarray() > 0).astype(np.float32))
    h = torch.relu(x @ model.input_layer.weight + model.input_bias)
    h = model.layers[0](h)  # bottleneck: no activation
    h = torch.relu(model.layers[1](h))
    expected = model.layers[2](h)
    assert torch.allclose(model.score(torch.arange(40)), expected, atol=1e-5)


def test_tanh_follows_every_hidden_layer_as_in_mult_dae():
    model, train = _fitted(hidden=[12, 5], activation="tanh")
    x = torch.from_numpy((train.toarray() > 0).astype(np.float32))
    h = torch.tanh(x @ model.input_layer.weight + model.input_bias)
    h = torch.tanh(model.layers[0](h))  # the bottleneck too
    h = torch.tanh(model.layers[1](h))
    assert torch.allclose(model.score(torch.arange(40)), model.layers[2](h), atol=1e-5)


def test_noise_touches_a_copy_only_and_never_the_target():
    model, train = _fitted(hidden=[12, 5], noise_p=0.5, noise="salt-pepper")
    before = model._x.copy()
    seen = {}
    original = model.encode

    def spy(indices, offsets, values):
        seen["inputs"] = (indices.clone(), offsets.clone(), values.clone())
        return original(indices, offsets, values)

    model.encode = spy
    model.train()
    batch = np.arange(40)
    model.training_loss(batch)
    indices, offsets, values = seen["inputs"]
    clean = model._x[batch]
    noisy_nnz = len(indices)
    # Salt-and-pepper removed some of the clean entries and added others: the input is not the clean row ...
    noisy = torch.zeros(40, 30)
    counts = torch.diff(torch.cat([offsets, torch.tensor([noisy_nnz])]))
    noisy[torch.repeat_interleave(torch.arange(40), counts), indices] = values
    assert not torch.equal(noisy, torch.from_numpy(clean.toarray()))
    # ... while the stored rows (and so the target built from them) are untouched.
    assert (model._x != before).nnz == 0


def test_the_target_is_the_clean_row(monkeypatch):
    model, _ = _fitted(hidden=[12, 5], noise_p=0.9, loss="bce")
    got = {}

    def spy(hidden, rows, cols, values):
        target = torch.zeros((len(hidden), model.n_items))
        target[rows, cols] = values
        got["target"] = target
        return hidden.sum() * 0

    monkeypatch.setattr(model, "reconstruction_loss", spy)
    model.train()
    model.training_loss(np.arange(40))
    assert torch.equal(got["target"], torch.from_numpy(model._x.toarray()))


@pytest.mark.parametrize("loss", ["multinomial", "bce"])
def test_the_fused_output_layer_and_sparse_target_loss_equal_the_dense_formula_with_gradients(loss):
    train = sp.csr_matrix(np.eye(6, 9))
    model = DAE(DAEConfig(loss=loss, hidden=[5, 3]), device=CPU, dtype=torch.float64, seed=0)
    model.build_for(train)
    rng = np.random.default_rng(3)
    values = (rng.random((6, 9)) < 0.4) * rng.random((6, 9))
    values[5, 1] = 0.7  # no empty row
    coo = sp.coo_matrix(values)
    dense = torch.from_numpy(values)
    out = model.layers[-1]
    hidden = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    grads = []
    for fused in (False, True):
        model.zero_grad()
        h = hidden.clone().requires_grad_()
        if fused:
            got = model.reconstruction_loss(h, torch.from_numpy(coo.row.astype(np.int64)),
                                            torch.from_numpy(coo.col.astype(np.int64)), torch.from_numpy(coo.data))
        elif loss == "multinomial":
            expected = -(torch.log_softmax(out(h), dim=1) * dense).sum(dim=1).mean()
        else:
            expected = torch.nn.functional.binary_cross_entropy_with_logits(out(h), dense)
        (got if fused else expected).backward()
        grads.append([h.grad, out.weight.grad.clone(), out.bias.grad.clone()])
    assert torch.allclose(got, expected)
    assert all(torch.allclose(a, b) for a, b in zip(*grads))


def test_the_sparse_first_layer_gradient_equals_the_dense_one():
    model, train = _fitted(hidden=[12, 5])
    users = np.array([3, 0, 17, 39, 3])
    indices, offsets, values = model._rows(users)
    dense = torch.from_numpy(model._x[users].toarray())
    assert torch.equal(torch.zeros(dense.shape).index_put_(
        (torch.repeat_interleave(torch.arange(5), torch.diff(offsets, append=torch.tensor([len(indices)]))),
         indices), values), dense)
    grad = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    model.zero_grad()
    (model._first_layer(indices, offsets, values) * grad).sum().backward()
    weight = model.input_layer.weight.detach()
    assert torch.allclose(model._first_layer(indices, offsets, values), dense @ weight, atol=1e-6)
    assert torch.allclose(model.input_layer.weight.grad, dense.t() @ grad, atol=1e-5)


def test_no_noise_in_eval_or_scoring():
    model, _ = _fitted(hidden=[12, 5], noise_p=0.5)
    model.train()  # even in train mode, scoring is noise-free and deterministic
    a, b = model.score(torch.arange(10)), model.score(torch.arange(10))
    assert torch.equal(a, b) and model.training
    dense = torch.from_numpy(model._x[:10].toarray())
    assert torch.allclose(model(dense), a, atol=1e-6)


def test_ratings_kept_are_scaled_into_bce_range():
    model, train = _fitted(hidden=[8, 3], binarize=False, loss="bce")
    assert model._x.max() == pytest.approx(1.0) and model._x[0, 2] == pytest.approx(0.2)
    assert np.all(model._x.data > 0)


def test_dropout_noise_rescales_survivors():
    model, _ = _fitted(hidden=[8, 3], noise="dropout", noise_p=0.5)
    model.rng = torch.Generator().manual_seed(0)
    rows = torch.zeros(1000, dtype=torch.int64)
    values = torch.ones(1000)
    _, _, noisy = model.add_noise(rows, torch.arange(1000) % 30, values, 1)
    assert torch.all(noisy == 2.0) and 400 < len(noisy) < 600
    assert torch.all(values == 1.0)


def test_training_lowers_the_loss_and_visits_every_active_user_once():
    model, train = _fitted(epochs=1, hidden=[12, 5])
    batches = list(model.epoch_batches(train, torch.Generator().manual_seed(0)))
    seen = np.concatenate(batches)
    assert sorted(seen) == list(np.flatnonzero(np.diff(train.indptr) > 0))
    assert len(batches) == model.num_batches(train) == 3
    losses = []
    for epochs in (1, 30):
        m, _ = _fitted(epochs=epochs, hidden=[12, 5], noise_p=0.0)
        m.train()
        m.rng = torch.Generator().manual_seed(0)
        with torch.no_grad():
            losses.append(float(m.training_loss(np.arange(40))))
    assert losses[1] < losses[0]
    assert isinstance(model.input_layer, nn.EmbeddingBag)


@pytest.mark.parametrize(("min_batches", "expected"), [(None, 16), (4, 10), (8, 5), (100, 1)])
def test_users_per_batch_is_the_cap_or_fewer_for_a_minimum_of_steps(min_batches, expected):
    model, train = _fitted(epochs=1, hidden=[12, 5], min_batches_per_epoch=min_batches)  # cap: batch_size 16
    active = int((np.diff(train.indptr) > 0).sum())
    assert model.users_per_batch() == min(16, expected) == min(16, -(-active // (min_batches or 1)))
    batches = list(model.epoch_batches(train, torch.Generator().manual_seed(0)))
    assert len(batches) == model.num_batches(train) == -(-active // model.users_per_batch())
