"""In-memory data set and split types shared by readers, splitters, models and the evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass
class Dataset:
    """A loaded data set. ``urm`` is users × items CSR (float64) holding the rating values."""

    name: str
    urm: sp.csr_matrix
    urm_timestamp: sp.csr_matrix | None = None
    icms: dict[str, sp.csr_matrix] = field(default_factory=dict)
    user_ids: np.ndarray | None = None  # original id (str) of each row
    item_ids: np.ndarray | None = None  # original id (str) of each column
    feature_ids: dict[str, np.ndarray] = field(default_factory=dict)  # per ICM: original feature key per column
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.urm.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.urm.shape[1])


@dataclass
class Split:
    """Train / validation / test matrices of one data set, all of the data set's full shape."""

    train: sp.csr_matrix
    test: sp.csr_matrix
    val: sp.csr_matrix | None = None
    fingerprint: str = ""
    directory: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
