"""The model interfaces every registered model implements.

Data flows one way: a :class:`Recommender` is fitted on a training matrix (users × items, CSR,
rating values), then scores blocks of users against every item; the evaluator turns scores into
metrics. Saving writes ``model.pt`` (tensors only, loadable with ``torch.load(weights_only=True)``)
and ``model.json`` (name, config, shapes) into a folder, so a run can be re-evaluated without refitting.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli import atomic
from recsys_cli.config.schema import EvaluationConfig, ModelConfig, TrainingConfig
from recsys_cli.errors import DataError


@dataclass
class FitContext:
    """Everything a model's fit may need besides the training matrix."""

    device: torch.device
    dtype: torch.dtype
    seed: int
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    validation: sp.csr_matrix | None = None  # held-out matrix for early stopping (never the test split)
    run_dir: Path | None = None  # checkpoints, train_log.csv, curves
    resume_from: Path | None = None  # a run directory whose last checkpoint to continue from
    memory_budget_bytes: int | None = None  # cap from device.memory_budget_gb, else the device's free memory
    timing: Any = None  # recsys_cli.timing.Timing of the run, for throughput figures
    hooks: list[Any] = field(default_factory=list)  # recsys_cli.training.hooks.TrainingHook instances
    plot_formats: tuple[str, ...] | list[str] = ("png",)  # run.plot_formats: files of the training curve


class Model(ABC):
    """Base of every registered model."""

    name: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    task: ClassVar[str] = "recommendation"  # or "classification" (mlp-iris)
    trainable: ClassVar[bool] = False  # True when the `training` config section applies

    def __init__(self, config: ModelConfig, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        self.config = config
        self.device = device
        self.dtype = dtype
        self.seed = seed


class Recommender(Model):
    """Scores users against all items. Subclasses implement :meth:`fit`, :meth:`score` and the state hooks."""

    n_users: int = 0
    n_items: int = 0

    @abstractmethod
    def fit(self, train: sp.csr_matrix, ctx: FitContext) -> None:
        """Learn from ``train`` (users × items CSR with rating values)."""

    @abstractmethod
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of shape (len(users), n_items) on ``self.device``; higher is better, -inf excludes.

        Return a new tensor on every call (not a cache or a view of one): the evaluator masks seen
        items in it in place.
        """

    def preferred_block_size(self) -> int | None:
        """Users per evaluation block this model scores fastest with (None: the evaluator's default).

        ``evaluation.user_batch_size`` still wins when set.
        """
        return None

    # -- persistence ----------------------------------------------------------------------------
    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """The learned tensors to save (CPU or device tensors; dense or sparse)."""

    @abstractmethod
    def load_state(self, state: dict[str, torch.Tensor], train: sp.csr_matrix) -> None:
        """Restore from :meth:`state`'s output; ``train`` is the matrix the model was fitted on."""

    def extra_metadata(self) -> dict[str, Any]:
        return {}

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu() for k, v in self.state().items()}
        with atomic.atomic_path(directory / "model.pt") as tmp:
            torch.save(tensors, tmp)
        meta = {
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "dtype": str(self.dtype).replace("torch.", ""),
            **self.extra_metadata(),
        }
        atomic.write_json(directory / "model.json", meta)
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, *, train: sp.csr_matrix, device: torch.device, dtype: torch.dtype | None = None
    ) -> Recommender:
        directory = Path(directory)
        meta_path, state_path = directory / "model.json", directory / "model.pt"
        if not meta_path.is_file() or not state_path.is_file():
            raise DataError(f"no saved model in {directory}", hint="train the run first (recsys train/run)")
        meta = json.loads(meta_path.read_text())
        from recsys_cli.devices import DTYPES

        dtype = dtype or DTYPES[meta.get("dtype", "float32")]
        model = cls(cls.Config.model_validate(meta["config"]), device=device, dtype=dtype)
        model.n_users, model.n_items = int(meta["n_users"]), int(meta["n_items"])
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state({k: v for k, v in state.items()}, train)
        return model


def csr_to_torch(matrix: sp.csr_matrix, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on ``device``."""
    matrix = sp.csr_matrix(matrix)
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr.astype(np.int64)),
        torch.from_numpy(matrix.indices.astype(np.int64)),
        torch.from_numpy(matrix.data).to(dtype),
        size=matrix.shape,
        device=device,
    )

