"""TopPop ranks by interaction count with ties to the lower index; closed-form models beat it clearly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.config import load_config
from recsys_cli.data import get_split, load_dataset
from recsys_cli.evaluation import evaluate
from recsys_cli.models.base import FitContext
from recsys_cli.models.ease import EASE, EASEConfig
from recsys_cli.models.gfcf import GFCF, GFCFConfig
from recsys_cli.models.toppop import TopPop, TopPopConfig

from .conftest import CONFIGS

CPU = torch.device("cpu")


def fit_toppop(train: sp.csr_matrix, dtype=torch.float32) -> TopPop:
    model = TopPop(TopPopConfig(), device=CPU, dtype=dtype)
    model.fit(train, FitContext(device=CPU, dtype=dtype, seed=0))
    return model


def test_ranks_by_count_then_lower_index():
    # counts per item: [2, 3, 1, 3, 0, 2]; item 2 has the highest rating sum but one interaction
    train = sp.csr_matrix(np.array([
        [1, 1, 0, 1, 0, 0],
        [0, 1, 5, 1, 0, 1],
        [1, 1, 0, 1, 0, 1],
    ], dtype=np.float64))
    model = fit_toppop(train)
    np.testing.assert_array_equal(model.counts.numpy(), [2, 3, 1, 3, 0, 2])
    scores = model.score(torch.tensor([0, 2]))
    assert scores.shape == (2, 6) and torch.equal(scores[0], scores[1])
    order = torch.argsort(scores[0], descending=True).tolist()
    assert order == [1, 3, 0, 5, 2, 4]
    assert len(set(scores[0].tolist())) == 6  # distinct: no ranking's own tie rule can reorder them


def test_ties_by_index_hold_at_scale_in_float32():
    counts = np.random.default_rng(0).integers(0, 5, 20_000)  # many ties, more items than float16 can count
    rows = np.repeat(np.arange(counts.size), counts)
    train = sp.csr_matrix((np.ones(rows.size), (np.arange(rows.size) % 7, rows)), shape=(7, counts.size))
    model = fit_toppop(train)
    order = torch.argsort(model.score(torch.tensor([0]))[0], descending=True).numpy()
    np.testing.assert_array_equal(order, np.lexsort((np.arange(counts.size), -counts)))


@pytest.mark.slow
def test_closed_form_models_beat_toppop_on_synthetic_holdout():
    config = load_config(CONFIGS / "ease.yaml", ["data.dataset=synthetic", "device.accelerator=cpu"])
    dataset = load_dataset(config.data, seed=config.experiment.seed)
    split = get_split(dataset, config.data, seed=config.experiment.seed)
    ctx = FitContext(device=CPU, dtype=torch.float32, seed=config.experiment.seed)

    def ndcg(model) -> float:
        model.fit(split.train, ctx)
        return evaluate(model, split.train, split.test, [10], progress=False).value("NDCG", 10)

    floor = ndcg(TopPop(TopPopConfig(), device=CPU, dtype=torch.float32))
    ease = ndcg(EASE(EASEConfig(), device=CPU, dtype=torch.float32))
    gfcf = ndcg(GFCF(GFCFConfig(), device=CPU, dtype=torch.float32, seed=config.experiment.seed))
    # The synthetic data plant an 8-factor taste model on top of Zipf popularity; a model that learns
    # item-item structure recovers it and a popularity ranking cannot. Measured: TopPop 0.11, EASE 0.28,
    # GF-CF 0.29 (about 2.5×). Requiring 1.5× leaves room for generator and seed changes while still
    # failing any model that has collapsed to popularity (which would sit near 1.0×).
    assert floor > 0.05
    assert ease >= 1.5 * floor, (ease, floor)
    assert gfcf >= 1.5 * floor, (gfcf, floor)
