"""GF-CF: the spec's formula against a direct float64 computation, top-k by value, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.errors import ConfigError
from recsys_cli.models.base import FitContext
from recsys_cli.models.gfcf import GFCF, GFCFConfig, normalized_matrix

CPU = torch.device("cpu")


def grouped_ratings(groups=4, users=30, items=15, seed=0) -> np.ndarray:
    """Users who mostly rate inside their own item group: R̃ has `groups` singular values near 1, then a
    wide gap, so the top-`groups` right singular subspace is well defined and a randomized SVD finds it."""
    rng = np.random.default_rng(seed)
    gu, gi = np.repeat(np.arange(groups), users), np.repeat(np.arange(groups), items)
    same = gu[:, None] == gi[None, :]
    mask = np.where(same, rng.random(same.shape) < 0.6, rng.random(same.shape) < 0.02)
    mask[np.arange(gu.size), gu * items] = True  # nobody is empty
    return np.where(mask, rng.integers(1, 11, mask.shape) / 2, 0.0)


def direct_W(R: np.ndarray, alpha: float, k: int) -> np.ndarray:
    d_i, d_u = R.sum(axis=0), R.sum(axis=1)
    R_t = (1 / np.sqrt(d_u) + 1e-6)[:, None] * R * (1 / (np.sqrt(d_i) + 1e-6))[None, :]
    V = np.linalg.svd(R_t)[2][:k]
    return R_t.T @ R_t + alpha * (V.T @ V) * np.sqrt(d_i)[None, :] / (np.sqrt(d_i) + 1e-6)[:, None]


def fit(config: GFCFConfig, R: sp.csr_matrix, *, dtype=torch.float32, seed=0) -> GFCF:
    model = GFCF(config, device=CPU, dtype=dtype, seed=seed)
    model.fit(R, FitContext(device=CPU, dtype=dtype, seed=seed))
    return model


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_W_matches_direct_float64_formula(alpha):
    R = grouped_ratings()
    model = fit(GFCFConfig(alpha=alpha, num_factors=4), sp.csr_matrix(R))
    expected = direct_W(R, alpha, 4)
    assert np.abs(model.dense_W().numpy() - expected).max() <= 1e-5
    users = torch.tensor([0, 31, 119])
    np.testing.assert_allclose(model.score(users).numpy(), R[[0, 31, 119]] @ expected, atol=1e-5)


def test_W_spanning_several_column_tiles_matches_formula():
    R = grouped_ratings(groups=4, users=60, items=75, seed=5)  # 300 items: two tiles of 256 columns
    model = fit(GFCFConfig(alpha=1.5, num_factors=4), sp.csr_matrix(R))
    assert np.abs(model.dense_W().numpy() - direct_W(R, 1.5, 4)).max() <= 1e-5


def test_dense_accelerator_path_on_the_cpu(monkeypatch):
    # Off the CPU, W stays one dense tensor built from the full R̃ᵀR̃; run that code here.
    from recsys_cli.models import gfcf as gfcf_module
    from recsys_cli.models._linalg import mirror_upper_
    from recsys_cli.models._tiles import ColumnTiles

    monkeypatch.setattr(gfcf_module, "symmetric_matrix", mirror_upper_)
    R = grouped_ratings(groups=4, users=60, items=150, seed=6)  # 600 items: several column blocks
    model = fit(GFCFConfig(alpha=0.5, num_factors=4), sp.csr_matrix(R))
    assert isinstance(model.W, ColumnTiles)
    assert np.abs(model.dense_W().numpy() - direct_W(R, 0.5, 4)).max() <= 1e-5


def test_degrees_are_sums_of_values_with_the_course_epsilons():
    R = sp.csr_matrix(np.array([[2.0, 0.0, 4.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    R_t, d_items = normalized_matrix(R)
    np.testing.assert_array_equal(d_items, [2.0, 1.0, 4.0])
    # user 0: d_u = 6 → 1/√6 + 1e-6; item 2: d_i = 4 → 1/(2 + 1e-6)
    assert R_t[0, 2] == pytest.approx(4.0 * (1 / np.sqrt(6) + 1e-6) / (2 + 1e-6), rel=1e-6)
    assert R_t[2].nnz == 0 and np.isfinite(R_t.data).all()  # the empty user's inf factor never meets a value


def test_same_seed_same_W_and_empty_users_score_zero():
    R = grouped_ratings(seed=1)
    R[7] = 0
    a = fit(GFCFConfig(num_factors=3), sp.csr_matrix(R), seed=11)
    b = fit(GFCFConfig(num_factors=3), sp.csr_matrix(R), seed=11)
    assert torch.equal(a.dense_W(), b.dense_W())
    scores = a.score(torch.tensor([7, 8]))
    assert torch.isfinite(scores).all() and torch.all(scores[0] == 0)


def test_topk_keeps_the_k_largest_values_per_column():
    R = sp.csr_matrix(grouped_ratings(seed=2))
    dense = fit(GFCFConfig(num_factors=4), R).dense_W().numpy()
    k = 6
    kept = fit(GFCFConfig(num_factors=4, topk=k), R).dense_W().numpy()
    assert np.all((kept != 0).sum(axis=0) == k)
    for j in range(dense.shape[1]):
        rows = np.flatnonzero(kept[:, j])
        assert set(rows) == set(np.argsort(-dense[:, j], kind="stable")[:k])  # by value, not magnitude
        np.testing.assert_array_equal(kept[rows, j], dense[rows, j])


def test_too_many_factors_is_a_config_error():
    R = sp.csr_matrix(grouped_ratings(groups=2, users=5, items=4))
    with pytest.raises(ConfigError, match="model.num_factors is 50 but the training matrix is 10 × 8"):
        fit(GFCFConfig(), R)
