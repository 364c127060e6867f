"""iALS (Hu, Koren & Volinsky 2008): implicit alternating least squares, as the reference
implementation's IALSRecommender computes it.

With p_ui = 1 on every stored entry and confidences c_ui = 1 + alpha·r_ui (linear) or
1 + alpha·ln(1 + r_ui/epsilon) (log), one epoch solves, for every user with ratings, then for every
item with ratings (the other side fixed):

    x_u = (YᵀY + Y_Iᵀ diag(c_u − 1) Y_I + reg·I)⁻¹ · Y_Iᵀ c_u          score(u) = x_u · Yᵀ

Users and items without ratings are never updated. Initialisation as the reference
implementation's, with its bug fixed: item factors k^(−1/2)·U[0, 1) drawn from NumPy's
``RandomState(experiment.seed)``, user factors 0 (the reference leaves them uninitialised).
``solver: cholesky`` solves each system exactly (batched Cholesky over users grouped by length);
``solver: cg`` takes ``cg_steps`` conjugate-gradient steps from the previous factors for all rows at
once (implicit's method). Epochs run through the training engine: validation every
``training.eval_every`` epochs, early stopping, best factors kept.
See ../shared/spec/baselines.md §5 and docs/training.md.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models._linalg import quiet_sparse
from recsys_cli.models.registry import register
from recsys_cli.training.engine import TrainableRecommender, Trainer

# Entries of the gathered (rows × longest row × k) block of the Cholesky solver (16 Mi: 64 MB in float32).
GATHER_ENTRIES = 1 << 24


class IALSConfig(ModelConfig):
    name: Literal["ials"] = "ials"
    num_factors: int = Field(20, ge=1, description="k: latent factors per user and item.")
    confidence_scaling: Literal["linear", "log"] = Field(
        "linear", description="c = 1 + alpha·r (linear) or 1 + alpha·ln(1 + r/epsilon) (log)."
    )
    alpha: float = Field(1.0, ge=0, description="Confidence weight of a rating.")
    epsilon: float = Field(1.0, gt=0, description="Scale of the rating in log confidence scaling.")
    reg: float = Field(1e-3, gt=0, description="Ridge penalty added to every normal equation (not scaled).")
    solver: Literal["cholesky", "cg"] = Field(
        "cg", description="cholesky: exact solves (as in the reference implementation); cg: cg_steps conjugate-gradient steps (faster)."
    )
    cg_steps: int = Field(3, ge=1, description="Conjugate-gradient steps per half-epoch (solver: cg).")


def confidence(values: np.ndarray, scaling: str, alpha: float, epsilon: float) -> np.ndarray:
    """c_ui for the stored rating values, in float32 (as the reference implementation stores them)."""
    values = values.astype(np.float32)
    if scaling == "linear":
        return (1.0 + alpha * values).astype(np.float32)
    return (1.0 + alpha * np.log1p(values / epsilon)).astype(np.float32)


class Interactions:
    """One side's view of the confidence matrix (rows: the side being solved), on a device.

    ``C`` is the sparse CSR tensor of confidences c; ``warm`` marks rows with at least one entry.
    The CSR arrays are kept for products with other per-entry weights and for the gathers of the
    Cholesky solver.
    """

    def __init__(self, conf: sp.csr_matrix, device: torch.device, dtype: torch.dtype):
        conf = sp.csr_matrix(conf)
        conf.sort_indices()
        self.shape = conf.shape
        # 32-bit indices where they fit: the CPU's sparse × dense product runs ~35 % faster with them
        # (MovieLens-10M's 6.3 M ratings, 64 factors: 30 ms against 47 ms)
        index = np.int32 if max(conf.nnz, *conf.shape) < 2**31 - 1 else np.int64
        self.indptr = torch.from_numpy(conf.indptr.astype(index)).to(device)
        self.indices = torch.from_numpy(conf.indices.astype(index)).to(device)
        self.values = torch.from_numpy(conf.data).to(device, dtype)
        self.counts = np.diff(conf.indptr)
        self.warm = torch.from_numpy(self.counts > 0).to(device)
        with quiet_sparse():
            self.C = torch.sparse_csr_tensor(self.indptr, self.indices, self.values, size=self.shape)

    def dots(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """⟨x_u, y_i⟩ at every stored (u, i), in storage order."""
        with quiet_sparse():
            return torch.sparse.sampled_addmm(self.C, X, Y.T, beta=0.0).values()

    def weighted_sum(self, weights: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Σ_i w_ui · y_i per row u, for per-entry weights in storage order."""
        with quiet_sparse():
            W = torch.sparse_csr_tensor(self.indptr, self.indices, weights, size=self.shape)
            return torch.sparse.mm(W, Y)


def row_groups(side: Interactions, Y: torch.Tensor, budget: int):
    """(rows, c, Yg) for groups of warm rows: ``Yg`` (rows × width × k) holds the factors of each row's
    entries, padded to the group's longest row, and ``c`` (rows × width) their confidences (0 in the
    padding, which gathers row 0). Rows are sorted by length so the padding stays small, and each
    group's gather holds at most ``budget`` entries (at least one row)."""
    k = Y.shape[1]
    order = np.argsort(side.counts, kind="stable")
    order = order[side.counts[order] > 0]
    lengths = side.counts[order]
    rows_budget = max(1, budget // k)
    a = 0
    while a < order.size:
        # the largest b with (b − a) · lengths[b − 1] ≤ budget / k (lengths ascend)
        span = np.arange(1, order.size - a + 1) * lengths[a:]
        b = a + max(1, int(np.searchsorted(span, rows_budget, side="right")))
        rows = torch.from_numpy(order[a:b]).to(Y.device)
        offsets = torch.arange(int(lengths[b - 1]), device=Y.device)
        starts, counts = side.indptr[rows], side.indptr[rows + 1] - side.indptr[rows]
        valid = offsets[None, :] < counts[:, None]
        flat = torch.where(valid, starts[:, None] + offsets[None, :], 0)
        yield rows, torch.where(valid, side.values[flat], 0), Y[side.indices[flat]]
        a = b


def regularised_gram(Y: torch.Tensor, reg: float) -> torch.Tensor:
    gram = Y.T @ Y
    gram.diagonal().add_(reg)
    return gram


def solve_cholesky(side: Interactions, Y: torch.Tensor, reg: float) -> torch.Tensor:
    """Exact x_u = (YᵀY + Y_Iᵀ diag(c_u − 1) Y_I + reg·I)⁻¹ Y_Iᵀ c_u for every warm row (cold rows: 0),
    one batched product and one batched Cholesky per group of rows."""
    gram = regularised_gram(Y, reg)
    X = torch.zeros((side.shape[0], Y.shape[1]), dtype=Y.dtype, device=Y.device)
    for rows, c, Yg in row_groups(side, Y, GATHER_ENTRIES):
        c1 = torch.where(c > 0, c - 1, 0)
        A = torch.bmm((Yg * c1.unsqueeze(-1)).transpose(1, 2), Yg) + gram
        rhs = torch.bmm(c.unsqueeze(1), Yg).transpose(1, 2)  # Y_Iᵀ c_u
        L, _ = torch.linalg.cholesky_ex(A)
        X[rows] = torch.cholesky_solve(rhs, L).squeeze(-1)
    return X


def solve_cg(side: Interactions, Y: torch.Tensor, X: torch.Tensor, reg: float, steps: int) -> torch.Tensor:
    """``steps`` conjugate-gradient steps on every warm row's normal equations, from X (cold rows keep X).

    A·x_u = (YᵀY + reg·I)·x_u + Σ_i (c_ui − 1)·⟨y_i, x_u⟩·y_i is applied to all rows at once with one
    sampled product (the dots at the stored entries) and one sparse × dense product. (Measured on the
    shared 2-core CPU at 1M ratings, 64 factors: 4× faster than gathering each group of rows' factors
    and applying A with batched products, and 2–4× faster than the exact batched Cholesky solve.)
    """
    gram = regularised_gram(Y, reg)
    c1 = side.values - 1

    def apply(P: torch.Tensor) -> torch.Tensor:
        return P @ gram + side.weighted_sum(c1 * side.dots(P, Y), Y)

    x = X.clone()
    # r = Y_Iᵀc_u − A·x_u, with the two sparse products over the same entries folded into one
    r = side.weighted_sum(side.values - c1 * side.dots(x, Y), Y) - x @ gram
    p = r.clone()
    rs_old = (r * r).sum(1)
    tiny = torch.finfo(X.dtype).tiny
    for _ in range(steps):
        Ap = apply(p)
        step = (rs_old / (p * Ap).sum(1).clamp_min(tiny)).unsqueeze(1)
        x.addcmul_(step, p)
        r.addcmul_(step, Ap, value=-1)
        rs_new = (r * r).sum(1)
        p = r + (rs_new / rs_old.clamp_min(tiny)).unsqueeze(1) * p
        rs_old = rs_new
    return torch.where(side.warm.unsqueeze(1), x, X)


def objective(users: Interactions, X: torch.Tensor, Y: torch.Tensor, reg: float) -> float:
    """Σ_ui c_ui (p_ui − x_uᵀy_i)² + reg·(‖X‖² + ‖Y‖²) over all pairs (unstored: c = 1, p = 0)."""
    s = users.dots(X, Y)
    observed = (users.values * (1 - s) ** 2 - s * s).sum()
    everything = ((X.T @ X) * (Y.T @ Y)).sum()
    return float(observed + everything + reg * ((X * X).sum() + (Y * Y).sum()))


def initial_item_factors(n_items: int, k: int, seed: int) -> np.ndarray:
    """k^(−1/2) · U[0, 1), float64, from RandomState(seed), in C order: the reference implementation's draw,
    which it takes from NumPy's global RNG."""
    return np.random.RandomState(int(seed) % 2**32).random_sample((n_items, k)) / math.sqrt(k)


@register
class IALS(TrainableRecommender):
    name: ClassVar[str] = "ials"
    Config: ClassVar[type[ModelConfig]] = IALSConfig
    uses_optimizer: ClassVar[bool] = False

    def build(self, train: sp.csr_matrix) -> None:
        k = self.config.num_factors
        self.register_buffer("user_factors", torch.zeros(self.n_users, k, dtype=torch.float64))
        items = initial_item_factors(self.n_items, k, self.seed)
        self.register_buffer("item_factors", torch.from_numpy(items))

    def prepare(self, train: sp.csr_matrix) -> None:
        c = self.config
        R = sp.csr_matrix(train, dtype=np.float32, copy=True)
        R.eliminate_zeros()
        R.data = confidence(R.data, c.confidence_scaling, c.alpha, c.epsilon)
        dtype = self.user_factors.dtype
        self.users = Interactions(R, self.device, dtype)
        self.items = Interactions(R.T.tocsr(), self.device, dtype)

    def train_epoch(self, trainer: Trainer, train: sp.csr_matrix, epoch: int,
                    generator: torch.Generator) -> dict[str, float]:
        c = self.config
        with torch.no_grad():
            if c.solver == "cholesky":
                self.user_factors.copy_(solve_cholesky(self.users, self.item_factors, c.reg))
                warm = self.items.warm.unsqueeze(1)  # cold items keep their initial factors
                self.item_factors.copy_(torch.where(warm, solve_cholesky(self.items, self.user_factors, c.reg),
                                                    self.item_factors))
            else:
                self.user_factors.copy_(solve_cg(self.users, self.item_factors, self.user_factors, c.reg,
                                                 c.cg_steps))
                self.item_factors.copy_(solve_cg(self.items, self.user_factors, self.item_factors, c.reg,
                                                 c.cg_steps))
            loss = objective(self.users, self.user_factors, self.item_factors, c.reg)
        return {"loss": loss, "samples": int(self.users.values.numel())}

    def score(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_factors[users.to(self.device)] @ self.item_factors.T

    def extra_metadata(self) -> dict[str, Any]:
        return {**super().extra_metadata(), "solver": self.config.solver}
