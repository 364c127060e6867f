"""PureSVD and PureSVD-item: exact on low-rank data, the reference implementation's randomized SVD step by step, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
import torch

from recsys_cli.errors import ConfigError
from recsys_cli.models.base import FitContext
from recsys_cli.models.puresvd import (
    PureSVD,
    PureSVDConfig,
    PureSVDItem,
    PureSVDItemConfig,
)

CPU = torch.device("cpu")


def ratings(n_users=40, n_items=25, density=0.3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    return np.where(mask, rng.integers(1, 11, mask.shape) / 2, 0.0).astype(np.float32)


def fit(cls, config, R: np.ndarray, *, seed=42, dtype=torch.float32):
    model = cls(config, device=CPU, dtype=dtype, seed=seed)
    model.fit(sp.csr_matrix(R), FitContext(device=CPU, dtype=dtype, seed=seed))
    return model


def course_randomized_svd(R: np.ndarray, k: int, seed: int):
    """Steps 1–10 of baselines.md §4 written out with NumPy/SciPy in float32: the reference implementation's randomized SVD."""
    A = sp.csr_matrix(R, dtype=np.float32)
    rng = np.random.RandomState(seed)
    size = k + 10
    n_iter = 7 if k < 0.1 * min(A.shape) else 4
    transpose = A.shape[0] < A.shape[1]
    if transpose:
        A = A.T.tocsr()
    Q = rng.normal(size=(A.shape[1], size)).astype(np.float32)
    for _ in range(n_iter):
        Q = scipy.linalg.lu(A @ Q, permute_l=True)[0]
        Q = scipy.linalg.lu(A.T @ Q, permute_l=True)[0]
    Q = scipy.linalg.qr(A @ Q, mode="economic")[0]
    B = np.asarray((A.T @ Q).T)
    Uh, s, Vt = scipy.linalg.svd(B, full_matrices=False, lapack_driver="gesdd")
    U = Q @ Uh
    U, s, Vt = U[:, :k], s[:k], Vt[:k]
    if transpose:
        return Vt.T, s, U.T
    return U, s, Vt


@pytest.mark.parametrize("shape", [(40, 25), (25, 40)])  # both orientations of the range finder
def test_scores_equal_the_course_randomized_svd(shape):
    R = ratings(*shape, seed=1)
    k = 3  # far below the rank, so the result depends on the random range finder
    model = fit(PureSVD, PureSVDConfig(num_factors=k), R, seed=7)
    U, s, Vt = course_randomized_svd(R, k, 7)
    users = torch.arange(shape[0])
    np.testing.assert_allclose(model.score(users).numpy(), U @ np.diag(s) @ Vt, atol=1e-4)
    np.testing.assert_allclose(model.sigma.numpy(), s, rtol=1e-5)


def test_on_a_low_rank_matrix_it_equals_numpys_full_svd_truncated():
    # rank 6 ≤ k + 10 oversamples: the range finder captures the whole range, so the result is exact
    rng = np.random.default_rng(3)
    R = (rng.random((50, 6)) @ rng.random((6, 30))).astype(np.float32)
    U, s, Vt = np.linalg.svd(R.astype(np.float64))
    for k in (2, 4):
        model = fit(PureSVD, PureSVDConfig(num_factors=k), R, seed=11)
        expected = U[:, :k] @ np.diag(s[:k]) @ Vt[:k]
        np.testing.assert_allclose(model.score(torch.arange(50)).numpy(), expected, atol=1e-4)
        np.testing.assert_allclose(model.sigma.numpy(), s[:k], rtol=1e-5)


def test_seed_is_the_experiment_seed():
    R = ratings(seed=2)
    a = fit(PureSVD, PureSVDConfig(num_factors=3), R, seed=5).score(torch.arange(40))
    b = fit(PureSVD, PureSVDConfig(num_factors=3), R, seed=5).score(torch.arange(40))
    c = fit(PureSVD, PureSVDConfig(num_factors=3), R, seed=6).score(torch.arange(40))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4  # a different Gaussian test matrix gives a different approximation


def test_float64_is_kept_and_half_precision_is_fitted_in_float32():
    R = ratings(seed=3)
    assert fit(PureSVD, PureSVDConfig(num_factors=3), R, dtype=torch.float64).score(torch.arange(3)).dtype == torch.float64
    assert fit(PureSVD, PureSVDConfig(num_factors=3), R, dtype=torch.bfloat16).score(torch.arange(3)).dtype == torch.float32


def test_too_many_factors_is_a_config_error():
    with pytest.raises(ConfigError, match="num_factors"):
        fit(PureSVD, PureSVDConfig(num_factors=30), ratings(40, 25))


@pytest.mark.parametrize("cls, config", [(PureSVD, PureSVDConfig(num_factors=4)),
                                         (PureSVDItem, PureSVDItemConfig(num_factors=4, topk=5))])
def test_save_load_gives_identical_scores(tmp_path, cls, config):
    R = ratings(seed=4)
    model = fit(cls, config, R)
    model.save(tmp_path / "m")
    loaded = cls.load(tmp_path / "m", train=sp.csr_matrix(R), device=CPU)
    users = torch.arange(40)
    assert torch.equal(loaded.score(users), model.score(users))


def test_item_variant_W_is_V_Vt_with_the_diagonal_kept():
    R = ratings(seed=5)
    k = 4
    model = fit(PureSVDItem, PureSVDItemConfig(num_factors=k), R, seed=9)
    _, _, Vt = course_randomized_svd(R, k, 9)
    W = Vt.T @ Vt
    np.testing.assert_allclose(model.dense_W().numpy(), W, atol=1e-5)
    np.testing.assert_allclose(model.score(torch.arange(40)).numpy(), R @ W, atol=1e-4)


def test_item_variant_topk_keeps_the_largest_signed_values_per_column():
    R = ratings(seed=6)
    model = fit(PureSVDItem, PureSVDItemConfig(num_factors=4, topk=3), R, seed=9)
    _, _, Vt = course_randomized_svd(R, 4, 9)
    full = Vt.T @ Vt
    kept = model.dense_W().numpy()
    for j in range(full.shape[1]):
        top = np.sort(np.argsort(-full[:, j])[:3])
        assert np.flatnonzero(kept[:, j]).tolist() == top.tolist()
        np.testing.assert_allclose(kept[top, j], full[top, j], atol=1e-5)


@pytest.mark.parametrize("shape, k", [((60, 35), 3), ((35, 60), 5), ((30, 30), 12)])  # n_iter 7 and 4
def test_factors_equal_scikit_learns_randomized_svd(shape, k):
    from sklearn.utils.extmath import randomized_svd

    from recsys_cli.models.puresvd import randomized_factors

    R = sp.csr_matrix(ratings(*shape, seed=8))
    U, s, Vt = randomized_factors(R, k, 13)
    U_ref, s_ref, Vt_ref = randomized_svd(R, n_components=k, random_state=np.random.RandomState(13))
    assert U.dtype == np.float32 and s.dtype == np.float32
    np.testing.assert_allclose(s, s_ref, rtol=1e-5)
    np.testing.assert_allclose(U * s @ Vt, U_ref * s_ref @ Vt_ref, atol=1e-4)
