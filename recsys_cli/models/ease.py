"""EASE^R (Steck 2019): a closed-form item-item model and a strong baseline.

    P = (XᵀX + λI)⁻¹,   B = I − P · diagMat(1 ⊘ diag(P)),   i.e. B_ij = −P_ij / P_jj and B_jj = 0,
    score(u) = x_u · B.

X is the training matrix with its rating values (``implicit`` binarises it; ``normalize_matrix``
L2-normalises rows, then columns, as the reference implementation does; scoring uses the same X).
XᵀX is built dense without densifying X, then inverted through a Cholesky factorisation in place,
so the fit holds one items × items matrix on the CPU (two on a GPU). See docs/models.md and
../shared/spec/models.md §5.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig
from recsys_cli.memory import format_bytes
from recsys_cli.models._item_item import ItemItemRecommender
from recsys_cli.models._linalg import (
    element_size,
    gram,
    gram_memory_bytes,
    numpy_dtype,
    spd_inverse_,
    synchronize,
)
from recsys_cli.models._tiles import Matrix, column_blocks, symmetric_matrix
from recsys_cli.models.base import FitContext
from recsys_cli.models.registry import register


class EASEConfig(ModelConfig):
    name: Literal["ease"] = "ease"
    l2_norm: float = Field(1000.0, ge=0, description="λ added to the diagonal of XᵀX.")
    implicit: bool = Field(False, description="Binarise the training matrix (every interaction counts 1).")
    normalize_matrix: bool = Field(
        False, description="L2-normalise X per row, then per column, before fitting and scoring."
    )
    topk: int | None = Field(
        None, ge=1, description="Keep the k largest |B_ij| per column (target item), stored sparse; null keeps B dense."
    )


@register
class EASE(ItemItemRecommender):
    name: ClassVar[str] = "ease"
    Config: ClassVar[type[ModelConfig]] = EASEConfig
    matrix_name: ClassVar[str] = "B"
    display_name: ClassVar[str] = "EASE"
    topk_by_abs: ClassVar[bool] = True  # strongly negative weights are kept too, as in the reference implementation
    half_precision_note: ClassVar[str] = "a Cholesky factorisation in half precision is not accurate enough"

    def prepare_rows(self, train: sp.csr_matrix, dtype: torch.dtype) -> sp.csr_matrix:
        X = sp.csr_matrix(train, dtype=numpy_dtype(dtype), copy=True)
        if self.config.implicit:
            X.data[:] = 1
        if self.config.normalize_matrix:
            from sklearn.preprocessing import normalize

            X = sp.csr_matrix(normalize(normalize(X, norm="l2", axis=1), norm="l2", axis=0), dtype=X.dtype)
        return X

    def memory_estimate(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        matrix, buffers = gram_memory_bytes(X, dtype, device)
        # CPU: XᵀX, its factor and its inverse share one buffer (LAPACK in place); elsewhere the
        # Cholesky factor and the inverse are separate allocations.
        copies = 1 if device.type == "cpu" else 2
        n = X.shape[1]
        return copies * matrix + buffers, (
            f"{n:,}² items × {element_size(dtype)} B × {copies} {'matrices' if copies > 1 else 'matrix'} "
            f"+ {format_bytes(buffers)} of blocks and data"
        )

    def describe(self) -> str:
        return f"λ = {self.config.l2_norm:g}"

    def compute_W(self, X: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype) -> Matrix:
        t0 = time.perf_counter()
        marks: list[float] = []

        def timed_gram() -> torch.Tensor:
            G = gram(X, device=device, dtype=dtype, full=False)
            synchronize(device)
            marks.append(time.perf_counter())
            return G

        # no local reference to XᵀX, so that on a GPU it is freed once factorised
        P = spd_inverse_(timed_gram(), ridge=self.config.l2_norm, what="XᵀX + λI",
                         hint="raise model.l2_norm (λ > 0 makes it positive definite)")
        synchronize(device)
        t1, t2 = marks[0], time.perf_counter()
        B = symmetric_matrix(P)  # on the CPU: column tiles in P's own storage
        del P
        # B_ij = −P_ij / P_jj: divide each column by minus its diagonal entry, in place
        for a, b, columns in column_blocks(B):
            own = columns[a:b]  # the square block holding the diagonal entries of these columns
            columns.div_(-own.diagonal().clone())
            own.fill_diagonal_(0)
        self.fit_info.update(gram_seconds=round(t1 - t0, 3), inverse_seconds=round(t2 - t1, 3))
        console.debug(f"EASE: XᵀX {t1 - t0:.2f} s, inverse {t2 - t1:.2f} s")
        return B
