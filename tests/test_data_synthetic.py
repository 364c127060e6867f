"""The synthetic data set: seeded, heavy-tailed, with structure a latent-factor model can find."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recsys_cli.config.schema import DataConfig, SplitConfig, SyntheticConfig
from recsys_cli.data import load_dataset, print_cached_statistics
from recsys_cli.data.splits import make_split
from recsys_cli.data.synthetic import generate

CFG = SyntheticConfig(n_users=600, n_items=400, n_interactions=30000, n_factors=6)


def test_seeded_and_sized():
    a, b, c = generate(CFG, 1), generate(CFG, 1), generate(CFG, 2)
    assert (a.urm != b.urm).nnz == 0 and (a.urm_timestamp != b.urm_timestamp).nnz == 0
    assert (a.urm != c.urm).nnz > 0
    assert a.urm.shape == (600, 400) and a.urm.nnz == 30000
    assert set(np.unique(a.urm.data)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.all(np.diff(a.urm.indptr) >= 1)
    assert a.urm_timestamp.nnz == a.urm.nnz and a.urm_timestamp.data.min() >= 1e9


def test_heavy_tailed_popularity_and_activity():
    ds = generate(CFG, 0)
    items = np.sort(np.bincount(ds.urm.indices, minlength=400))[::-1]
    users = np.sort(np.diff(ds.urm.indptr))[::-1]
    assert items[:40].sum() > 0.25 * ds.urm.nnz  # top 10 % of items
    assert users[:60].sum() > 0.3 * ds.urm.nnz  # top 10 % of users
    flat = generate(CFG.model_copy(update={"popularity_exponent": 0.0, "activity_exponent": 0.0}), 0)
    assert np.sort(np.bincount(flat.urm.indices))[::-1][:40].sum() < items[:40].sum()


def _recall_at_10(scores: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix) -> float:
    scores = scores.copy()
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    hits = np.take_along_axis(test.toarray() > 0, top, axis=1).sum(axis=1)
    relevant = np.diff(test.indptr)
    mask = relevant > 0
    return float(np.mean(hits[mask] / np.minimum(relevant[mask], 10)))


def test_latent_model_beats_popularity():
    ds = generate(CFG, 0)
    split, _ = make_split(ds, SplitConfig(val_fraction=0), 0)
    train = (split.train > 0).astype(np.float64)
    popularity = np.tile(np.asarray(train.sum(axis=0)).ravel(), (train.shape[0], 1))
    u, s, vt = svds(train, k=CFG.n_factors)
    latent = (u * s) @ vt
    pop, svd = _recall_at_10(popularity, train, split.test), _recall_at_10(latent, train, split.test)
    assert svd > 1.3 * pop, (svd, pop)


def test_goes_through_the_cache_and_statistics(data_dir, capsys):
    cfg = DataConfig(dataset="synthetic", synthetic=CFG)
    first = load_dataset(cfg, seed=0)
    cached = load_dataset(cfg, seed=0)
    assert (first.urm != cached.urm).nnz == 0
    assert cached.manifest["cache_dir"].startswith(str(data_dir / "synthetic-"))
    assert load_dataset(cfg, seed=1).manifest["cache_dir"] != cached.manifest["cache_dir"]
    print_cached_statistics("synthetic", data_dir)
