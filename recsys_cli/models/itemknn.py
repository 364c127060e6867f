"""ItemKNN-CF (the reference implementation's ItemKNNCFRecommender): W = top-K column similarities of
the (weighted) training matrix R, W[i, j] = how much an interaction with i votes for target j;
score(u) = r_u · W. See docs/models.md, recsys_cli/models/_similarity.py and
../shared/spec/baselines.md §2."""

from __future__ import annotations

from typing import ClassVar, Literal

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models._knn import KNNConfig, KNNRecommender
from recsys_cli.models.registry import register


class ItemKNNConfig(KNNConfig):
    name: Literal["itemknn"] = "itemknn"


@register
class ItemKNN(KNNRecommender):
    name: ClassVar[str] = "itemknn"
    Config: ClassVar[type[ModelConfig]] = ItemKNNConfig
    display_name: ClassVar[str] = "ItemKNN"
    neighbours: ClassVar[str] = "items"
