"""A seeded synthetic data set: heavy-tailed popularity and activity over a planted low-rank taste model.

Each user picks items with probability ∝ popularity_i · exp(β · <u, v_i>), without replacement (Gumbel
top-k), so a model that learns the latent factors beats a popularity ranking by a clear margin.
Ratings (1-5) follow the affinity; timestamps grow through each user's history.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import scipy.sparse as sp

from recsys_cli.data.dataset import Dataset

AFFINITY_WEIGHT = 2.5  # β: how strongly taste beats popularity
GENERATOR_VERSION = 1


def params_of(cfg, seed: int | None) -> dict:
    return {**cfg.model_dump(), "seed": int(seed or 0), "generator_version": GENERATOR_VERSION}


def cache_name(cfg, seed: int | None) -> str:
    digest = hashlib.sha256(json.dumps(params_of(cfg, seed), sort_keys=True).encode()).hexdigest()
    return f"synthetic-{digest[:12]}"


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = (np.arange(1, n + 1, dtype=np.float64)) ** (-exponent)
    return weights[rng.permutation(n)]


def _allocate(total: int, weights: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``total`` interactions over users by ``weights``, at most ``cap`` each, the excess spread again."""
    n = len(weights)
    counts = np.ones(n, dtype=np.int64) if total >= n else np.zeros(n, dtype=np.int64)
    for _ in range(50):  # a few rounds of water-filling; each round is vectorised
        remaining = total - int(counts.sum())
        free = counts < cap
        if remaining <= 0 or not free.any():
            break
        w = weights * free
        counts = np.minimum(counts + rng.multinomial(remaining, w / w.sum()), cap)
    return counts


def planned_bytes(cfg) -> int:
    """Peak memory of :func:`generate`: the factors, one block of dense keys (a few copies), and a
    dozen 8-byte arrays per interaction (entries, ratings, timestamps and their two CSR matrices)."""
    n = min(cfg.n_interactions, cfg.n_users * max(1, cfg.n_items // 2))
    block = min(cfg.n_users, max(1, 4_000_000 // cfg.n_items))
    return 6 * 8 * block * cfg.n_items + 8 * (cfg.n_users + cfg.n_items) * (cfg.n_factors + 4) + 12 * 8 * n


def check_memory(cfg) -> None:
    """ResourceError with the estimate and the free RAM when the data set cannot be generated here."""
    import torch

    from recsys_cli.devices import available_memory_bytes
    from recsys_cli.memory import require

    require("the synthetic data set", planned_bytes(cfg), available_memory_bytes(torch.device("cpu")),
            detail=f"{cfg.n_users:,} users × {cfg.n_items:,} items, {cfg.n_interactions:,} interactions",
            hint="lower data.synthetic.n_users, n_items or n_interactions")


def generate(cfg, seed: int | None = None) -> Dataset:
    check_memory(cfg)
    params = params_of(cfg, seed)
    entropy = int.from_bytes(hashlib.sha256(json.dumps(params, sort_keys=True).encode()).digest()[:16], "little")
    rng = np.random.default_rng(entropy)
    n_users, n_items, f = cfg.n_users, cfg.n_items, cfg.n_factors

    popularity = _zipf_weights(n_items, cfg.popularity_exponent, rng)
    activity = _zipf_weights(n_users, cfg.activity_exponent, rng)
    counts = _allocate(cfg.n_interactions, activity, max(1, n_items // 2), rng)

    user_factors = rng.standard_normal((n_users, f))
    item_factors = rng.standard_normal((n_items, f))
    log_pop = np.log(popularity / popularity.sum())

    rows_out, cols_out, aff_out = [], [], []
    block = max(1, 4_000_000 // n_items)
    for start in range(0, n_users, block):  # blocks of users, each fully vectorised
        stop = min(n_users, start + block)
        affinity = user_factors[start:stop] @ item_factors.T / np.sqrt(f)
        keys = log_pop + AFFINITY_WEIGHT * affinity + rng.gumbel(size=affinity.shape)
        c = counts[start:stop]
        width = int(c.max()) if len(c) else 0
        if width == 0:
            continue
        top = np.argpartition(-keys, width - 1, axis=1)[:, :width] if width < n_items else np.tile(np.arange(n_items), (len(c), 1))
        top_keys = np.take_along_axis(keys, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_keys, axis=1), axis=1)
        take = np.arange(width)[None, :] < c[:, None]
        r, k = np.nonzero(take)
        items = top[r, k]
        rows_out.append(r + start)
        cols_out.append(items)
        aff_out.append(affinity[r, items])
    rows = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    cols = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
    affinity = np.concatenate(aff_out) if aff_out else np.zeros(0)

    ratings = np.clip(np.rint(3.0 + 1.2 * affinity + rng.normal(0.0, 0.5, size=len(rows))), 1, 5)
    start_time = 1_000_000_000 + rng.integers(0, 3 * 365 * 86400, size=n_users)
    timestamps = start_time[rows] + rng.integers(0, 365 * 86400, size=len(rows))

    shape = (n_users, n_items)
    urm = sp.csr_matrix((ratings.astype(np.float64), (rows, cols)), shape=shape)
    urm.sum_duplicates()
    urm_ts = sp.csr_matrix((timestamps.astype(np.float64), (rows, cols)), shape=shape)
    urm_ts.sum_duplicates()

    # A genre-like ICM from the planted factors: each item's two strongest latent dimensions.
    strongest = np.argsort(-item_factors, axis=1)[:, :2]
    icm = sp.csr_matrix((np.ones(2 * n_items), (np.repeat(np.arange(n_items), 2), strongest.ravel())),
                        shape=(n_items, f))
    icm.sum_duplicates()
    features = np.array([f"factor-{k}" for k in range(f)])
    return Dataset(
        name="synthetic", urm=urm, urm_timestamp=urm_ts, icms={"ICM_genres": icm, "ICM_all": icm.copy()},
        user_ids=np.arange(n_users).astype(str), item_ids=np.arange(n_items).astype(str),
        feature_ids={"ICM_genres": features, "ICM_all": features.copy()},
        manifest={"course_name": "Synthetic", "warnings": [], "synthetic": params},
    )
