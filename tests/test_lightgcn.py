"""LightGCN: adjacency, propagation, gradients, dropout, training and the run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
from recsys_cli.models._graph import NormalizedAdjacency, propagate
from recsys_cli.models.base import FitContext
from recsys_cli.models.lightgcn import LightGCN, LightGCNConfig
from recsys_cli.training import Trainer

from .conftest import CONFIGS

CPU = torch.device("cpu")

# 4 users × 3 items; user 3 has no interactions, item 2 is rated by users 0 and 2.
TINY = sp.csr_matrix(np.array([
    [5.0, 0.0, 3.0],
    [4.0, 1.0, 0.0],
    [0.0, 2.0, 4.0],
    [0.0, 0.0, 0.0],
]))


def dense_adjacency(r: np.ndarray, weighting: str) -> np.ndarray:
    """The textbook construction: A = [[0, R], [Rᵀ, 0]], Ã = D^-1/2 A D^-1/2 (dense)."""
    w = (r != 0).astype(float) if weighting == "binary" else r
    n_u, n_i = w.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:], a[n_u:, :n_u] = w, w.T
    d = a.sum(axis=1)
    if weighting == "binary":
        f = np.array([1 / np.sqrt(x) if x > 0 else 0.0 for x in d])
    else:
        f = 1 / (np.sqrt(d) + 1e-6)
    return f[:, None] * a * f[None, :]


def planted(n_users=120, n_items=80, rank=3, density=0.08, seed=0) -> sp.csr_matrix:
    """Interactions from a low-rank preference matrix: the best-scoring items of each user."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_users, rank)) @ rng.normal(size=(rank, n_items))
    s += rng.gumbel(size=s.shape) * 0.5
    threshold = np.quantile(s, 1 - density)
    return sp.csr_matrix((s > threshold).astype(float))


def make_model(train: sp.csr_matrix, dtype=torch.float64, **config) -> LightGCN:
    model = LightGCN(LightGCNConfig(**config), device=CPU, dtype=dtype, seed=3)
    model.build_for(train)
    return model


def normalized_adjacency(train, weighting="binary"):
    """Ã as SciPy CSR, float64, from the structure the model builds on the device."""
    return NormalizedAdjacency(train, weighting, device=CPU, dtype=torch.float64).to_scipy()


@pytest.mark.parametrize("weighting", ["binary", "ratings"])
def test_adjacency_equals_dense_computation_is_symmetric_without_self_loops(weighting):
    expected = dense_adjacency(TINY.toarray(), weighting)
    got = normalized_adjacency(TINY, weighting).toarray()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(got, got.T)
    assert np.all(np.diag(got) == 0)
    # the device-side structure is the same matrix
    device_side = NormalizedAdjacency(TINY, weighting, device=CPU, dtype=torch.float64).to_scipy().toarray()
    np.testing.assert_allclose(device_side, expected, rtol=1e-12, atol=1e-15)
    # a hand-computed entry: user 0 – item 0 (binary degrees 2 and 2; ratings sums 8 and 9)
    hand = 1 / 2 if weighting == "binary" else 5 / ((np.sqrt(8) + 1e-6) * (np.sqrt(9) + 1e-6))
    assert got[0, 4] == pytest.approx(hand, rel=1e-12)


def test_propagation_matches_dense_layer_mean_and_its_gradient():
    train = planted()
    adj = NormalizedAdjacency(train, "binary", device=CPU, dtype=torch.float64)
    a = normalized_adjacency(train).toarray()
    x = torch.randn(adj.n_nodes, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k in (1, 2, 3):
        mean_of_powers = sum(np.linalg.matrix_power(a, p) for p in range(k + 1)) / (k + 1)
        np.testing.assert_allclose(propagate(x, adj.full, k).numpy(), mean_of_powers @ x.numpy(), atol=1e-12)
    # the custom backward (P·grad, as P is symmetric) agrees with numerical differentiation
    small = NormalizedAdjacency(TINY, "ratings", device=CPU, dtype=torch.float64)
    leaf = torch.randn(small.n_nodes, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: propagate(e, small.full, 3), (leaf,))


def test_layers_zero_is_bpr_matrix_factorisation():
    train = planted()
    model = make_model(train, layers=0, l2_reg=1e-2)
    u0, i0 = model.user_embedding.weight, model.item_embedding.weight
    users, pos, neg = torch.tensor([0, 5, 7]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    loss = model.training_loss((users, pos, neg))
    x_ui = (u0[users] * i0[pos]).sum(1)
    x_uj = (u0[users] * i0[neg]).sum(1)
    reg = 0.5 * (u0[users].pow(2).sum() + i0[pos].pow(2).sum() + i0[neg].pow(2).sum()) / 3
    expected = -F.logsigmoid(x_ui - x_uj).mean() + 1e-2 * reg
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    model.finish_training()
    np.testing.assert_allclose(model.score(torch.arange(4)).detach().numpy(),
                               (u0[:4] @ i0.T).detach().numpy(), rtol=1e-12)


def test_gradients_reach_embeddings_within_k_hops_only():
    # user 0 – item 0 – user 1 – item 1 – user 2 – item 2: a path graph
    path = sp.csr_matrix(np.array([[1.0, 0, 0], [1, 1, 0], [0, 1, 1]]))
    batch = (torch.tensor([0]), torch.tensor([0]), torch.tensor([2]))
    reached = {}
    for k in (0, 1):
        model = make_model(path, layers=k, l2_reg=0.0)
        model.zero_grad()
        model.training_loss(batch).backward()
        reached[k] = (model.user_embedding.weight.grad.abs().sum(1) > 0).tolist()
    # K=0: only the batch's user; K=1: also user 1 (a neighbour of item 0) and user 2 (of item 2)
    assert reached[0] == [True, False, False]
    assert reached[1] == [True, True, True]
    model = make_model(planted(), layers=3)
    model.training_loss((torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))).backward()
    assert model.user_embedding.weight.grad.abs().sum() > 0 and model.item_embedding.weight.grad.abs().sum() > 0


def test_edge_dropout_keeps_expected_edges_symmetrically_and_rescales():
    train = planted(n_users=300, n_items=200, density=0.1)
    adj = NormalizedAdjacency(train, "binary", device=CPU, dtype=torch.float64)
    full = adj.to_scipy()
    p, n = 0.3, adj.n_interactions
    kept = []
    for seed in range(20):
        op = adj.dropped(p, generator=torch.Generator().manual_seed(seed))
        m = op.to_scipy()
        assert (m != m.T).nnz == 0  # an interaction is dropped in both directions at once
        assert m.nnz % 2 == 0
        kept.append(m.nnz // 2)
        # every kept entry is the original value / (1 - p); nothing new appears
        rows, cols = m.nonzero()
        np.testing.assert_allclose(np.asarray(m[rows, cols]).ravel(),
                                   np.asarray(full[rows, cols]).ravel() / (1 - p), rtol=1e-12)
    # Binomial(n, 0.7) per draw: the mean of 20 draws is within 5 standard errors of 0.7 n
    sd = np.sqrt(n * p * (1 - p) / 20)
    assert abs(np.mean(kept) - (1 - p) * n) < 5 * sd
    assert len(set(kept)) > 1
    assert adj.dropped(0.0) is adj.full


def test_dropout_training_is_reproducible_and_off_in_evaluation():
    train = planted()
    a, b = make_model(train, edge_dropout=0.5), make_model(train, edge_dropout=0.5)
    batch = (torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    a.rng.manual_seed(9), b.rng.manual_seed(9)
    assert float(a.training_loss(batch).detach()) == float(b.training_loss(batch).detach())
    with torch.no_grad():
        dropped, evaluated = a.propagated(training=True), a.propagated(training=False)
        assert not torch.allclose(dropped, evaluated)
        assert torch.equal(evaluated, propagate(a.layer0(), a.adjacency.full, a.config.layers))


def fit(train, *, epochs=8, batch_size=256, lr=5e-3, validation=None, evaluator=None, **config):
    model = LightGCN(LightGCNConfig(**config), device=CPU, dtype=torch.float32, seed=0)
    ctx = FitContext(device=CPU, dtype=torch.float32, seed=0, validation=validation,
                     training=TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr,
                                             early_stopping=EarlyStoppingConfig(enabled=False)))
    trainer = Trainer(model, ctx, evaluator=evaluator)
    trainer.fit(train)
    return model, trainer


def hit_rate_at_10(model, train, test) -> float:
    scores = model.score(torch.arange(train.shape[0])).detach().numpy().copy()
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    hits = np.take_along_axis(test.toarray(), top, axis=1).sum(1) > 0
    has_test = np.asarray(test.sum(1)).ravel() > 0
    return float(hits[has_test].mean())


def test_bpr_loss_decreases_and_beats_popularity_on_planted_data():
    full = planted(n_users=200, n_items=120, density=0.12, seed=1)
    coo = full.tocoo()
    test_mask = np.random.default_rng(0).random(coo.nnz) < 0.2
    as_csr = lambda m: sp.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=full.shape)  # noqa: E731
    train, test = as_csr(~test_mask), as_csr(test_mask)
    model, trainer = fit(train, epochs=15, lr=3e-2, dim=16, layers=2)
    losses = [row["loss"] for row in trainer.history]
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a * 1.05 for a, b in zip(losses, losses[1:]))
    popularity = np.asarray(train.sum(0)).ravel()

    class Popular:
        def score(self, users):
            return torch.from_numpy(np.tile(popularity, (len(users), 1)))

    assert hit_rate_at_10(model, train, test) > 1.3 * hit_rate_at_10(Popular(), train, test)


def test_a_fit_beyond_the_memory_budget_is_refused_before_allocating():
    from recsys_cli.errors import ResourceError

    model = LightGCN(LightGCNConfig(dim=4096), device=CPU, dtype=torch.float32, seed=0)
    ctx = FitContext(device=CPU, dtype=torch.float32, seed=0, memory_budget_bytes=2**20)
    with pytest.raises(ResourceError, match="lower model.dim"):
        model.fit(planted(), ctx)
    assert not hasattr(model, "user_embedding")


def test_bfloat16_on_cpu_trains_with_float32_propagation():
    train = planted()
    model = LightGCN(LightGCNConfig(dim=8), device=CPU, dtype=torch.bfloat16, seed=0)
    ctx = FitContext(device=CPU, dtype=torch.bfloat16, seed=0,
                     training=TrainingConfig(epochs=1, batch_size=512, learning_rate=1e-2))
    Trainer(model, ctx).fit(train)
    assert model.adjacency.values.dtype == torch.float32
    assert torch.isfinite(model.score(torch.arange(5))).all()


def _run_cli(args):
    from recsys_cli.cli.app import app

    return CliRunner().invoke(app, args)


SYNTHETIC = ["--set", "data.dataset=synthetic", "--set", "data.synthetic.n_users=400",
             "--set", "data.synthetic.n_items=250", "--set", "data.synthetic.n_interactions=20000",
             "--set", "device.accelerator=cpu"]


def test_cli_run_end_to_end_on_synthetic_and_beats_toppop(runs_dir):
    common = [*SYNTHETIC, "--set", "evaluation.cutoffs=[10]", "--json"]
    result = _run_cli(["run", str(CONFIGS / "lightgcn.yaml"), *common, "--set", "training.epochs=10",
                       "--set", "training.batch_size=1024", "--set", "training.learning_rate=0.03",
                       "--set", "training.eval_every=2", "--set", "model.dim=32"])
    assert result.exit_code == 0, result.stderr
    run = Path(json.loads(result.stdout)["run_dir"])
    assert json.loads((run / "status.json").read_text())["status"] == "succeeded"
    assert (run / "model" / "model.pt").is_file() and (run / "train_log.csv").is_file()
    ndcg = _ndcg(run)
    top = _run_cli(["run", str(CONFIGS / "lightgcn.yaml"), *common, "--set", "model={name: toppop}"])
    assert top.exit_code == 0, top.stderr
    # seen here: 0.38 against TopPop's 0.14
    assert ndcg > 1.5 * _ndcg(Path(json.loads(top.stdout)["run_dir"]))


def _ndcg(run: Path) -> float:
    records = json.loads((run / "metrics.json").read_text())
    rows = records if isinstance(records, list) else records.get("records", records.get("metrics", []))
    for row in rows:
        if row.get("metric") == "NDCG" and int(row.get("cutoff")) == 10:
            return float(row["value"])
    raise AssertionError(f"no NDCG@10 in {run / 'metrics.json'}")


def test_resume_with_edge_dropout_replays_an_uninterrupted_run(tmp_path):
    train = planted()

    def run(epochs, run_dir, resume_from=None):
        model = LightGCN(LightGCNConfig(dim=8, edge_dropout=0.3), device=CPU, dtype=torch.float64, seed=1)
        ctx = FitContext(device=CPU, dtype=torch.float64, seed=1, run_dir=run_dir, resume_from=resume_from,
                         training=TrainingConfig(epochs=epochs, batch_size=500, learning_rate=1e-2))
        Trainer(model, ctx).fit(train)
        return model.score(torch.arange(20))

    straight = run(3, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume_from=tmp_path / "b")
    torch.testing.assert_close(resumed, straight, rtol=0, atol=0)
