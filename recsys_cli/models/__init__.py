"""Models, registered by name: see :func:`recsys_cli.models.registry.available`."""

from recsys_cli.models.base import FitContext, Model, Recommender
from recsys_cli.models.registry import available, get_model_class, register

__all__ = ["FitContext", "Model", "Recommender", "available", "get_model_class", "register"]
