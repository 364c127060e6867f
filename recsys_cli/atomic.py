"""Write-then-rename helpers, so no reader ever sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# The process umask, read once at import: os.umask can only be read by setting it, which races with threads.
UMASK = os.umask(0o022)
os.umask(UMASK)


def _temp_beside(target: Path, suffix: str | None = None) -> Path:
    """An empty temporary file in ``target``'s directory, so that renaming it onto ``target`` is atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates the file 0600; give the result the mode an ordinary open() would have
        os.chmod(tmp_path, 0o666 & ~UMASK)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic. On any
    exception (KeyboardInterrupt included) the temporary file is removed and ``target`` is untouched.
    """
    tmp_path = _temp_beside(Path(target), suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        _write_synced(tmp, data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or ±inf float as None, NumPy scalars as Python ones and a pandas DataFrame
    as its list of row records (missing cells None): standard JSON has no NaN or Infinity, and strict
    parsers (jq, JavaScript, ``parse_constant``) reject them."""
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a DataFrame, without importing pandas here
        obj = obj.astype(object).where(obj.notna(), None).to_dict(orient="records")
    if isinstance(obj, Mapping):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # NumPy and torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    """The text :func:`write_json` writes: indented, strict JSON (non-finite numbers become null)."""
    return json.dumps(json_safe(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n"


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_text(target, json_text(obj))


def write_together(files: Mapping[str | os.PathLike[str], str | bytes]) -> None:
    """Write a set of files that belong together (a run's metrics.csv/.json/.md).

    Render every file's contents before calling this. All are written to temporary files beside their
    targets first and renamed only once every one is on disk, so a failure while rendering or writing
    (a full disk, Ctrl-C) leaves the previous set whole. The renames themselves are not one atomic
    step, but they need no space and do not fail in practice.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files.items():
            target = Path(target)
            tmp = _temp_beside(target)
            staged.append((tmp, target))
            _write_synced(tmp, data.encode("utf-8") if isinstance(data, str) else data)
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
