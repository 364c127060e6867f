"""Reading a config: YAML file → environment overrides → ``--set`` overrides → validated :class:`Config`."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import UnionType
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from recsys_cli.config.schema import Config
from recsys_cli.errors import ConfigError

ENV_OVERRIDES = {"RECSYS_DATA_DIR": ("data", "data_dir"), "RECSYS_RUNS_DIR": ("experiment", "runs_dir")}

# A config is a few hundred lines: these bounds refuse hostile documents (an alias "billion laughs"
# expands exponentially: composing it is cheap, but printing or validating the value is not).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # nodes after expanding aliases
MAX_YAML_DEPTH = 50
MAX_SHOWN_VALUE = 80  # characters of a bad value quoted in an error message


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with bounded depth and alias expansion, and duplicate keys as errors."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}
        self._open: list[str | None] = []  # anchors of the nodes being composed

    def _size(self, node: yaml.Node) -> int:
        """Nodes in ``node`` with every alias expanded (memoised: shared subtrees are counted once each)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._size(v) for v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return size

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            mark = event.start_mark
            if event.anchor in self._open:
                raise _Refused(f"the alias *{event.anchor} is inside its own anchor (a recursive structure)", mark)
            node = super().compose_node(parent, index)
            self._nodes += self._size(node)
            if self._nodes > MAX_YAML_NODES:
                raise _Refused(f"aliases expand the document to more than {MAX_YAML_NODES:,} nodes", mark)
            return node
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _Refused(f"the document is nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
        self._open.append(getattr(self.peek_event(), "anchor", None))
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.pop()
        self._nodes += 1
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise _Refused(f"duplicate key '{key_node.value[:MAX_SHOWN_VALUE]}' (each key may appear once)",
                                   key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the bounds above (raises a yaml.YAMLError naming the problem)."""
    if len(text) > MAX_YAML_BYTES:
        raise _Refused(f"the document is larger than {MAX_YAML_BYTES // 2**10} KiB")
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def shorten(value: Any) -> str:
    """``repr(value)`` cut to a readable length for error messages."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_VALUE else text[:MAX_SHOWN_VALUE - 1] + "…"


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist", hint="check the path, or copy one from configs/")
    if path.is_dir():
        raise ConfigError(f"config path {path} is a directory", hint="pass a .yaml file")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise _Refused(f"the document is larger than {MAX_YAML_BYTES // 2**10} KiB")
        data = safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}", hint="fix the YAML syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file", hint="save the config as UTF-8 YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, not {type(data).__name__}",
            hint="start the file with keys such as 'experiment:' and 'model:'",
        )
    return data


BASE_KEY = "base"
MAX_BASE_DEPTH = 8


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_with_bases(path: str | os.PathLike[str], _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``base:`` files merged under it (paths relative to the including file).

    ``base`` names one file or a list; later bases win over earlier ones and the file's own keys win
    over all of them, so a data/protocol file is written once and each model config includes it.
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " → ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: 'base' includes form a cycle ({cycle})", hint="remove one of the includes")
    if len(_chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: 'base' includes nest deeper than {MAX_BASE_DEPTH} files",
                          hint="flatten the chain of base files")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"{path}: 'base' must name a YAML file or a list of them",
                          hint="e.g. base: data/movielens-10m.yaml")
    merged: dict[str, Any] = {}
    for name in bases:
        target = (path.parent / name).expanduser()
        if not target.is_file():
            raise ConfigError(f"{path}: base file {name} does not exist (looked for {target})",
                              hint="base paths are relative to the file that names them")
        merged = deep_merge(merged, read_with_bases(target, (*_chain, resolved)))
    return deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"training.epochs=5"`` → (["training", "epochs"], 5). Values are YAML scalars or lists."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r} is not of the form section.key=value", hint="e.g. --set training.epochs=5")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict[str, Any], path: list[str], value: Any, *, origin: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: cannot set {'.'.join(path)} because {part} is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    env = os.environ if env is None else env
    for var, path in ENV_OVERRIDES.items():
        if env.get(var):
            _set_path(data, list(path), env[var], origin=f"environment variable {var}")
    for text in overrides:
        path, value = parse_override(text)
        value = _typed_for_key(path, value, text.partition("=")[2].strip(), data)
        _set_path(data, path, value, origin=f"--set {text}")
    return data


def _typed_for_key(path: list[str], value: Any, raw: str, data: dict[str, Any]) -> Any:
    """A --set value as the key's type wants it: YAML guesses a type from the text alone.

    A list key takes ``5,10`` or a single ``20`` as a list; a text key keeps ``2024`` or ``yes`` as
    text; a number key does not take ``true`` as 1 (the raw text is left for the schema to refuse)."""
    kinds = _field_kinds(path, data)
    if list in kinds and value is not None and type(value) not in kinds:
        if isinstance(value, str) and "," in value:
            # --set evaluation.cutoffs=5,10 means the list [5, 10] (no brackets for shells to mangle)
            return [parse_override(f"x={part}")[1] for part in value.split(",") if part.strip()]
        return [value]
    textual = kinds & {str, Path}
    if textual and value is not None and not isinstance(value, str) and not (kinds & {int, float, bool, list}):
        return raw
    if isinstance(value, bool) and kinds and bool not in kinds:
        return raw
    return value


def _field_kinds(path: list[str], data: dict[str, Any]) -> set[type]:
    """The plain types a config key accepts (list for any list, None left out); empty when unknown."""
    import typing

    parent = _schema_at(tuple(path[:-1]), data)
    field = parent.model_fields.get(path[-1]) if parent is not None else None
    if field is None:
        return set()
    annotation = field.annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, UnionType) else (annotation,)
    kinds = set()
    for option in options:
        origin = typing.get_origin(option)
        if origin is list:
            kinds.add(list)
        elif origin is typing.Literal:
            kinds.update(type(choice) for choice in typing.get_args(option))
        elif isinstance(option, type) and option is not type(None):
            kinds.add(option)
    return kinds


def _schema_at(loc: tuple[Any, ...], data: dict[str, Any]) -> type[BaseModel] | None:
    """The pydantic model whose fields live at ``loc`` (for did-you-mean suggestions)."""
    from recsys_cli.models.registry import model_config_class

    cls: type[BaseModel] | None = Config
    node: Any = data
    for part in loc:
        if cls is None or not isinstance(part, str):
            return None
        if cls is Config and part == "model":
            try:
                cls = model_config_class(str((node or {}).get("model", {}).get("name")))
            except (ValueError, AttributeError):
                return None
            node = node.get("model") if isinstance(node, dict) else None
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        cls = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        node = node.get(part) if isinstance(node, dict) else None
    return cls


def _format_error(err: Mapping[str, Any], data: dict[str, Any], origin: str) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if len(key) > MAX_SHOWN_VALUE:
        key = key[:MAX_SHOWN_VALUE - 1] + "…"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        parent = _schema_at(loc[:-1], data)
        allowed = sorted(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        where = ".".join(str(p) for p in loc[:-1]) or "the top level"
        return f"{origin}: unknown key '{key}'{hint} (allowed in {where}: {', '.join(allowed)})"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")  # pydantic's prefix on our checks
    if not loc and kind == "value_error":  # a check across sections names its keys itself
        return f"{origin}: {msg}"
    if kind == "missing":
        return f"{origin}: missing required key '{key}'"
    if kind == "literal_error":
        return f"{origin}: bad value for '{key}': {msg.replace('Input should be', 'allowed values are')}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {shorten(got)})"
    return f"{origin}: bad value for '{key}': {msg}{shown}"


def validate(data: dict[str, Any], *, origin: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_format_error(err, data, origin) for err in exc.errors(include_url=False)]
        raise ConfigError("; ".join(lines)) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    *,
    data: dict[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate a config file (or an already parsed mapping) with overrides applied."""
    if path is not None:
        raw = read_with_bases(path)
        origin = str(path)
    else:
        raw = json.loads(json.dumps(data or {}))
        origin = "config"
    raw = apply_overrides(raw, overrides, env)
    return validate(raw, origin=origin)


def resolved_dict(config: Config) -> dict[str, Any]:
    """The config with every default filled in, as plain YAML-friendly data."""
    return config.model_dump(mode="json")


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(resolved_dict(config), sort_keys=False, default_flow_style=None)


def config_hash(config: Config) -> str:
    """Short hash of what determines the results (directories excluded, so runs can move)."""
    data = resolved_dict(config)
    data["experiment"].pop("runs_dir", None)
    data["data"].pop("data_dir", None)
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]
