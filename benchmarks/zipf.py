"""Synthetic interaction matrices for the benchmarks: distinct (user, item) pairs with Zipf-like user
activity and item popularity, at any scale and in seconds (the `synthetic` data set of recsys_cli plants
a taste model for accuracy tests and costs O(users × items) to draw; throughput needs only the shape)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def zipf_keys(n_users: int, n_items: int, n: int, *, user_exponent: float, item_exponent: float,
              rng: np.random.Generator, shuffle_ids: bool = False) -> np.ndarray:
    """``n`` distinct pairs as sorted keys ``user · n_items + item``.

    User u is drawn with probability ∝ (u + 1)^−user_exponent and item i ∝ (i + 1)^−item_exponent
    (over a random order of the ids with ``shuffle_ids``). Repeats of a pair collapse, so pairs are
    drawn until ``n`` distinct ones exist; ``n`` of them are then kept uniformly at random.
    """
    if n > 0.9 * n_users * n_items:
        raise SystemExit(f"{n:,} interactions do not fit a {n_users:,} × {n_items:,} matrix")
    user_w = 1.0 / np.arange(1, n_users + 1) ** user_exponent
    item_w = 1.0 / np.arange(1, n_items + 1) ** item_exponent
    if shuffle_ids:
        user_w, item_w = rng.permutation(user_w), rng.permutation(item_w)
    user_cdf, item_cdf = np.cumsum(user_w), np.cumsum(item_w)
    draws = int(n * 1.3)
    while True:
        u = np.searchsorted(user_cdf, rng.random(draws) * user_cdf[-1])
        i = np.searchsorted(item_cdf, rng.random(draws) * item_cdf[-1])
        keys = np.unique(u.astype(np.int64) * n_items + i)  # sorted, distinct (user, item) pairs
        if keys.size >= n:
            break
        draws = int(draws * 1.5)  # popular pairs repeat: draw more until there are enough distinct ones
    return keys[np.sort(rng.permutation(keys.size)[:n])]


def keys_to_csr(keys: np.ndarray, shape: tuple[int, int], values: np.ndarray | None = None) -> sp.csr_matrix:
    """CSR matrix of sorted ``user · n_items + item`` keys (values 1 unless given)."""
    n_users, n_items = shape
    indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n_items, minlength=n_users))])
    data = np.ones(keys.size) if values is None else values
    return sp.csr_matrix((data, (keys % n_items).astype(np.int32), indptr), shape=shape)


def ml10m_like_split(n_users: int, n_items: int, n_interactions: int, seed: int = 0):
    """(train, test) CSR float32 with disjoint entries shaped like MovieLens-10M; test is a random 20 %.

    User activity is heavy-tailed (Pareto 1.6, at least 20 ratings a user, at most 60 % of the items),
    as spread as ML-10M's, so the item-item Gram is nearly dense; item popularity ∝ 1/(rank + 50) over a
    random order of the ids (the top item is rated by about half the users); half-star ratings.
    ``n_interactions`` 8M at 69,878 × 10,681 gives ~6.4M train ratings.
    """
    rng = np.random.default_rng(seed)
    activity = 1.0 + rng.pareto(1.6, n_users) * 3.0  # heavy tail, minimum 1
    activity = np.maximum(20, activity * n_interactions / activity.sum())
    activity = np.minimum(activity, 0.6 * n_items).astype(np.int64)
    rank_weight = 1.0 / (np.arange(1, n_items + 1) + 50.0)  # top item rated by about half the users
    cdf = np.cumsum(rank_weight[rng.permutation(n_items)])
    cdf /= cdf[-1]
    rows = np.repeat(np.arange(n_users, dtype=np.int64), (activity * 1.15).astype(np.int64))
    cols = np.minimum(np.searchsorted(cdf, rng.random(rows.size)), n_items - 1)
    keys = np.unique(rows * n_items + cols)  # repeats of a (user, item) pair collapse into one
    values = (rng.integers(1, 11, keys.size) / 2).astype(np.float32)
    test = rng.random(keys.size) < 0.2

    def csr(mask):
        k = keys[mask]
        return sp.csr_matrix((values[mask], (k // n_items, k % n_items)), shape=(n_users, n_items))

    return csr(~test), csr(test)
