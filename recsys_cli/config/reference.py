"""The config reference (every key, type, default, meaning) generated from the schema.

``python -m recsys_cli.config.reference`` prints the Markdown that the README embeds between the
``<!-- config-reference:start -->`` and ``<!-- config-reference:end -->`` markers; a test keeps them equal.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from recsys_cli.config.schema import Config

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def type_name(annotation: Any, *, markdown: bool = False) -> str:
    """A field's type as a reader writes it: ``float``, ``int or null``, ``'adam' | 'sgd'``, ``list of int``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        if markdown:
            return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(type_name(a, markdown=markdown) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list of {type_name(inner, markdown=markdown)}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for key, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{prefix}{key}.", annotation))
            continue
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{key}` | {type_name(annotation, markdown=True)} | {_default(field)} | {desc} |")
    for sub_prefix, sub in nested:
        rows.extend(_rows(sub, sub_prefix))
    return rows


def reference() -> str:
    from recsys_cli.models.registry import available, get_model_class

    head = "| key | type | default | meaning |\n|---|---|---|---|"
    parts = []
    for section, field in Config.model_fields.items():
        if section == "model":
            continue
        parts.append(f"#### `{section}`\n\n{head}\n" + "\n".join(_rows(field.annotation, f"{section}.")))
    parts.append(
        "#### `model`\n\n`model.name` picks the model; the other keys depend on it (unknown keys are errors)."
    )
    for name in available():
        schema = get_model_class(name).Config
        rows = [r for r in _rows(schema, "model.") if not r.startswith("| `model.name`")]
        body = f"{head}\n" + "\n".join(rows) if rows else "No hyperparameters."
        parts.append(f"##### `model.name: {name}`\n\n{body}")
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
