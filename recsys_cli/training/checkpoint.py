"""Checkpoints: one tensors-only ``.pt`` file per checkpoint (``torch.load(weights_only=True)`` reads it).

In a run directory::

    checkpoints/last.pt   {"model": state_dict, "optimizer": state_dict, "scaler": state_dict, "sidecar": JSON text}
    checkpoints/last.json a readable copy of the sidecar: epoch, best metric and epoch, evaluations
                          without improvement, stop reason, global step, model state beyond the weights,
                          history, configs
    checkpoints/best.pt   {"model": state_dict, "sidecar": JSON text} of the best validated epoch
    checkpoints/best.json the same sidecar fields, for that epoch

A finished run whose model is saved drops ``best.*``: ``model/model.pt`` holds the same weights (the
best epoch's, restored at the end of the fit), and a resume that extends the run reads them there.

The ``.pt`` file is the checkpoint: it holds its own sidecar and is written atomically (temporary
file, then rename), so the weights and the epoch they belong to change together; a crash or
SIGKILL between the ``.pt`` and the ``.json`` leaves a stale copy that is never read. ``.pt`` files
without an embedded sidecar (older runs) are read with their ``.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recsys_cli import atomic
from recsys_cli.errors import DataError

CHECKPOINT_DIR = "checkpoints"
SIDECAR_KEY = "sidecar"


def checkpoint_paths(run_dir: str | Path, which: str = "last") -> tuple[Path, Path]:
    base = Path(run_dir) / CHECKPOINT_DIR
    return base / f"{which}.pt", base / f"{which}.json"


def save_checkpoint(run_dir: str | Path, which: str, tensors: dict[str, Any], sidecar: dict[str, Any]) -> Path:
    pt, js = checkpoint_paths(run_dir, which)
    pt.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(pt) as tmp:
        torch.save({**_to_cpu(tensors), SIDECAR_KEY: json.dumps(sidecar)}, tmp)
    atomic.write_json(js, sidecar)
    return pt


def load_checkpoint(run_dir: str | Path, which: str = "last") -> tuple[dict[str, Any], dict[str, Any]]:
    pt, js = checkpoint_paths(run_dir, which)
    if not pt.is_file():
        raise DataError(
            f"no {which} checkpoint in {Path(run_dir)} ({pt.name} under {CHECKPOINT_DIR}/)",
            hint="resume only runs of trainable models that completed at least one epoch",
        )
    try:
        tensors = torch.load(pt, map_location="cpu", weights_only=True)
        embedded = tensors.pop(SIDECAR_KEY, None)
        sidecar = json.loads(embedded if embedded is not None else js.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise DataError(f"checkpoint {pt} is unreadable ({type(exc).__name__}: {exc})",
                        hint="start a fresh run instead of resuming") from None
    return tensors, sidecar


def discard(run_dir: str | Path, which: str) -> None:
    """Remove a checkpoint pair (the best weights once ``model/`` holds the same tensors)."""
    for path in checkpoint_paths(run_dir, which):
        path.unlink(missing_ok=True)


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts (a key missing on one side differs)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [d for k in keys for d in differing_keys(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


# Keys a resumed run may change: how long it trains, when it stops, where files go, how it is evaluated
# at the end. Anything else would make the resumed run a different experiment than the one checkpointed.
SAFE_ON_RESUME = (
    "training.epochs", "training.early_stopping.patience", "training.early_stopping.patience_epochs",
    "training.early_stopping.min_epochs", "evaluation.cutoffs", "evaluation.split", "evaluation.user_batch_size",
    "device.threads", "experiment.runs_dir", "data.data_dir",
)


def resume_changes(recorded: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(allowed, refused): the dotted keys in which ``new`` differs from ``recorded``, split by
    :data:`SAFE_ON_RESUME`."""
    changed = differing_keys(recorded, new)
    return [k for k in changed if k in SAFE_ON_RESUME], [k for k in changed if k not in SAFE_ON_RESUME]


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
