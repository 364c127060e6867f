"""Models register by name. Adding a model = one new module in this package + one config.

Every module in :mod:`recsys_cli.models` is imported on first lookup, so a new file that decorates
its class with :func:`register` is found without touching any other file.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recsys_cli.config.schema import ModelConfig
    from recsys_cli.models.base import Model

_REGISTRY: dict[str, type[Model]] = {}
_DISCOVERED = False
_INFRASTRUCTURE = {"base", "registry"}


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: ``@register`` on a :class:`Model` subclass with ``name`` and ``Config`` set."""
    name = getattr(cls, "name", None)
    if not name or getattr(cls, "Config", None) is None:
        raise TypeError(f"{cls.__name__} needs class attributes 'name' and 'Config' to register")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"model name {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import recsys_cli.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _INFRASTRUCTURE and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Model]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(f"unknown model '{name}'; {hint}known models: {', '.join(sorted(_REGISTRY))}") from None


def model_config_class(name: str) -> type[ModelConfig]:
    return get_model_class(name).Config
