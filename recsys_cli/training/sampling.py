"""Uniform negative sampling that never returns one of the user's training items.

Candidates are drawn in bulk and tested for membership in the user's training row with one
``searchsorted`` over the sorted keys ``user * n_items + item`` of the training matrix; only the
rejected candidates are redrawn. After a few rounds the (rare) leftovers — users whose rows cover
most of the catalogue — are drawn exactly by rank among their free items, so the loop always ends.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli.errors import DataError


class NegativeSampler:
    """Draws, for each given user, an item uniformly among the items that user has not interacted with."""

    def __init__(self, train: sp.csr_matrix, *, rounds: int = 8):
        train = sp.csr_matrix(train)
        train.sort_indices()
        self.n_users, self.n_items = train.shape
        self.rounds = rounds
        indptr = train.indptr.astype(np.int64)
        indices = train.indices.astype(np.int64)
        self.degree = torch.from_numpy(np.diff(indptr))
        row = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(indptr))
        # Rows ascend and columns are sorted within a row, so the keys are globally sorted.
        self.keys = torch.from_numpy(row * self.n_items + indices)
        # For the exact fallback: the j-th item s_j of a row has s_j - j free items before it, and
        # user * (n_items + 1) + (s_j - j) is again globally sorted.
        within = np.arange(len(indices), dtype=np.int64) - np.repeat(indptr[:-1], np.diff(indptr))
        self.free_keys = torch.from_numpy(row * (self.n_items + 1) + indices - within)
        self.indptr = torch.from_numpy(indptr)
        self.full_users = torch.nonzero(self.degree >= self.n_items).flatten()

    def has_negatives(self) -> torch.Tensor:
        """Boolean mask over users: True where at least one item is left to sample."""
        return self.degree < self.n_items

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) pair is a training interaction."""
        if len(self.keys) == 0:
            return torch.zeros(users.shape, dtype=torch.bool)
        query = users * self.n_items + items
        pos = torch.searchsorted(self.keys, query).clamp_(max=len(self.keys) - 1)
        return self.keys[pos] == query

    def sample(self, users: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One negative item per entry of ``users`` (a CPU LongTensor of any shape)."""
        users = users.to(torch.int64)
        if len(self.full_users) and bool(torch.isin(users, self.full_users).any()):
            raise DataError(
                "a user has interacted with every item, so no negative item exists for them",
                hint="drop such users from training (NegativeSampler.has_negatives gives the mask)",
            )
        items = torch.randint(self.n_items, users.shape, generator=generator)
        flat_users, flat_items = users.reshape(-1), items.view(-1)
        todo = torch.nonzero(self.contains(flat_users, flat_items)).flatten()
        for _ in range(self.rounds):
            if len(todo) == 0:
                return items
            flat_items[todo] = torch.randint(self.n_items, (len(todo),), generator=generator)
            todo = todo[self.contains(flat_users[todo], flat_items[todo])]
        if len(todo):
            flat_items[todo] = self._exact(flat_users[todo], generator)
        return items

    def _exact(self, users: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Uniform among free items by rank: the r-th free item is r plus the row items before it."""
        free = (self.n_items - self.degree[users]).to(torch.float64)
        rank = (torch.rand(users.shape, generator=generator, dtype=torch.float64) * free).to(torch.int64)
        rank = torch.minimum(rank, (free - 1).to(torch.int64))
        base = users * (self.n_items + 1)
        before = torch.searchsorted(self.free_keys, base + rank, right=True) - self.indptr[users]
        return rank + before
