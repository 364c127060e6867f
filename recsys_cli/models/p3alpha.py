"""P3alpha (the reference implementation's P3alphaRecommender): a three-step random walk
item → user → item, W_ij = Σ_u P(i→u)^α · P(u→j)^α, row top-K, optional row L1 normalisation,
column top-K; score(u) = r_u · W. See docs/models.md, recsys_cli/models/_random_walk.py and
../shared/spec/baselines.md §3."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models._random_walk import RandomWalkRecommender, WalkConfig
from recsys_cli.models.registry import register


class P3alphaConfig(WalkConfig):
    name: Literal["p3alpha"] = "p3alpha"
    normalize_similarity: bool = Field(False, description="L1-normalise each row of W before the column top-K.")


@register
class P3alpha(RandomWalkRecommender):
    name: ClassVar[str] = "p3alpha"
    Config: ClassVar[type[ModelConfig]] = P3alphaConfig
    display_name: ClassVar[str] = "P3alpha"
