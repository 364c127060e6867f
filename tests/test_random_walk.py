"""P3alpha and RP3beta: hand-computed walks, the popularity penalty, row normalisation, both top-Ks,
min_rating/implicit, and the column top-K's tie rule (the reference implementation's argpartition)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.models._random_walk import column_topk
from recsys_cli.models.base import FitContext
from recsys_cli.models.p3alpha import P3alpha, P3alphaConfig
from recsys_cli.models.rp3beta import RP3beta, RP3betaConfig

from . import course_reference as ref

CPU = torch.device("cpu")
# P_ui: u0 [2/3, 1/3, 0], u1 [0, 3/4, 1/4]; P_iu: item 0 → u0 (1), item 1 → u0, u1 (1/2 each), item 2 → u1.
# S = P_iu·P_ui: row 0 [2/3, 1/3, 0], row 1 [1/3, 13/24, 1/8], row 2 [0, 3/4, 1/4]; diagonal → 0.
R = np.array([[2, 1, 0], [0, 3, 1]], dtype=np.float32)


def fit(cls, config_cls, train=R, **kw):
    model = cls(config_cls(**kw), device=CPU, dtype=torch.float32)
    model.fit(sp.csr_matrix(train), FitContext(device=CPU, dtype=torch.float32, seed=0))
    return model


def close(a, expected):
    np.testing.assert_allclose(a, np.array(expected, dtype=np.float64), rtol=1e-6, atol=1e-8)


def test_p3alpha_walk_with_both_top_ks():
    # row top-1: (0,1) 1/3, (1,0) 1/3, (2,1) 3/4; column top-1 keeps 3/4 over 1/3 in column 1
    model = fit(P3alpha, P3alphaConfig, topk=1)
    close(model.dense_W().numpy(), [[0, 0, 0], [1 / 3, 0, 0], [0, 0.75, 0]])
    # scores r_u · W: u0 = 1·row 1 = [1/3, 0, 0]; u1 = 3·row 1 + 1·row 2 = [1, 3/4, 0]
    close(model.score(torch.arange(2)).numpy(), [[1 / 3, 0, 0], [1, 0.75, 0]])
    close(fit(P3alpha, P3alphaConfig, topk=2).dense_W().numpy(), [[0, 1 / 3, 0], [1 / 3, 0, 1 / 8], [0, 0.75, 0]])


def test_p3alpha_exponent_after_normalisation():
    # α = 2 squares both probabilities: S = Σ_u P_iu² P_ui²; row 1 → ¼·(u0 [4/9, 1/9, 0] + u1 [0, 9/16, 1/16])
    W = fit(P3alpha, P3alphaConfig, topk=2, alpha=2.0).dense_W().numpy()
    close(W[1], [1 / 9, 0, 1 / 64])
    close(W[0], [0, 1 / 9, 0])  # item 0 → u0 (prob 1) → item 1 (1/9)


def test_rp3beta_penalises_the_target_popularity_then_normalises_rows():
    # deg = [1, 2, 1], β = 1: column 1 × 1/2 → row 0 [0, 1/6, 0], row 1 [1/3, 0, 1/8], row 2 [0, 3/8, 0]
    raw = fit(RP3beta, RP3betaConfig, topk=2, beta=1.0, normalize_similarity=False).dense_W().numpy()
    close(raw, [[0, 1 / 6, 0], [1 / 3, 0, 1 / 8], [0, 3 / 8, 0]])
    # rows L1-normalised: row 1 → [8/11, 0, 3/11]; rows 0 and 2 → a single 1
    normalised = fit(RP3beta, RP3betaConfig, topk=2, beta=1.0).dense_W().numpy()
    close(normalised, [[0, 1, 0], [8 / 11, 0, 3 / 11], [0, 1, 0]])


def test_min_rating_drops_low_ratings_and_implicit_binarises_them():
    model = fit(P3alpha, P3alphaConfig, topk=2, min_rating=2.0, implicit=True)
    np.testing.assert_array_equal(model.X.toarray(), [[1, 0, 0], [0, 1, 0]])  # 1s are gone, rest set to 1
    assert not model.dense_W().any()  # no user links two items any more
    kept = fit(P3alpha, P3alphaConfig, topk=2, implicit=True).X.toarray()  # min_rating 0: implicit ignored
    np.testing.assert_array_equal(kept, R)


def test_column_topk_breaks_ties_like_the_course():
    rng = np.random.default_rng(0)
    W = np.where(rng.random((60, 40)) < 0.5, rng.integers(1, 4, (60, 40)) / 4, 0).astype(np.float32)  # many ties
    ours = column_topk(sp.csr_matrix(W), 5).toarray()
    np.testing.assert_array_equal(ours, ref.similarity_matrix_top_k(W, 5))


@pytest.mark.parametrize("cls,config_cls,beta", [(P3alpha, P3alphaConfig, None), (RP3beta, RP3betaConfig, 0.6)])
def test_equals_the_dense_reference_on_random_data(cls, config_cls, beta):
    rng = np.random.default_rng(3)
    mask = rng.random((120, 70)) < 0.1
    mask[:3] |= rng.random((3, 70)) < 0.8  # heavy users: the GEMM part of the blocks
    train = np.where(mask, rng.integers(1, 6, mask.shape), 0).astype(np.float32)
    model = fit(cls, config_cls, train, topk=8, alpha=0.8, **({} if beta is None else {"beta": beta}))
    _, expected = ref.p3_fit(train, beta=beta, topK=8, alpha=0.8, normalize_similarity=beta is not None)
    np.testing.assert_allclose(model.dense_W().numpy(), expected, rtol=2e-6, atol=1e-8)
