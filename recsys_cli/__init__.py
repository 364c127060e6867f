"""recsys: a command-line experiment runner for recommender-systems research.

The CLI (``recsys``) is a thin layer over this package; the same functions are importable::

    from recsys_cli import load_config, experiment
    result = experiment.run(load_config("configs/ease.yaml"))
"""

__version__ = "0.1.0"

from recsys_cli.config import Config, load_config  # noqa: E402

__all__ = ["Config", "load_config", "__version__"]
