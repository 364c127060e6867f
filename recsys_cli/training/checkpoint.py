"""Checkpoints: a tensors-only ``.pt`` file (``torch.load(weights_only=True)`` reads it) and a JSON sidecar.

In a run directory::

    checkpoints/last.pt   {"model": state_dict, "optimizer": state_dict, "scaler": state_dict}
    checkpoints/last.json epoch, best metric and epoch, evaluations without improvement, history, configs
    checkpoints/best.pt   {"model": state_dict} of the best validated epoch
    checkpoints/best.json the same sidecar fields, for that epoch

Both files of a pair are written atomically, the ``.pt`` first, so an interrupted write leaves the
previous complete pair (the sidecar never describes weights that are not on disk).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recsys_cli import atomic
from recsys_cli.errors import DataError

CHECKPOINT_DIR = "checkpoints"


def checkpoint_paths(run_dir: str | Path, which: str = "last") -> tuple[Path, Path]:
    base = Path(run_dir) / CHECKPOINT_DIR
    return base / f"{which}.pt", base / f"{which}.json"


def save_checkpoint(run_dir: str | Path, which: str, tensors: dict[str, Any], sidecar: dict[str, Any]) -> Path:
    pt, js = checkpoint_paths(run_dir, which)
    pt.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(pt) as tmp:
        torch.save(_to_cpu(tensors), tmp)
    atomic.write_json(js, sidecar)
    return pt


def load_checkpoint(run_dir: str | Path, which: str = "last") -> tuple[dict[str, Any], dict[str, Any]]:
    pt, js = checkpoint_paths(run_dir, which)
    if not pt.is_file() or not js.is_file():
        raise DataError(
            f"no {which} checkpoint in {Path(run_dir)} ({pt.name} and {js.name} under {CHECKPOINT_DIR}/)",
            hint="resume only runs of trainable models that completed at least one epoch",
        )
    try:
        tensors = torch.load(pt, map_location="cpu", weights_only=True)
        sidecar = json.loads(js.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise DataError(f"checkpoint {pt} is unreadable ({type(exc).__name__}: {exc})",
                        hint="start a fresh run instead of resuming") from None
    return tensors, sidecar


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
