"""ItemKNN / UserKNN and the similarity engine: hand-computed known answers for every similarity, the
feature weightings and UserKNN's reverse-kNN orientation; the blocked engine against the dense
reference on random data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.models._similarity import Similarity, column_similarity
from recsys_cli.models.base import FitContext
from recsys_cli.models.itemknn import ItemKNN, ItemKNNConfig
from recsys_cli.models.userknn import UserKNN, UserKNNConfig

from . import course_reference as ref

CPU = torch.device("cpu")
# 4 users × 3 items. Column Gram: G01 = 1·2 + 2·2 = 6, G02 = 3·1 = 3, G12 = 4·2 = 8;
# Σx²: 14, 24, 5. Binarised: |0| = 3, |1| = 3, |2| = 2; co-raters 0-1: 2 (u0, u3), 0-2: 1, 1-2: 1.
R = np.array([[1, 2, 0],
              [3, 0, 1],
              [0, 4, 2],
              [2, 2, 0]], dtype=np.float32)


def W_of(similarity="cosine", topk=2, **kw) -> np.ndarray:
    return column_similarity(sp.csr_matrix(R), Similarity(similarity=similarity, **kw), topk).toarray()


def close(W, expected):
    np.testing.assert_allclose(W, np.array(expected, dtype=np.float64), rtol=2e-6, atol=1e-7)


def test_cosine():
    # W[i, j] = G_ij / (‖i‖‖j‖ + 1e-6): 6/√336 = 0.327327, 3/√70 = 0.358569, 8/√120 = 0.730297
    close(W_of(), [[0, 0.327327, 0.358569], [0.327327, 0, 0.730297], [0.358569, 0.730297, 0]])


def test_shrink_sits_in_the_denominator_and_topk_keeps_the_largest():
    # shrink 2: 6/(18.330303 + 2) = 0.295126, 3/(8.366600 + 2) = 0.289391, 8/(10.954451 + 2) = 0.617549
    # topK 1: target 0 keeps item 1 (0.295 > 0.289); targets 1 and 2 keep each other
    close(W_of(topk=1, shrink=2.0), [[0, 0, 0], [0.295126, 0, 0.617549], [0, 0.617549, 0]])


def test_without_normalisation_shrink_divides():
    close(W_of(normalize=False, shrink=2.0), [[0, 3, 1.5], [3, 0, 4], [1.5, 4, 0]])  # G / 2
    close(W_of(normalize=False), [[0, 6, 3], [6, 0, 8], [3, 8, 0]])  # shrink 0: G itself


def test_asymmetric_cosine_weights_target_and_candidate():
    # α = 1: G_ij / ‖j‖² (target j): col 0: 6/14, 3/14; col 1: 6/24, 8/24; col 2: 3/5, 8/5
    close(W_of("asymmetric", asymmetric_alpha=1.0), [[0, 0.25, 0.6], [0.428571, 0, 1.6], [0.214286, 0.333333, 0]])


def test_jaccard_dice_and_tversky_binarise():
    close(W_of("jaccard"), [[0, 0.5, 0.25], [0.5, 0, 0.25], [0.25, 0.25, 0]])  # 2/(3+3−2), 1/(3+2−1)
    close(W_of("tanimoto"), W_of("jaccard"))
    close(W_of("dice"), [[0, 1 / 3, 0.2], [1 / 3, 0, 0.2], [0.2, 0.2, 0]])  # 2/(3+3), 1/(3+2): no factor 2
    # tversky α = 1, β = 0 (target j, candidate i): G / (G + (|j| − G)) = G / |j|
    close(W_of("tversky", tversky_alpha=1.0, tversky_beta=0.0),
          [[0, 2 / 3, 0.5], [2 / 3, 0, 0.5], [1 / 3, 1 / 3, 0]])
    close(W_of("tversky"), W_of("jaccard"))  # α = β = 1 is Jaccard
    close(W_of("jaccard", normalize=True), W_of("jaccard", normalize=False))  # normalize is ignored


def test_adjusted_centres_rows_and_keeps_negatives_only_when_fewer_than_k_are_non_negative():
    # row means of stored entries 1.5, 2, 3, 2 → u0 [−.5, .5, ·], u1 [1, ·, −1], u2 [·, 1, −1], u3 [0, 0, ·]
    # G01 = −0.25, G02 = −1, G12 = −1; Σx² = 1.25, 1.25, 2 → −0.2, −1/√2.5 = −0.632456 (twice)
    close(W_of("adjusted", topk=3), [[0, -0.2, -0.632456], [-0.2, 0, -0.632456], [-0.632456, -0.632456, 0]])
    # topK 2: the zeroed diagonal is a candidate ≥ 0, so only the larger negative survives; in
    # column 2 the two candidates tie at −0.632456 and exactly one of them is kept
    W = W_of("adjusted", topk=2)
    close(W[:, :2], [[0, -0.2], [-0.2, 0], [0, 0]])
    assert np.count_nonzero(W[:, 2]) == 1 and W[:, 2].sum() == pytest.approx(-0.632456, rel=2e-6)
    # topK 1: the diagonal zero wins and is dropped: nothing is kept
    assert not W_of("adjusted", topk=1).any()


def test_pearson_centres_columns():
    # column means 2, 8/3, 1.5 → G01 = 2/3, G02 = −1/2, G12 = 2/3; Σx² = 2, 8/3, 1/2
    # → (2/3)/√(16/3) = 0.288675, −0.5/1 = −0.5, (2/3)/√(4/3) = 0.577350
    close(W_of("pearson", topk=3), [[0, 0.288675, -0.5], [0.288675, 0, 0.577350], [-0.5, 0.577350, 0]])


def fit(cls, config_cls, train, **kw):
    model = cls(config_cls(**kw), device=CPU, dtype=torch.float32)
    model.fit(sp.csr_matrix(train), FitContext(device=CPU, dtype=torch.float32, seed=0))
    return model


def test_itemknn_scores_are_rows_times_W():
    model = fit(ItemKNN, ItemKNNConfig, R, topk=1, shrink=0.0)
    W = model.dense_W().numpy()  # target 0 ← item 2, target 1 ← item 2, target 2 ← item 1
    close(W, [[0, 0, 0], [0, 0, 0.730297], [0.358569, 0.730297, 0]])
    close(model.score(torch.tensor([1])).numpy(), [[0.358569, 0.730297, 0]])  # u1 = [3, 0, 1] → 1 · row 2


def test_userknn_scores_with_the_reverse_neighbourhood():
    # user cosines: u0u1 3/√50 = .424264, u0u2 8/√100 = .8, u0u3 6/√40 = .948683, u1u2 2/√200, u1u3
    # 6/√80 = .670820, u2u3 8/√160 = .632456. topK 1 per column v: u0 ← u3, u1 ← u3, u2 ← u0, u3 ← u0.
    model = fit(UserKNN, UserKNNConfig, R, topk=1, shrink=0.0)
    assert model.W.shape == (4, 4)
    scores = model.score(torch.arange(4)).numpy()
    # u0 = W[u0, u2]·r_u2 + W[u0, u3]·r_u3 = 0.8·[0, 4, 2] + 0.948683·[2, 2, 0]
    close(scores[0], [1.897367, 5.097367, 1.6])
    close(scores[3], [0.948683 + 3 * 0.670820, 2 * 0.948683, 0.670820])  # u3 is in the top-1 of u0 and u1
    assert not scores[1].any() and not scores[2].any()  # nobody has u1 or u2 as nearest: empty row


# 3 users × 3 items for the weightings: |I_u| = 1, 2, 1 → idf ln(3/2) = 0.405465, ln(3/3) = 0, 0.405465
WEIGHTED = np.array([[4, 0, 0], [1, 1, 0], [0, 0, 9]], dtype=np.float32)


def test_tf_idf_weighting_replaces_the_training_rows():
    X = fit(ItemKNN, ItemKNNConfig, WEIGHTED, topk=1, feature_weighting="TF-IDF").X.toarray()
    close(X, [[2 * 0.405465, 0, 0], [0, 0, 0], [0, 0, 3 * 0.405465]])  # √r · idf


def test_bm25_weighting():
    # item lengths L = 5, 1, 9, mean 5 → length norms 0.25 + 0.75·L/5 = 1.0, 0.4, 1.6
    # u0 i0: 4·2.2/(1.2·1.0 + 4)·0.405465 = 0.686172; u2 i2: 9·2.2/(1.2·1.6 + 9)·0.405465 = 0.735184
    X = fit(ItemKNN, ItemKNNConfig, WEIGHTED, topk=1, feature_weighting="BM25").X.toarray()
    close(X, [[0.686172, 0, 0], [0, 0, 0], [0, 0, 0.735184]])


def test_urm_bias_shifts_stored_ratings_only():
    X = fit(ItemKNN, ItemKNNConfig, R, topk=1, urm_bias=1.0).X.toarray()
    np.testing.assert_array_equal(X, np.where(R != 0, R + 1, 0))


def test_topk_beyond_the_columns_keeps_them_all_with_a_warning(caplog):
    n_users = R.shape[0]
    every = fit(UserKNN, UserKNNConfig, R, topk=n_users)
    with caplog.at_level("WARNING", logger="recsys"):
        beyond = fit(UserKNN, UserKNNConfig, R, topk=n_users + 3)
    assert f"model.topk is {n_users + 3} but there are only {n_users} users: keeping all {n_users}" in caplog.text
    users = torch.arange(n_users)
    torch.testing.assert_close(beyond.score(users), every.score(users), rtol=0, atol=0)
    # the memory plan counts the neighbours kept, not the topk asked for
    huge = UserKNN(UserKNNConfig(topk=10**9), device=torch.device("cpu"), dtype=torch.float32)
    assert huge.memory_estimate(sp.csr_matrix(R), torch.float32, torch.device("cpu"))[0] == \
        every.memory_estimate(sp.csr_matrix(R), torch.float32, torch.device("cpu"))[0]


@pytest.mark.parametrize("similarity", ["cosine", "adjusted", "asymmetric", "pearson", "jaccard", "dice", "tversky"])
@pytest.mark.parametrize("topk", [1, 7, 60])
def test_blocked_engine_equals_the_dense_reference(similarity, topk):
    # several row blocks (width 9) on two threads: every merge path runs; ties aside, W is the same
    rng = np.random.default_rng(topk)
    mask = rng.random((150, 60)) < 0.12
    mask[:4] |= rng.random((4, 60)) < 0.7  # heavy rows: the dense GEMM part of each block
    X = np.where(mask, rng.integers(1, 11, mask.shape) / 2, 0).astype(np.float32)
    args = {"shrink": 3.0, "asymmetric_alpha": 0.3, "tversky_alpha": 0.6, "tversky_beta": 1.4}
    ours = column_similarity(sp.csr_matrix(X), Similarity(similarity=similarity, **args), topk, width=9,
                             threads=2)
    expected = ref.compute_similarity(X, topK=topk, similarity=similarity, **args)
    assert ours.dtype == np.float32 and ours.getnnz(axis=0).max() <= topk
    dense = ours.toarray()
    for j in range(60):  # the kept values of each column agree (members may differ among exact ties)
        np.testing.assert_allclose(np.sort(dense[:, j]), np.sort(expected[:, j]), rtol=1e-5, atol=1e-6)
    assert not np.diag(dense).any()


def test_same_data_same_W_whatever_the_threads():
    rng = np.random.default_rng(5)
    X = sp.csr_matrix((rng.random((200, 80)) < 0.1) * rng.integers(1, 3, (200, 80)).astype(np.float32))
    one = column_similarity(X, Similarity("cosine", 1.0), 10, width=7, threads=1)
    two = column_similarity(X, Similarity("cosine", 1.0), 10, width=7, threads=2)
    assert (one != two).nnz == 0 and np.array_equal(one.indices, two.indices)


def test_sparse_product_falls_back_to_the_public_api(monkeypatch):
    from scipy.sparse import _sparsetools

    from recsys_cli.models._linalg import sparse_product_into

    left = sp.random(7, 30, density=0.3, format="csr", random_state=1, dtype=np.float32)
    right = sp.random(30, 11, density=0.3, format="csr", random_state=2, dtype=np.float32)
    expected = (left @ right).toarray()
    fast = np.ones((7, 11), dtype=np.float32)
    sparse_product_into(left, right, fast)  # adds into out
    np.testing.assert_allclose(fast, expected + 1, rtol=1e-6)

    def gone(*args):
        raise AttributeError("csr_matmat")

    monkeypatch.setattr(_sparsetools, "csr_matmat", gone)
    slow = np.zeros((7, 11), dtype=np.float32)
    sparse_product_into(left, right, slow)
    np.testing.assert_allclose(slow, expected, rtol=1e-6)
