"""What ItemKNN and UserKNN share (the reference implementation's ItemKNNCF / UserKNNCF,
../shared/spec/baselines.md §2): the hyperparameters, URM_bias and TF-IDF/BM25 feature weighting of
the training matrix, and a fit that hands the (weighted) matrix to the similarity engine."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ConfigError
from recsys_cli.memory import format_bytes
from recsys_cli.models._item_item import ItemItemRecommender
from recsys_cli.models._similarity import (
    Similarity,
    column_similarity,
    neighbours_kept,
    similarity_memory_bytes,
)
from recsys_cli.models._tiles import sparse_tensor
from recsys_cli.models.base import FitContext

BM25_K1, BM25_B = 1.2, 0.75  # the reference implementation's constants, not exposed by its fit either


class KNNConfig(ModelConfig):
    topk: int = Field(50, ge=0, description="Neighbours kept per target column (≤ the number of columns).")
    shrink: float = Field(100.0, ge=0, description="Added inside the normalising denominator (divides G without normalize).")
    similarity: Literal["cosine", "adjusted", "asymmetric", "pearson", "jaccard", "tanimoto", "dice", "tversky"] = Field(
        "cosine", description="Similarity between columns (spec §1); jaccard/dice/tversky binarise and ignore normalize.")
    normalize: bool = Field(True, description="Divide by the norms (cosine, adjusted, pearson, asymmetric).")
    feature_weighting: Literal["none", "TF-IDF", "BM25"] = Field(
        "none", description="Reweight the training matrix before the similarity; scoring uses the weighted matrix.")
    urm_bias: float = Field(0.0, description="Added to every stored rating before weighting; scoring uses the shifted ratings.")
    asymmetric_alpha: float = Field(0.5, description="asymmetric cosine: exponent split between target and candidate.")
    tversky_alpha: float = Field(1.0, ge=0, description="tversky: weight of the target's own items.")
    tversky_beta: float = Field(1.0, ge=0, description="tversky: weight of the candidate's own items.")


def tf_idf_(R: sp.csr_matrix) -> sp.csr_matrix:
    """TF-IDF of Rᵀ (items are documents, users are terms) written back into R: √r · ln(N / (1 + |I_u|))."""
    if np.any(R.data < 0):
        raise ConfigError("model.feature_weighting TF-IDF needs non-negative ratings",
                          hint="use feature_weighting: none or BM25, or shift the ratings with model.urm_bias")
    counts = np.diff(R.indptr)
    idf = np.log(R.shape[1] / (1.0 + counts))
    R.data = (np.sqrt(R.data) * np.repeat(idf, counts)).astype(np.float32)
    return R


def bm25_(R: sp.csr_matrix) -> sp.csr_matrix:
    """Okapi BM25 of Rᵀ (items are documents of length Σ_u r_ui, users are terms) written back into R."""
    counts = np.diff(R.indptr)
    idf = np.log(R.shape[1] / (1.0 + counts))
    lengths = np.bincount(R.indices, weights=R.data, minlength=R.shape[1]).astype(np.float32)
    length_norm = (1.0 - BM25_B) + BM25_B * lengths / lengths.mean()
    r = R.data
    R.data = (r * (BM25_K1 + 1.0) / (BM25_K1 * length_norm[R.indices] + r) * np.repeat(idf, counts)).astype(np.float32)
    return R


class KNNRecommender(ItemItemRecommender):
    """KNN collaborative filtering on the item-item template; subclasses set ``neighbours`` (items or users)."""

    cpu_only: ClassVar[bool] = True
    half_precision_note: ClassVar[str] = "similarities are computed in float32, as in the reference implementation"

    def similarity(self) -> Similarity:
        c = self.config
        return Similarity(c.similarity, c.shrink, c.normalize, c.asymmetric_alpha, c.tversky_alpha, c.tversky_beta)

    def prepare_rows(self, train: sp.csr_matrix, dtype: torch.dtype) -> sp.csr_matrix:
        # float32, as the reference implementation casts it, whatever device.dtype asks for
        R = sp.csr_matrix(train, dtype=np.float32, copy=True)
        R.eliminate_zeros()
        R.sort_indices()
        if self.config.urm_bias:
            R.data += np.float32(self.config.urm_bias)
        if self.config.feature_weighting == "TF-IDF":
            R = tf_idf_(R)
        elif self.config.feature_weighting == "BM25":
            R = bm25_(R)
        return R

    def _score_dtype(self) -> torch.dtype:
        return torch.float32

    def describe(self) -> str:
        c = self.config
        return f"{c.similarity}, topK = {c.topk}, shrink = {c.shrink:g}, weighting {c.feature_weighting}"

    def _data(self, X: sp.csr_matrix) -> sp.csr_matrix:
        """The matrix whose columns are compared: R for items, Rᵀ for users."""
        return X.T.tocsr() if self.neighbours == "users" else X

    def memory_estimate(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        side = X.shape[0] if self.neighbours == "users" else X.shape[1]
        k = neighbours_kept(self.config.topk, side, self.neighbours, warn=False)
        need = similarity_memory_bytes(self._data(X), k, max(1, torch.get_num_threads()))
        return need, f"{side:,} {self.neighbours} × topK {k} + {format_bytes(need)} of blocks and data"

    def compute_W(self, X: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype):
        n = X.shape[0] if self.neighbours == "users" else X.shape[1]
        k = neighbours_kept(self.config.topk, n, self.neighbours)
        return sparse_tensor(column_similarity(self._data(X), self.similarity(), k))
