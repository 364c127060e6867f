"""iALS: half-steps against NumPy ridge solutions, CG against the exact solve, the reference implementation's epochs,
the objective, and training through the engine (validation, best factors, save/load)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
from recsys_cli.models.base import FitContext
from recsys_cli.models.ials import (
    IALS,
    IALSConfig,
    Interactions,
    confidence,
    initial_item_factors,
    objective,
    solve_cg,
    solve_cholesky,
)

CPU = torch.device("cpu")
F64 = torch.float64


def ratings(n_users=30, n_items=20, density=0.25, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    return np.where(mask, rng.integers(1, 11, mask.shape) / 2, 0.0)


def numpy_half_step(R: np.ndarray, Y: np.ndarray, reg: float, alpha: float) -> np.ndarray:
    """x_u = (YᵀY + Yᵀ(C_u − I)Y + reg·I)⁻¹ Yᵀ C_u p_u, row by row (cold rows: 0)."""
    X = np.zeros((R.shape[0], Y.shape[1]))
    for u in range(R.shape[0]):
        if not R[u].any():
            continue
        c = np.where(R[u] > 0, 1 + alpha * R[u], 1.0)
        p = (R[u] > 0).astype(float)
        A = Y.T @ (c[:, None] * Y) + reg * np.eye(Y.shape[1])
        X[u] = np.linalg.solve(A, Y.T @ (c * p))
    return X


def side(R: np.ndarray, alpha=1.0) -> Interactions:
    C = sp.csr_matrix(R)
    C.data = confidence(C.data, "linear", alpha, 1.0)
    return Interactions(C, CPU, F64)


@pytest.mark.parametrize("reg", [1e-3, 0.5])
def test_a_cholesky_half_step_is_the_ridge_solution_per_user(reg):
    R = ratings(seed=1)
    R[4] = 0  # a cold user
    Y = np.random.default_rng(2).random((20, 5))
    X = solve_cholesky(side(R, alpha=2.0), torch.from_numpy(Y), reg).numpy()
    np.testing.assert_allclose(X, numpy_half_step(R, Y, reg, alpha=2.0), rtol=1e-9, atol=1e-10)
    assert not X[4].any()


def test_cholesky_groups_of_several_sizes_give_the_same_answer(monkeypatch):
    from recsys_cli.models import ials

    R = ratings(n_users=80, density=0.4, seed=3)
    Y = torch.from_numpy(np.random.default_rng(4).random((20, 4)))
    whole = solve_cholesky(side(R), Y, 0.1)
    monkeypatch.setattr(ials, "GATHER_ENTRIES", 4 * 12)  # groups of a few rows, some of a single row
    np.testing.assert_allclose(solve_cholesky(side(R), Y, 0.1).numpy(), whole.numpy(), rtol=1e-10)


def test_conjugate_gradient_converges_to_the_exact_solve_and_leaves_cold_rows_alone():
    R = ratings(seed=5)
    R[7] = 0
    Y = torch.from_numpy(np.random.default_rng(6).random((20, 6)))
    exact = solve_cholesky(side(R), Y, 0.2)
    start = torch.full((30, 6), 0.3, dtype=F64)
    three = solve_cg(side(R), Y, start, 0.2, steps=3)
    many = solve_cg(side(R), Y, start, 0.2, steps=6)  # k = 6: exact in 6 steps up to rounding
    warm = torch.ones(30, dtype=torch.bool)
    warm[7] = False
    assert (three[warm] - exact[warm]).abs().max() < (start[warm] - exact[warm]).abs().max()
    np.testing.assert_allclose(many[warm].numpy(), exact[warm].numpy(), atol=1e-6)
    assert torch.equal(three[7], start[7])


def test_log_confidence():
    np.testing.assert_allclose(confidence(np.array([0.5, 4.0]), "log", 2.0, 0.5),
                               [1 + 2 * math.log(2.0), 1 + 2 * math.log(9.0)], rtol=1e-6)


def test_objective_equals_the_dense_sum_over_all_pairs():
    R = ratings(seed=7)
    rng = np.random.default_rng(8)
    X, Y = rng.random((30, 3)), rng.random((20, 3))
    C = np.where(R > 0, 1 + R, 1.0)
    P = (R > 0).astype(float)
    dense = (C * (P - X @ Y.T) ** 2).sum() + 0.3 * ((X**2).sum() + (Y**2).sum())
    got = objective(side(R), torch.from_numpy(X), torch.from_numpy(Y), 0.3)
    assert got == pytest.approx(dense, rel=1e-10)


def course_ials(R: np.ndarray, *, epochs, k, alpha, reg, seed) -> tuple[np.ndarray, np.ndarray]:
    """The reference implementation's IALSRecommender (baselines.md §5) with zero user factors: np.linalg.inv per warm row."""
    np.random.seed(seed)
    U = np.zeros((R.shape[0], k))
    V = k ** -0.5 * np.random.random_sample((R.shape[1], k))
    C = np.where(R > 0, 1 + alpha * R.astype(np.float32), 0)
    for _ in range(epochs):
        VV = V.T @ V
        for u in np.flatnonzero((R > 0).any(1)):
            items = np.flatnonzero(R[u])
            Vi, c = V[items], C[u, items]
            U[u] = np.linalg.inv(VV + Vi.T @ np.diag(c - 1) @ Vi + reg * np.eye(k)) @ (Vi.T @ c)
        UU = U.T @ U
        for i in np.flatnonzero((R > 0).any(0)):
            users = np.flatnonzero(R[:, i])
            Ui, c = U[users], C[users, i]
            V[i] = np.linalg.inv(UU + Ui.T @ np.diag(c - 1) @ Ui + reg * np.eye(k)) @ (Ui.T @ c)
    return U, V


def ctx(epochs, validation=None, dtype=F64, **es) -> FitContext:
    tc = TrainingConfig(epochs=epochs, early_stopping=EarlyStoppingConfig(**es))
    return FitContext(device=CPU, dtype=dtype, seed=11, training=tc, validation=validation)


def test_cholesky_epochs_equal_the_course_loop_including_cold_items():
    R = ratings(seed=9)
    R[:, 3] = 0  # a cold item keeps its random initial factors and still gets scores
    R[5] = 0
    model = IALS(IALSConfig(num_factors=4, alpha=2.0, reg=0.05, solver="cholesky"), device=CPU, dtype=F64, seed=11)
    model.fit(sp.csr_matrix(R), ctx(epochs=3))
    U, V = course_ials(R, epochs=3, k=4, alpha=2.0, reg=0.05, seed=11)
    np.testing.assert_allclose(model.item_factors.numpy(), V, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.score(torch.arange(30)).numpy(), U @ V.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(model.item_factors[3].numpy(), initial_item_factors(20, 4, 11)[3])


def test_engine_early_stopping_keeps_the_best_epoch_and_save_load_round_trips(tmp_path):
    rng = np.random.default_rng(12)
    taste = rng.random((60, 3)) @ rng.random((3, 40))
    full = (taste > np.quantile(taste, 0.8)).astype(float)
    held = rng.random(full.shape) < 0.2
    train, val = sp.csr_matrix(full * ~held), sp.csr_matrix(full * held)
    model = IALS(IALSConfig(num_factors=3, solver="cg"), device=CPU, dtype=torch.float32, seed=11)
    model.fit(train, ctx(epochs=12, validation=val, dtype=torch.float32, patience=2))
    assert model.item_factors.dtype == torch.float32 and model.best_epoch is not None
    assert 1 <= model.best_epoch <= model.epochs_trained <= 12
    model.save(tmp_path / "m")
    loaded = IALS.load(tmp_path / "m", train=train, device=CPU)
    users = torch.arange(60)
    assert torch.equal(loaded.score(users), model.score(users))


def test_cg_training_reaches_the_exact_solvers_objective():
    R = ratings(n_users=50, n_items=30, seed=13)
    losses = {}
    for solver in ("cholesky", "cg"):
        model = IALS(IALSConfig(num_factors=4, solver=solver, cg_steps=3), device=CPU, dtype=F64, seed=11)
        model.fit(sp.csr_matrix(R), ctx(epochs=15))
        losses[solver] = objective(model.users, model.user_factors, model.item_factors, 1e-3)
    assert losses["cg"] == pytest.approx(losses["cholesky"], rel=1e-3)
