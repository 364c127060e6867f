"""Pipelines per task: what `train`, `run` and `evaluate` do for a model of that kind."""
