"""The contract every registered recommender keeps, checked on each one (and on the sparse-W variants
of the dense item-item models): fit on a tiny matrix; scores of the right shape, dtype and device,
a new tensor per call with seen items removable in place; save → load gives identical scores; the
config survives a round trip; float16/bfloat16 either work or are refused with a clear message.

Model-specific known answers live in each model's own test file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml

from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
from recsys_cli.errors import RecsysError
from recsys_cli.models.base import FitContext, Recommender
from recsys_cli.models.registry import available, get_model_class

from .conftest import CONFIGS

CPU = torch.device("cpu")
N_USERS, N_ITEMS = 40, 25
# Hyperparameters that the tiny matrix needs (fewer factors/neighbours than users and items) or that
# keep a neural fit to a fraction of a second.
TINY = {
    "gfcf": {"num_factors": 4},
    "itemknn": {"topk": 10, "shrink": 2.0},
    "userknn": {"topk": 10, "shrink": 2.0},
    "p3alpha": {"topk": 10},
    "rp3beta": {"topk": 10},
    "dae": {"hidden": [8, 4]},
    "lightgcn": {"dim": 8},
    "two-tower": {"layers": [8, 4]},
    "puresvd": {"num_factors": 4},
    "puresvd-item": {"num_factors": 4},
    "slim": {"alpha": 0.05},
    "ials": {"num_factors": 4},
}
VARIANTS = {"ease-topk": ("ease", {"topk": 5}), "gfcf-topk": ("gfcf", {"num_factors": 4, "topk": 5}),
            "puresvd-item-topk": ("puresvd-item", {"num_factors": 4, "topk": 5}),
            "ials-cholesky": ("ials", {"num_factors": 4, "solver": "cholesky"})}
RECOMMENDERS = [n for n in available() if get_model_class(n).task == "recommendation"]


def tiny_train() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = (rng.random((N_USERS, N_ITEMS)) < 0.25) * rng.integers(1, 6, size=(N_USERS, N_ITEMS))
    dense[np.arange(N_USERS), np.arange(N_USERS) % N_ITEMS] = 3  # nobody and no item is empty
    return sp.csr_matrix(dense.astype(np.float64))


def shipped_model_config(name: str) -> dict:
    """The model section of the first config in configs/ that uses this model ({} if none does)."""
    for path in sorted(CONFIGS.glob("*.yaml")):
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        if model.get("name") == name:
            return model
    return {"name": name}


def case(key: str) -> tuple[type[Recommender], object]:
    name, extra = VARIANTS.get(key, (key, {}))
    cls = get_model_class(name)
    config = cls.Config.model_validate({**shipped_model_config(name), **TINY.get(name, {}), **extra})
    return cls, config


def fit(cls, config, train, dtype=torch.float32) -> Recommender:
    model = cls(config, device=CPU, dtype=dtype, seed=3)
    training = TrainingConfig(epochs=1, batch_size=64, early_stopping=EarlyStoppingConfig(enabled=False))
    model.fit(train, FitContext(device=CPU, dtype=dtype, seed=3, training=training))
    return model


def test_every_recommender_is_covered():
    assert {"ease", "gfcf", "toppop", "itemknn", "userknn", "p3alpha", "rp3beta"} <= set(RECOMMENDERS)
    assert {"puresvd", "puresvd-item", "slim", "ials"} <= set(RECOMMENDERS)
    assert "mlp-iris" not in RECOMMENDERS  # a classifier: no scores to rank


@pytest.fixture(scope="module", params=RECOMMENDERS + list(VARIANTS))
def fitted(request):
    cls, config = case(request.param)
    train = tiny_train()
    return request.param, cls, config, train, fit(cls, config, train)


def test_scores_have_the_right_shape_dtype_and_device(fitted):
    model = fitted[-1]
    users = torch.tensor([0, 7, 39, 7])
    scores = model.score(users)
    assert scores.shape == (4, N_ITEMS)
    assert scores.dtype == torch.float32 and scores.device == CPU == model.device
    assert not torch.isnan(scores).any()
    assert torch.equal(scores[1], scores[3])  # a user scores the same wherever it sits in the block


def test_seen_items_can_be_removed_in_place(fitted):
    _, _, _, train, model = fitted
    users = torch.arange(N_USERS)
    scores = model.score(users)
    rows, cols = train.nonzero()
    scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf  # what the evaluator does
    top = torch.topk(scores, 3, dim=1).indices.numpy()
    assert not np.take_along_axis(train.toarray(), top, axis=1).any()
    again = model.score(users)  # a new tensor each call: the masking above did not reach it
    assert torch.isfinite(again[torch.from_numpy(rows), torch.from_numpy(cols)]).all()


def test_save_then_load_gives_identical_scores(fitted, tmp_path):
    _, cls, config, train, model = fitted
    model.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["name"] == cls.name and (meta["n_users"], meta["n_items"]) == train.shape
    loaded = cls.load(tmp_path / "model", train=train, device=CPU)
    assert loaded.config == config
    users = torch.arange(N_USERS)
    assert torch.equal(loaded.score(users), model.score(users))


def test_config_round_trips_through_json(fitted):
    _, cls, config, _, _ = fitted
    dumped = json.loads(json.dumps(config.model_dump(mode="json")))
    assert cls.Config.model_validate(dumped) == config
    assert dumped["name"] == cls.name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("key", RECOMMENDERS)
def test_half_precision_works_or_is_refused_clearly(key, dtype):
    cls, config = case(key)
    train = tiny_train()
    try:
        model = fit(cls, config, train, dtype=dtype)
    except RecsysError as err:  # refused: the message names the dtype and the way out
        text = str(err) + (err.hint or "")
        assert str(dtype).replace("torch.", "") in text and "\n" not in text
        return
    scores = model.score(torch.arange(N_USERS))
    assert scores.shape == (N_USERS, N_ITEMS) and not torch.isnan(scores.float()).any()
    assert scores.dtype in (torch.float32, dtype)
