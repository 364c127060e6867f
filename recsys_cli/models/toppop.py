"""TopPop: every user gets the items ranked by training popularity, the floor other models must beat.

Popularity is the number of training interactions of an item (not the sum of its ratings). The
score of item i is ``n_items − rank_i``, where the rank sorts by popularity, most popular first, and
breaks ties by the lower item index. The scores are distinct and exact in float32, so any ranking of
them, whatever its own tie rule, gives that order.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import RunFailed
from recsys_cli.models.base import FitContext, Recommender
from recsys_cli.models.registry import register


class TopPopConfig(ModelConfig):
    name: Literal["toppop"] = "toppop"


def popularity(train: sp.csr_matrix) -> np.ndarray:
    """Training interactions per item (stored zeros do not count)."""
    train = sp.csr_matrix(train)
    return np.bincount(train.indices[train.data != 0], minlength=train.shape[1]).astype(np.int64)


def rank_scores(counts: np.ndarray) -> np.ndarray:
    """n_items − rank: most popular first, ties to the lower index (a stable sort keeps index order)."""
    order = np.argsort(-counts, kind="stable")
    scores = np.empty(counts.size, dtype=np.float64)
    scores[order] = np.arange(counts.size, 0, -1, dtype=np.float64)
    return scores


@register
class TopPop(Recommender):
    name: ClassVar[str] = "toppop"
    Config: ClassVar[type[ModelConfig]] = TopPopConfig

    def __init__(self, config, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(config, device=device, dtype=dtype, seed=seed)
        self.counts: torch.Tensor | None = None
        self._scores: torch.Tensor | None = None

    def _set(self, counts: np.ndarray) -> None:
        # float64 when asked for, float32 otherwise: ranks up to 2²⁴ items are exact there, not in halves
        dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self.counts = torch.from_numpy(counts.astype(np.int64))
        self._scores = torch.from_numpy(rank_scores(counts)).to(self.device, dtype)
        self.n_items = counts.size

    def fit(self, train: sp.csr_matrix, ctx: FitContext) -> None:
        self.n_users = train.shape[0]
        self._set(popularity(train))

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._scores is None:
            raise RunFailed("toppop is not fitted", hint="fit or load the model before scoring")
        return self._scores.unsqueeze(0).repeat(len(users), 1)

    def state(self) -> dict[str, torch.Tensor]:
        if self.counts is None:
            raise RunFailed("toppop is not fitted", hint="fit the model before saving it")
        return {"popularity": self.counts}

    def load_state(self, state: dict[str, torch.Tensor], train: sp.csr_matrix) -> None:
        self.n_users = train.shape[0]
        self._set(state["popularity"].numpy())
