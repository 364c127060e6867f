"""What P3alpha and RP3beta share, computed as the reference implementation does
(../shared/spec/baselines.md §3): the random-walk similarity W_ij = Σ_u P(i→u)^α · P(u→j)^α
(· deg_j^−β), its row top-K, optional row L1 normalisation and column top-K, computed in row blocks
of the item × item product without ever holding it dense."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli.config.schema import ModelConfig
from recsys_cli.memory import format_bytes
from recsys_cli.models._item_item import ItemItemRecommender
from recsys_cli.models._similarity import (
    map_gram_blocks,
    neighbours_kept,
    similarity_memory_bytes,
)
from recsys_cli.models._tiles import sparse_tensor
from recsys_cli.models.base import FitContext


class WalkConfig(ModelConfig):
    topk: int = Field(100, ge=1, description="Neighbours kept per row, then per column.")
    alpha: float = Field(1.0, ge=0, description="Exponent applied to both transition probabilities.")
    min_rating: float = Field(0.0, ge=0, description="Drop training ratings below this (0 keeps all).")
    implicit: bool = Field(False, description="With min_rating > 0: set the kept ratings to 1 (ignored otherwise).")


def row_l1_normalize(W: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(np.abs(W).sum(axis=1), dtype=np.float64).ravel()
    scale = np.where(sums > 0, 1.0 / np.where(sums > 0, sums, 1), 0.0)
    W = W.copy()
    W.data = (W.data * np.repeat(scale, np.diff(W.indptr))).astype(np.float32)
    return W


def column_topk(W: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest values of each column, zeros dropped; CSR float32 (the reference
    implementation's similarityMatrixTopK). Where candidates tie at the k-th value, the choice among
    them is NumPy's argpartition over the column's entries in row order, as there."""
    coo = W.tocoo()
    keep = coo.data != 0
    rows, cols, vals = coo.row[keep], coo.col[keep], coo.data[keep]
    order = np.lexsort((rows, -vals, cols))  # by column, then value descending, then row
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(cols, minlength=W.shape[1])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(cols.size) - starts[cols]
    keep = rank < k
    # columns whose k-th and (k+1)-th values tie: only there does the choice among ties matter
    long = np.flatnonzero(counts > k)
    tied = long[vals[starts[long] + k - 1] == vals[starts[long] + k]]
    for c in tied:  # few columns (ties at the boundary); argpartition needs each one's own vector
        seg = np.arange(starts[c], starts[c] + counts[c])
        seg = seg[np.argsort(rows[seg], kind="stable")]
        keep[seg] = False
        keep[seg[np.argpartition(-vals[seg], k - 1)[:k]]] = True
    out = sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=W.shape, dtype=np.float32)
    out.sort_indices()
    return out


class RandomWalkRecommender(ItemItemRecommender):
    """P3alpha (``beta = None``) and RP3beta on the item-item template."""

    cpu_only: ClassVar[bool] = True
    half_precision_note: ClassVar[str] = "transition probabilities are computed in float32, as in the reference implementation"

    def beta(self) -> float | None:
        return None

    def prepare_rows(self, train: sp.csr_matrix, dtype: torch.dtype) -> sp.csr_matrix:
        R = sp.csr_matrix(train, dtype=np.float32, copy=True)
        R.eliminate_zeros()
        if self.config.min_rating > 0:
            R.data[R.data < np.float32(self.config.min_rating)] = 0
            R.eliminate_zeros()
            if self.config.implicit:
                R.data[:] = 1
        R.sort_indices()
        return R

    def _score_dtype(self) -> torch.dtype:
        return torch.float32

    def describe(self) -> str:
        c, beta = self.config, self.beta()
        return f"α = {c.alpha:g}" + ("" if beta is None else f", β = {beta:g}") + f", topK = {c.topk}"

    def walk_matrices(self, R: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        """(X, Y, deg) with XᵀY = P_iu^α · P_ui^α: X is the binarised R scaled by (1/|U_i|)^α per item,
        Y is R row-L1-normalised then raised to α."""
        alpha = self.config.alpha
        deg = np.bincount(R.indices, minlength=R.shape[1]).astype(np.float32)
        inv = np.where(deg > 0, 1.0 / np.where(deg > 0, deg, 1), 0).astype(np.float32)  # P_iu, float32
        X = sp.csr_matrix((inv[R.indices], R.indices, R.indptr), shape=R.shape)
        Y = row_l1_normalize(R)
        if alpha != 1:
            X.data = np.power(X.data, np.float32(alpha))
            Y.data = np.power(Y.data, np.float32(alpha))
        return X, Y, deg

    def memory_estimate(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        k = neighbours_kept(self.config.topk, X.shape[1], "items", warn=False)
        need = similarity_memory_bytes(X, k, max(1, torch.get_num_threads()), copies=2)
        return need, f"{X.shape[1]:,} items × topK {k} + {format_bytes(need)} of blocks and data"

    def compute_W(self, R: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype):
        n, beta = R.shape[1], self.beta()
        k = neighbours_kept(self.config.topk, n, "items")
        X, Y, deg = self.walk_matrices(R)
        penalty = None
        if beta is not None:  # deg_j^−β of the target, computed in float32 and applied in float64 to match the reference
            pen = np.zeros(n, dtype=np.float32)
            pen[deg > 0] = np.power(deg[deg > 0], np.float32(-beta))
            penalty = torch.from_numpy(pen.astype(np.float64))

        def handle(a: int, b: int, S: torch.Tensor):
            if penalty is not None:
                S = S.double().mul_(penalty)
            own = torch.arange(b - a)
            S[own, own + a] = 0  # no self-loop: zeroed after the penalty, before the top-K
            # NumPy's argpartition along rows is the reference implementation's top-K primitive applied
            # to each row's vector, so ties at the K-th value (common here) resolve as they do there
            values = S.numpy()
            index = np.argpartition(-values, k - 1, axis=1)[:, :k]
            return torch.from_numpy(np.take_along_axis(values, index, axis=1)), torch.from_numpy(index)

        rows, cols, vals = [], [], []
        for a, b, (v, i) in map_gram_blocks(X, handle, Y=Y, triangle=False):
            keep = v != 0
            rows.append(torch.arange(a, b).unsqueeze(1).expand_as(v)[keep])
            cols.append(i[keep])
            vals.append(v[keep].float())
        W = sp.csr_matrix((torch.cat(vals).numpy(), (torch.cat(rows).numpy(), torch.cat(cols).numpy())),
                          shape=(n, n), dtype=np.float32)
        if self.config.normalize_similarity:
            W = row_l1_normalize(W)
        return sparse_tensor(column_topk(W, k))
