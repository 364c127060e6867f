"""The reference implementation's neighbourhood and graph recommenders, written straight from
../shared/spec/baselines.md §0-3 in dense NumPy, as the reference the fast models are checked against.

Everything is float32 as in the reference implementation's Python similarity path; top-K is NumPy's
argpartition (its top-K primitive, baselines.md §0), so ties at the K-th value are broken exactly as
the reference implementation breaks them with this machine's NumPy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def urm(train: sp.spmatrix) -> np.ndarray:
    """The recommender's own copy: float32, zeros eliminated (dense here)."""
    return sp.csr_matrix(train, dtype=np.float32).toarray()


def keep_top_k(v: np.ndarray, k: int) -> np.ndarray:
    """The top-K primitive (baselines.md §0) on one vector: exactly k by value (argpartition), then zeros dropped."""
    out = np.zeros_like(v)
    if k <= 0:
        return out
    if k >= v.size:
        idx = np.arange(v.size)
    else:
        idx = np.argpartition(-v, k - 1)[:k]
    out[idx] = v[idx]
    return out


def tf_idf(R: np.ndarray) -> np.ndarray:
    """TF-IDF of Rᵀ (items are documents, users are terms), transposed back."""
    N = R.shape[1]
    idf = np.log(N / (1 + (R != 0).sum(axis=1)))
    return (np.sqrt(R) * idf[:, None] * (R != 0)).astype(np.float32)


def bm25(R: np.ndarray, K1: float = 1.2, B: float = 0.75) -> np.ndarray:
    N = R.shape[1]
    idf = np.log(N / (1 + (R != 0).sum(axis=1)))
    L = R.sum(axis=0, dtype=np.float32)  # per item (document)
    length_norm = (1.0 - B) + B * L / L.mean()
    out = R * (K1 + 1.0) / (K1 * length_norm[None, :] + R) * idf[:, None]
    return np.where(R != 0, out, 0).astype(np.float32)


def compute_similarity(X: np.ndarray, *, topK=100, shrink=0.0, normalize=True, similarity="cosine",
               asymmetric_alpha=0.5, tversky_alpha=1.0, tversky_beta=1.0) -> np.ndarray:
    """Compute_Similarity between the columns of X (dense float32), intended semantics; W[i, j], j = target."""
    X = X.astype(np.float32).copy()
    stored = X != 0
    if similarity == "adjusted":
        means = X.sum(1) / np.maximum(stored.sum(1), 1)
        X = np.where(stored, X - means[:, None], 0).astype(np.float32)
    elif similarity == "pearson":
        means = X.sum(0) / np.maximum(stored.sum(0), 1)
        X = np.where(stored, X - means[None, :], 0).astype(np.float32)
    elif similarity in ("jaccard", "tanimoto", "dice", "tversky"):
        X = stored.astype(np.float32)
        normalize = False
    G = (X.T @ X).astype(np.float32)
    np.fill_diagonal(G, 0)
    sq = (X**2).sum(0).astype(np.float32)
    n = np.sqrt(sq)
    h, eps = np.float32(shrink), np.float32(1e-6)
    # rows i = candidates, columns j = targets
    if similarity in ("cosine", "adjusted", "pearson"):
        W = G / (np.outer(n, n) + h + eps) if normalize else (G / h if h != 0 else G)
    elif similarity == "asymmetric":
        a = np.float32(asymmetric_alpha)
        if normalize:
            W = G / (np.power(n + eps, 2 * (1 - a))[:, None] * np.power(n + eps, 2 * a)[None, :] + h + eps)
        else:
            W = G / h if h != 0 else G
    elif similarity in ("jaccard", "tanimoto"):
        W = G / (sq[:, None] + sq[None, :] - G + h + eps)
    elif similarity == "dice":
        W = G / (sq[:, None] + sq[None, :] + h + eps)
    elif similarity == "tversky":
        ta, tb = np.float32(tversky_alpha), np.float32(tversky_beta)
        W = G / (G + ta * (sq[None, :] - G) + tb * (sq[:, None] - G) + h + eps)
    W = W.astype(np.float32)
    return np.stack([keep_top_k(W[:, j], topK) for j in range(W.shape[1])], axis=1)


def knn_fit(train: sp.spmatrix, *, users: bool, topK=50, shrink=100.0, similarity="cosine", normalize=True,
            feature_weighting="none", URM_bias=0.0, **similarity_args) -> tuple[np.ndarray, np.ndarray]:
    """(R, W) of ItemKNNCF (users=False) or UserKNNCF (users=True); scores = R·W or W·R."""
    R = urm(train)
    if URM_bias:
        R = np.where(R != 0, R + np.float32(URM_bias), 0).astype(np.float32)
    if feature_weighting == "TF-IDF":
        R = tf_idf(R)
    elif feature_weighting == "BM25":
        R = bm25(R)
    args = dict(topK=topK, shrink=shrink, normalize=normalize, similarity=similarity, **similarity_args)
    W = compute_similarity(R.T, **args) if users else compute_similarity(R, **args)
    return R, W


def p3_fit(train: sp.spmatrix, *, beta: float | None, topK=100, alpha=1.0, min_rating=0, implicit=False,
           normalize_similarity=False) -> tuple[np.ndarray, np.ndarray]:
    """(R, W) of P3alpha (beta=None) or RP3beta."""
    R = urm(train)
    if min_rating > 0:
        R = np.where(R >= min_rating, R, 0).astype(np.float32)
        if implicit:
            R = (R != 0).astype(np.float32)
    row_sums = np.abs(R).sum(1, dtype=np.float64)
    P_ui = (R / np.where(row_sums == 0, 1, row_sums)[:, None]).astype(np.float32)
    Bt = (R.T != 0).astype(np.float32)
    deg = Bt.sum(1)
    P_iu = (Bt / np.where(deg == 0, 1, deg)[:, None]).astype(np.float32)
    if alpha != 1:
        P_ui, P_iu = np.power(P_ui, alpha), np.power(P_iu, alpha)
    S = (P_iu @ P_ui).astype(np.float32)
    if beta is not None:
        pen = np.where(deg > 0, np.power(np.maximum(deg, 1), -beta, dtype=np.float32), 0).astype(np.float64)
        S = S * pen[None, :]
    np.fill_diagonal(S, 0)
    W = np.stack([keep_top_k(S[i], topK) for i in range(S.shape[0])]).astype(np.float32)
    if normalize_similarity:
        sums = np.abs(W).sum(1, keepdims=True)
        W = (W / np.where(sums == 0, 1, sums)).astype(np.float32)
    if topK:
        W = similarity_matrix_top_k(W, topK)
    return R, W


def similarity_matrix_top_k(W: np.ndarray, k: int) -> np.ndarray:
    """The reference implementation's similarityMatrixTopK: per column, argpartition over its nonzeros in row order."""
    out = np.zeros_like(W)
    for j in range(W.shape[1]):
        rows = np.flatnonzero(W[:, j])
        if rows.size > k:
            rows = rows[np.argpartition(-W[rows, j], k - 1)[:k]]
        out[rows, j] = W[rows, j]
    return out


def recommend(scores: np.ndarray, seen: np.ndarray, cutoff: int) -> np.ndarray:
    """The reference implementation's recommend(): seen → −inf, argpartition then an (unstable) argsort; ±inf dropped."""
    scores = scores.astype(np.float32).copy()
    scores[seen != 0] = -np.inf
    cutoff = min(cutoff, scores.shape[1] - 1)
    part = np.argpartition(-scores, cutoff - 1, axis=1)[:, :cutoff]
    vals = np.take_along_axis(-scores, part, axis=1)
    return np.take_along_axis(part, np.argsort(vals, axis=1), axis=1)
