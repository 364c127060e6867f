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
