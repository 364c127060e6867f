"""The vectorised negative sampler: never a training positive, uniform over the rest, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import chisquare

from recsys_cli.errors import DataError
from recsys_cli.training.sampling import NegativeSampler


def _matrix(seed: int = 0, n_users: int = 50, n_items: int = 40) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < rng.uniform(0.0, 0.97, size=(n_users, 1))
    dense[:, 0] = False  # every user keeps at least one free item
    return sp.csr_matrix(dense.astype(np.float64))


@pytest.mark.parametrize("rounds", [8, 0])
def test_never_returns_a_training_positive(rounds):
    train = _matrix()
    sampler = NegativeSampler(train, rounds=rounds)
    users = torch.arange(train.shape[0]).repeat(200)
    items = sampler.sample(users, torch.Generator().manual_seed(1))
    dense = train.toarray() > 0
    assert items.min() >= 0 and items.max() < train.shape[1]
    assert not dense[users.numpy(), items.numpy()].any()


@pytest.mark.parametrize("rounds", [8, 0])
def test_uniform_over_the_items_the_user_has_not_seen(rounds):
    # Row covering most of the catalogue: rejection alone needs many rounds, the exact fallback kicks in.
    n_items = 30
    seen = [0, 1, 2, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25, 28]
    train = sp.csr_matrix((np.ones(len(seen)), ([0] * len(seen), seen)), shape=(2, n_items))
    sampler = NegativeSampler(train, rounds=rounds)
    draws = sampler.sample(torch.zeros(40_000, dtype=torch.int64), torch.Generator().manual_seed(7)).numpy()
    free = sorted(set(range(n_items)) - set(seen))
    counts = np.bincount(draws, minlength=n_items)
    assert counts[seen].sum() == 0
    assert chisquare(counts[free]).pvalue > 0.001
    # The user without interactions draws from the whole catalogue.
    other = sampler.sample(torch.ones(30_000, dtype=torch.int64), torch.Generator().manual_seed(8)).numpy()
    assert chisquare(np.bincount(other, minlength=n_items)).pvalue > 0.001


def test_same_generator_seed_gives_the_same_draws_and_shape_is_kept():
    sampler = NegativeSampler(_matrix(3))
    users = torch.arange(50).repeat(4).view(4, 50)
    a = sampler.sample(users, torch.Generator().manual_seed(5))
    b = sampler.sample(users, torch.Generator().manual_seed(5))
    assert a.shape == (4, 50) and torch.equal(a, b)


def test_contains_is_a_csr_membership_test():
    train = _matrix(4)
    sampler = NegativeSampler(train)
    users, items = np.nonzero(np.ones(train.shape))
    got = sampler.contains(torch.from_numpy(users), torch.from_numpy(items)).numpy()
    assert np.array_equal(got, train.toarray()[users, items] > 0)


def test_a_user_with_every_item_is_refused_with_a_fix():
    train = sp.csr_matrix(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    sampler = NegativeSampler(train)
    assert sampler.has_negatives().tolist() == [False, True]
    assert set(sampler.sample(torch.ones(100, dtype=torch.int64)).tolist()) == {1, 2}
    with pytest.raises(DataError, match="every item"):
        sampler.sample(torch.tensor([0, 1]))
