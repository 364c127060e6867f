"""RP3beta (the reference implementation's RP3betaRecommender): P3alpha's walk with each target j's
weight divided by its popularity deg_j^β before the row top-K; score(u) = r_u · W. See
docs/models.md and ../shared/spec/baselines.md §3."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models._random_walk import RandomWalkRecommender, WalkConfig
from recsys_cli.models.registry import register


class RP3betaConfig(WalkConfig):
    name: Literal["rp3beta"] = "rp3beta"
    beta: float = Field(0.6, ge=0, description="Popularity penalty: target j's weight × deg_j^−β.")
    normalize_similarity: bool = Field(True, description="L1-normalise each row of W before the column top-K.")


@register
class RP3beta(RandomWalkRecommender):
    name: ClassVar[str] = "rp3beta"
    Config: ClassVar[type[ModelConfig]] = RP3betaConfig
    display_name: ClassVar[str] = "RP3beta"

    def beta(self) -> float | None:
        return self.config.beta
