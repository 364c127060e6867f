"""Training engine shared by the neural recommenders: see :mod:`recsys_cli.training.engine`."""

from recsys_cli.training.engine import TrainableRecommender, Trainer, autocast_for, epoch_seed, make_optimizer
from recsys_cli.training.sampling import NegativeSampler

__all__ = ["NegativeSampler", "TrainableRecommender", "Trainer", "autocast_for", "epoch_seed", "make_optimizer"]
