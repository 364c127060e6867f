"""GF-CF (Shen et al. 2021): a linear filter plus an ideal low-pass filter on the item-item graph.

    d_i = Σ_u r_ui,  d_u = Σ_i r_ui                      (sums of the rating values, not counts)
    R̃ = D_U^{-1/2} R D_I^{-1/2}  with item factor 1/(√d_i + 1e-6) and user factor 1/√d_u + 1e-6
    W = R̃ᵀR̃ + α · D_I^{-1/2} V_Kᵀ V_K D_I^{+1/2},  i.e. W_ij = (R̃ᵀR̃)_ij + α (V_KᵀV_K)_ij √d_j / (√d_i + 1e-6)
    score(u) = r_u · W                                    (the raw training row)

V_K holds the top-K right singular vectors of R̃ from scikit-learn's randomized_svd seeded with the
experiment seed. ``topk`` keeps the k largest values (not magnitudes) per column, stored sparse.
Degrees and epsilons are the reference implementation's (../shared/spec/models.md §6). See
docs/models.md.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ConfigError
from recsys_cli.memory import format_bytes
from recsys_cli.models._item_item import ItemItemRecommender
from recsys_cli.models._linalg import element_size, gram, gram_memory_bytes, synchronize
from recsys_cli.models._tiles import Matrix, column_blocks, symmetric_matrix
from recsys_cli.models.base import FitContext
from recsys_cli.models.registry import register


class GFCFConfig(ModelConfig):
    name: Literal["gfcf"] = "gfcf"
    alpha: float = Field(1.0, ge=0, description="Weight α of the ideal low-pass filter.")
    num_factors: int = Field(50, ge=1, description="K: right singular vectors of R̃ in the low-pass filter.")
    topk: int | None = Field(
        None, ge=1, description="Keep the k largest W_ij per column, stored sparse; null keeps W dense (the paper)."
    )


def normalized_matrix(R: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """(R̃, d_i) with the reference implementation's degrees and epsilons; R̃ has R's dtype."""
    d_items = np.asarray(R.sum(axis=0), dtype=np.float64).ravel()
    d_users = np.asarray(R.sum(axis=1), dtype=np.float64).ravel()
    item_factor = 1.0 / (np.sqrt(d_items) + 1e-6)
    with np.errstate(divide="ignore"):
        # the epsilon sits outside the root (reference formula); an empty user's inf never meets a value
        user_factor = 1.0 / np.sqrt(d_users) + 1e-6
    coo = R.tocoo()
    data = coo.data * user_factor[coo.row] * item_factor[coo.col]
    normalized = sp.csr_matrix((data.astype(R.dtype), (coo.row, coo.col)), shape=R.shape)
    return normalized, d_items


@register
class GFCF(ItemItemRecommender):
    name: ClassVar[str] = "gfcf"
    Config: ClassVar[type[ModelConfig]] = GFCFConfig
    matrix_name: ClassVar[str] = "W"
    display_name: ClassVar[str] = "GF-CF"
    topk_by_abs: ClassVar[bool] = False
    half_precision_note: ClassVar[str] = "a Cholesky factorisation in half precision is not accurate enough"

    def memory_estimate(self, R: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        matrix, buffers = gram_memory_bytes(R, dtype, device)
        # randomized_svd works on the CPU in float64-sized blocks of (K + 10) columns per user and item
        k = self.config.num_factors + 10
        svd = 4 * (R.shape[0] + R.shape[1]) * k * 8 + R.nnz * 48  # plus building R̃ from COO
        n = R.shape[1]
        return matrix + buffers + svd, (
            f"{n:,}² items × {element_size(dtype)} B × 1 matrix + {format_bytes(buffers + svd)} of blocks, "
            "data and SVD"
        )

    def describe(self) -> str:
        return f"α = {self.config.alpha:g}, K = {self.config.num_factors}"

    def compute_W(self, X: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype) -> Matrix:
        from sklearn.utils.extmath import randomized_svd

        k = self.config.num_factors
        if k > min(X.shape):
            raise ConfigError(f"model.num_factors is {k} but the training matrix is {X.shape[0]} × "
                              f"{X.shape[1]}", hint=f"use model.num_factors ≤ {min(X.shape)}")
        R_norm, d_items = normalized_matrix(X)
        t0 = time.perf_counter()
        W = symmetric_matrix(gram(R_norm, device=device, dtype=dtype, full=False))
        synchronize(device)
        t1 = time.perf_counter()
        _, _, vt = randomized_svd(R_norm, n_components=k, random_state=ctx.seed % 2**32)
        t2 = time.perf_counter()
        vt = torch.from_numpy(np.ascontiguousarray(vt, dtype=np.float64))
        left = vt / torch.from_numpy(np.sqrt(d_items) + 1e-6)  # V_K D_I^{-1/2}
        right = vt * torch.from_numpy(np.sqrt(d_items))  # V_K D_I^{+1/2}
        # W += α (V_K D^{-1/2})ᵀ (V_K D^{+1/2}): a rank-K update in place, no second items² buffer
        left, right = left.T.to(device, dtype), right.to(device, dtype)
        for a, b, columns in column_blocks(W):
            columns.addmm_(left, right[:, a:b], alpha=self.config.alpha)
        synchronize(device)
        self.fit_info.update(gram_seconds=round(t1 - t0, 3), svd_seconds=round(t2 - t1, 3))
        console.debug(f"GF-CF: R̃ᵀR̃ {t1 - t0:.2f} s, SVD {t2 - t1:.2f} s")
        return W
