"""UserKNN-CF (the reference implementation's UserKNNCFRecommender): W = top-K column similarities of
Rᵀ (users × users, column v holds v's K nearest users); score(u) = W[u, :] · R, so u's effective
neighbourhood is the reverse-kNN set {v : u ∈ topK(v)}, not u's own top-K, as in the reference
implementation. See docs/models.md and ../shared/spec/baselines.md §2."""

from __future__ import annotations

from typing import ClassVar, Literal

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models._knn import KNNConfig, KNNRecommender
from recsys_cli.models.registry import register


class UserKNNConfig(KNNConfig):
    name: Literal["userknn"] = "userknn"


@register
class UserKNN(KNNRecommender):
    name: ClassVar[str] = "userknn"
    Config: ClassVar[type[ModelConfig]] = UserKNNConfig
    display_name: ClassVar[str] = "UserKNN"
    neighbours: ClassVar[str] = "users"
