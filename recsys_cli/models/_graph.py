"""The user–item graph of graph-convolution models: normalised adjacency, propagation, edge dropout.

The graph has ``n_users + n_items`` nodes (users first) and one undirected edge per training
interaction, stored once in each direction. Its normalised adjacency Ã = D^-1/2 A D^-1/2 (no
self-loops) is symmetric, which the propagation exploits: the mean of the powers
P = (1/(K+1)) Σ_{k=0..K} Ã^k is symmetric too, so the gradient of P·E is P·grad — the backward pass
is the forward pass again, and no layer output needs to be kept for it.

Edge dropout drops whole interactions (both directions together), so a dropped-out Ã stays symmetric.

The products are torch sparse CSR × dense products on the model's device (cuSPARSE on CUDA), with
int32 indices where they fit: measured faster than int64 indices, COO, and SciPy's kernel.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli.models._linalg import quiet_sparse

Weighting = Literal["binary", "ratings"]

# The reference implementation adds this epsilon to the root of every degree; kept for `weighting: ratings`.
COURSE_EPSILON = 1e-6


def _canonical(train: sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(train, dtype=np.float64, copy=True)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


def interaction_weights(train: sp.csr_matrix, weighting: Weighting) -> tuple[sp.csr_matrix, np.ndarray]:
    """The canonical training matrix and the normalised weight of each of its stored interactions.

    ``binary``: Ã_ui = 1 / sqrt(|u| · |i|) with degrees as counts (the LightGCN paper).
    ``ratings``: Ã_ui = r_ui / ((sqrt(d_u) + 1e-6)(sqrt(d_i) + 1e-6)) with degrees as sums of ratings
    (LightGCN's reference implementation, ../shared/spec/models.md §6).
    """
    matrix = _canonical(train)
    values = np.ones_like(matrix.data) if weighting == "binary" else matrix.data.copy()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    d_user = np.bincount(rows, weights=values, minlength=matrix.shape[0])
    d_item = np.bincount(matrix.indices, weights=values, minlength=matrix.shape[1])
    if weighting == "binary":
        # every node that has an edge has degree >= 1, so no guard is needed where it is used
        f_user = 1.0 / np.sqrt(np.maximum(d_user, 1.0))
        f_item = 1.0 / np.sqrt(np.maximum(d_item, 1.0))
    elif weighting == "ratings":
        if (values < 0).any():
            from recsys_cli.errors import DataError

            raise DataError(
                "lightgcn weighting 'ratings' needs non-negative ratings (degrees are sums of ratings)",
                hint="use model.weighting=binary",
            )
        f_user = 1.0 / (np.sqrt(d_user) + COURSE_EPSILON)
        f_item = 1.0 / (np.sqrt(d_item) + COURSE_EPSILON)
    else:  # pragma: no cover - the config schema restricts the choice
        raise ValueError(f"unknown weighting {weighting!r}")
    return matrix, values * f_user[rows] * f_item[matrix.indices]


class NormalizedAdjacency:
    """Ã of a training matrix as CSR tensors on ``device``, with edge dropout and products.

    ``values`` are in ``dtype`` (float64 stays float64; half precisions compute in float32 on the
    CPU, where the sparse kernels gain nothing from them). ``edge`` maps every stored entry to its interaction, so
    dropout can drop both directions of an interaction at once.
    """

    def __init__(self, train: sp.csr_matrix, weighting: Weighting, *, device: torch.device, dtype: torch.dtype):
        matrix, weights = interaction_weights(train, weighting)
        n_users, n_items = matrix.shape
        self.n_users, self.n_items = n_users, n_items
        self.n_nodes = n_users + n_items
        self.n_interactions = matrix.nnz
        self.device = device
        if dtype in (torch.float16, torch.bfloat16) and not sparse_product_supported(device, dtype):
            from recsys_cli import console

            console.warn(f"{device.type} has no {str(dtype).replace('torch.', '')} sparse product: the graph "
                         f"propagation runs in float32, not {str(dtype).replace('torch.', '')} "
                         "(model.json records compute_dtype)")
            dtype = torch.float32
        self.dtype = dtype
        # Build the structure once with interaction ids as values: both directions of interaction e
        # carry e + 1 (never 0, so SciPy keeps every entry).
        ids = sp.csr_matrix((np.arange(1, matrix.nnz + 1, dtype=np.float64), matrix.indices, matrix.indptr),
                            shape=matrix.shape)
        structure = sp.bmat([[None, ids], [ids.T, None]], format="csr")
        structure.sort_indices()
        edge = structure.data.astype(np.int64) - 1
        index_dtype = torch.int32 if structure.nnz < 2**31 - 1 else torch.int64
        self._index_dtype = index_dtype
        self.crow = torch.from_numpy(structure.indptr.astype(np.int64)).to(device=device, dtype=index_dtype)
        self.col = torch.from_numpy(structure.indices.astype(np.int64)).to(device=device, dtype=index_dtype)
        self.values = torch.from_numpy(weights[edge]).to(device=device, dtype=dtype)
        # only edge dropout reads these two; int32 halves their memory
        self.edge = torch.from_numpy(edge).to(device=device, dtype=index_dtype)
        self.row = torch.from_numpy(np.repeat(np.arange(self.n_nodes), np.diff(structure.indptr))).to(
            device=device, dtype=index_dtype)
        self.full = SymmetricOperator(self.crow, self.col, self.values, self.n_nodes)

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def to_scipy(self) -> sp.csr_matrix:
        return self.full.to_scipy()

    def dropped(self, p: float, generator: torch.Generator | None = None) -> SymmetricOperator:
        """Ã with each interaction kept with probability 1-p (both directions), kept values / (1-p)."""
        if p <= 0.0:
            return self.full
        keep_prob = 1.0 - p
        keep = torch.rand(self.n_interactions, generator=generator, device=self.device) < keep_prob
        mask = keep.index_select(0, self.edge)
        counts = torch.bincount(self.row[mask], minlength=self.n_nodes)
        crow = torch.zeros(self.n_nodes + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(counts, 0, out=crow[1:])
        return SymmetricOperator(
            crow.to(self._index_dtype), self.col[mask], self.values[mask] / keep_prob, self.n_nodes
        )


_SUPPORT: dict[tuple[str, torch.dtype], bool] = {}


def sparse_product_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a CSR × dense product runs in ``dtype`` on ``device`` (half precisions: CUDA only)."""
    key = (device.type, dtype)
    if key not in _SUPPORT:
        ok = device.type == "cuda"
        if ok:
            try:
                one = torch.ones(1, dtype=dtype, device=device)
                index = torch.zeros(1, dtype=torch.int32, device=device)
                crow = torch.tensor([0, 1], dtype=torch.int32, device=device)
                matrix = torch.sparse_csr_tensor(crow, index, one, size=(1, 1))
                ok = bool(torch.isfinite(matrix @ torch.ones(1, 2, dtype=dtype, device=device)).all())
            except (RuntimeError, NotImplementedError):
                ok = False
            if not ok:
                from recsys_cli import console

                console.warn(f"sparse products in {str(dtype).replace('torch.', '')} are not available on "
                             f"{device.type} in this torch build; LightGCN propagates in float32")
        _SUPPORT[key] = ok
    return _SUPPORT[key]


class SymmetricOperator:
    """A symmetric sparse matrix in CSR form that multiplies dense matrices on its device."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int):
        self.crow, self.col, self.values, self.n = crow, col, values, n
        self.device = values.device
        with quiet_sparse():
            self._torch = torch.sparse_csr_tensor(crow, col, values, size=(n, n), check_invariants=False)

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix(
            (self.values.detach().cpu().double().numpy(), self.col.cpu().numpy(), self.crow.cpu().numpy()),
            shape=(self.n, self.n),
        )

    def mm(self, x: torch.Tensor) -> torch.Tensor:
        """Ã @ x, in x's dtype (computed in the operator's dtype)."""
        compute = x if x.dtype == self.values.dtype else x.to(self.values.dtype)
        out = self._torch @ compute
        return out if out.dtype == x.dtype else out.to(x.dtype)


def mean_of_powers(op: SymmetricOperator, x: torch.Tensor, layers: int) -> torch.Tensor:
    """(1/(K+1)) Σ_{k=0..K} Ã^k x, accumulated in place (no layer output is kept)."""
    # the run's dtype is applied by the operator itself, not by autocast
    with torch.autocast(device_type=x.device.type, enabled=False):
        total = x.clone()
        # stay in the operator's dtype between layers (bfloat16 on CUDA), accumulate in x's dtype
        current = x if x.dtype == op.values.dtype else x.to(op.values.dtype)
        for _ in range(layers):
            current = op.mm(current)
            total += current
        return total.div_(layers + 1)


class _Propagate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, op: SymmetricOperator, layers: int) -> torch.Tensor:  # type: ignore[override]
        ctx.op, ctx.layers = op, layers
        return mean_of_powers(op, x.detach(), layers)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        # P is symmetric, so the vector-Jacobian product of P·x is P·grad.
        return mean_of_powers(ctx.op, grad.contiguous(), ctx.layers), None, None


def propagate(x: torch.Tensor, op: SymmetricOperator, layers: int) -> torch.Tensor:
    """LightGCN's layer mean (1/(K+1)) Σ_k Ã^k x, differentiable in x."""
    if layers == 0:
        return x
    return _Propagate.apply(x, op, layers)
