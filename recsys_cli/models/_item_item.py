"""The template of every model that scores with one square matrix W: EASE, GF-CF, ItemKNN, UserKNN,
P3alpha, RP3beta, SLIM and PureSVD's item variant.

A model built on :class:`ItemItemRecommender` implements only how W is computed and what that costs
in memory; the base class owns everything else. See the class docstring for the interface.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli import console
from recsys_cli.errors import DataError, RunFailed
from recsys_cli.models._linalg import numpy_dtype, quiet_sparse, sparse_product_into
from recsys_cli.models._memory import place_for_scoring, plan_fit_device
from recsys_cli.models._tiles import (
    ColumnTiles,
    Matrix,
    is_sparse,
    scipy_csr,
    topk_columns,
)
from recsys_cli.models.base import FitContext, Recommender, csr_to_torch

CPU = torch.device("cpu")
# Users per thread when a sparse W scores on the CPU: big enough that SciPy's per-call overhead is
# amortised, small enough that a 1000-user block splits over two cores.
SPARSE_SCORE_CHUNK = 256


class ItemItemRecommender(Recommender):
    """Scores with one square matrix W that a subclass computes; the base class does the rest.

    A subclass sets the class attributes ``name`` and ``Config`` (and registers as usual),
    ``display_name`` (messages), ``matrix_name`` (the key W is saved under) and implements:

    - ``memory_estimate(X, dtype, device) -> (bytes, formula)``: what :meth:`compute_W` needs on
      ``device`` for the prepared rows X, checked against the memory budget before anything is
      allocated (``formula`` appears in the refusal message);
    - ``compute_W(X, ctx, device, dtype) -> W``: W on ``device`` in ``dtype``, as a dense tensor,
      :class:`ColumnTiles`, or a torch sparse CSR tensor (already pruned: the base class never
      densifies it). It may add figures to ``self.fit_info``.

    Optional hooks and switches:

    - ``prepare_rows(train, dtype)``: the rows scores are computed from, e.g. binarised or
      weighted (default: a copy of ``train`` in the compute dtype). Scoring, seen items and saving
      all use what it returns.
    - ``describe()``: the hyperparameters for the log line.
    - ``neighbours = "items"``: W is items × items and ``score(u) = x_u · W`` (columns are the
      targets); ``"users"``: W is users × users and ``score(u) = W[u, :] · X``.
    - ``cpu_only = True``: compute_W runs on the CPU only (SciPy); W still moves to the run's
      device for scoring.
    - ``topk_by_abs``: when the config has ``topk`` and compute_W returns a dense W, the base class
      keeps the k largest values (or |values|) per column and stores W sparse.
    - ``half_precision_note``: why float16/bfloat16 are computed in float32 (said in the log).

    What the base class owns: the compute dtype (float64 on request, float32 otherwise), row
    preparation, the device plan and memory guard (a GPU short of memory hands the fit to the
    CPU; MPS fits on the CPU), the optional dense → top-k sparse step, where W lives for scoring
    (column tiles or sparse CSR on the CPU, a dense or sparse tensor on a GPU), block scoring,
    saving and loading, and the fit figures (``fit_info``, also in ``timing.json``).
    """

    matrix_name: ClassVar[str] = "W"
    display_name: ClassVar[str] = "item-item model"
    neighbours: ClassVar[Literal["items", "users"]] = "items"
    cpu_only: ClassVar[bool] = False
    topk_by_abs: ClassVar[bool] = False
    half_precision_note: ClassVar[str] = "half precision is not accurate enough for this computation"

    def __init__(self, config, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(config, device=device, dtype=dtype, seed=seed)
        self.W: Matrix | None = None
        self.X: sp.csr_matrix | None = None  # the user rows scores are computed from (CPU)
        self.fit_info: dict[str, Any] = {}
        self._W_scipy: sp.csr_matrix | None = None  # a view of a sparse CPU W, for SciPy scoring
        self._X_device: torch.Tensor | None = None  # X on the scoring device (users variant off the CPU)
        self._W_rows_cpu: sp.csr_matrix | None = None  # W on the CPU for picking rows (users variant off the CPU)

    # -- what a subclass implements --------------------------------------------------------------
    def memory_estimate(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        raise NotImplementedError

    def compute_W(self, X: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype) -> Matrix:
        raise NotImplementedError

    def prepare_rows(self, train: sp.csr_matrix, dtype: torch.dtype) -> sp.csr_matrix:
        X = sp.csr_matrix(train, dtype=numpy_dtype(dtype), copy=True)
        X.eliminate_zeros()
        return X

    def describe(self) -> str:
        return ""

    # -- the skeleton ----------------------------------------------------------------------------
    def compute_dtype(self) -> torch.dtype:
        """float64 when asked for; float32 otherwise (float16/bfloat16 are computed in float32)."""
        if self.dtype == torch.float64:
            return torch.float64
        if self.dtype in (torch.float16, torch.bfloat16):
            console.info(f"{self.display_name}: device.dtype {str(self.dtype).replace('torch.', '')} is computed "
                         f"and scored in float32 ({self.half_precision_note})")
        return torch.float32

    def _score_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def side(self) -> int:
        """The order of W: items, or users for a user-user model."""
        return self.n_users if self.neighbours == "users" else self.n_items

    def fit(self, train: sp.csr_matrix, ctx: FitContext) -> None:
        started = time.perf_counter()
        dtype = self.compute_dtype()
        self.n_users, self.n_items = train.shape
        self.X = self.prepare_rows(train, dtype)
        plan_ctx = dataclasses.replace(ctx, device=CPU) if self.cpu_only else ctx
        fit_device = plan_fit_device(self.display_name, plan_ctx,
                                     lambda dev: self.memory_estimate(self.X, dtype, dev))
        if fit_device.type == "mps":  # no in-place Cholesky nor sparse products there: fit on the CPU
            fit_device = CPU
        detail = self.describe()
        console.info(f"{self.display_name}: fitting {self.side:,} {self.neighbours} on {fit_device} in "
                     f"{str(dtype).replace('torch.', '')}" + (f" ({detail})" if detail else ""))
        self.fit_info = {}
        W = self.compute_W(self.X, ctx, fit_device, dtype)
        topk = getattr(self.config, "topk", None)
        if topk is not None and not is_sparse(W):
            W = topk_columns(W, topk, by_abs=self.topk_by_abs)
        self._place(W, ctx.memory_budget_bytes)
        sparse = is_sparse(self.W)
        self.fit_info.update(fit_device=str(fit_device), fit_seconds=round(time.perf_counter() - started, 3),
                             stored="sparse" if sparse else "dense",
                             compute_dtype=str(self._score_dtype()).replace("torch.", ""),
                             nnz=int(self.W.values().numel()) if sparse else self.side**2)
        if ctx.timing is not None:
            ctx.timing.figures[f"{self.name}_fit"] = dict(self.fit_info)

    def _place(self, W: Matrix, budget: int | None = None) -> None:
        self.W = place_for_scoring(self.display_name, W, self.device, budget)
        self.device = self.W.device
        self._W_scipy = self._X_device = self._W_rows_cpu = None
        if is_sparse(self.W) and self.W.device.type == "cpu":
            self._W_scipy = scipy_csr(self.W)
        elif self.neighbours == "users" and self.W.device.type != "cpu":
            self._W_rows_cpu = scipy_csr(W.cpu())  # rows of W are picked on the CPU, multiplied on the device
            with quiet_sparse():
                self._X_device = csr_to_torch(self.X, device=self.W.device, dtype=self.W.dtype)

    def dense_W(self) -> torch.Tensor:
        """W as one dense square tensor (a copy when W is tiled or sparse)."""
        if isinstance(self.W, ColumnTiles):
            return self.W.to_dense()
        return self.W.to_dense() if is_sparse(self.W) else self.W

    def preferred_block_size(self) -> int | None:
        # Column-tile scoring on the CPU amortises each tile over the block's users: 1000-user
        # blocks run ~20 % faster than the evaluator's 24 MiB CPU default at ML-10M size.
        if self.device.type == "cpu" and self.n_items:
            return max(1, min(1000, int(5e8 / self.n_items)))
        return None

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self.W is None or self.X is None:
            raise RunFailed(f"{self.name} is not fitted", hint="fit or load the model before scoring")
        index = users.detach().cpu().numpy().astype(np.int64, copy=False)
        if self._W_scipy is not None:
            if self.neighbours == "users":
                return _sparse_product(self._W_scipy, index, self.X)
            return _sparse_product(self.X, index, self._W_scipy)
        if isinstance(self.W, ColumnTiles):
            return self.W.matmul_csr(self.X[index])
        with quiet_sparse():
            if self.neighbours == "users":  # W is sparse here (user-user models are top-k)
                left = csr_to_torch(self._W_rows_cpu[index], device=self.W.device, dtype=self.W.dtype)
                return torch.sparse.mm(left, self._X_device).to_dense()
            xb = csr_to_torch(self.X[index], device=self.W.device, dtype=self.W.dtype)
            if is_sparse(self.W):
                return torch.sparse.mm(xb, self.W).to_dense()
            return torch.sparse.mm(xb, self.W)

    # -- persistence -----------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        if self.W is None:
            raise RunFailed(f"{self.name} is not fitted", hint="fit the model before saving it")
        name, W = self.matrix_name, self.W
        if isinstance(W, ColumnTiles):  # saved as laid out in memory: no second items² copy
            return {f"{name}_tiles": W.flat, f"{name}_tile_edges": torch.from_numpy(W.edges)}
        if is_sparse(W):
            return {f"{name}_crow_indices": W.crow_indices(), f"{name}_col_indices": W.col_indices(),
                    f"{name}_values": W.values()}
        return {name: W}

    def load_state(self, state: dict[str, torch.Tensor], train: sp.csr_matrix) -> None:
        self.n_users, self.n_items = train.shape
        name, n = self.matrix_name, self.side
        dtype = self._score_dtype()
        if f"{name}_tiles" in state:
            flat = state[f"{name}_tiles"].to(dtype)
            W: Matrix = ColumnTiles(flat, flat.numel() // max(n, 1), state[f"{name}_tile_edges"].numpy())
        elif name in state:
            W = state[name].to(dtype)
        else:
            with quiet_sparse():
                W = torch.sparse_csr_tensor(state[f"{name}_crow_indices"], state[f"{name}_col_indices"],
                                            state[f"{name}_values"].to(dtype), size=(n, n))
        if tuple(W.shape) != (n, n):
            raise DataError(f"the saved {name} is {tuple(W.shape)} but the training matrix has {n} {self.neighbours}",
                            hint="evaluate the run with the split it was trained on")
        self.X = self.prepare_rows(train, dtype)
        self._place(W)

    def extra_metadata(self) -> dict[str, Any]:
        return {"fit": self.fit_info}


def _sparse_product(left: sp.csr_matrix, index: np.ndarray, right: sp.csr_matrix) -> torch.Tensor:
    """left[index] · right as a dense tensor, in row chunks on parallel threads (SciPy releases the GIL)."""
    rows = left[index]
    out = np.zeros((rows.shape[0], right.shape[1]), dtype=np.result_type(rows.dtype, right.dtype))
    chunks = range(0, rows.shape[0], SPARSE_SCORE_CHUNK)

    def one(a: int) -> None:
        b = min(rows.shape[0], a + SPARSE_SCORE_CHUNK)
        sparse_product_into(rows[a:b], right, out[a:b])

    threads = max(1, torch.get_num_threads())
    if threads == 1 or len(chunks) == 1:
        for a in chunks:
            one(a)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, chunks))
    return torch.from_numpy(out)
