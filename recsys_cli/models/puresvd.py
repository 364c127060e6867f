"""PureSVD (Cremonesi et al. 2010) and its item-item variant, fitted as in the reference implementation.

    R ≈ U · diag(Σ) · Vᵀ   (randomized truncated SVD of the raw training ratings, k factors)
    puresvd:       score(u) = U_u · (diag(Σ) · Vᵀ)
    puresvd-item:  W = V · Vᵀ (top-k largest values per column, diagonal kept), score(u) = r_u · W

The factorisation is the reference implementation's call, scikit-learn's
``randomized_svd(R, n_components=k, random_state=seed)`` with every other argument at its default
(k + 10 oversamples, 4 or 7 LU-normalised power iterations, Gaussian test matrix from NumPy's
``RandomState(experiment.seed)``), in float32, written out here so that its sparse products run on
every core. An exact truncated SVD gives different scores (docs/models.md), so the randomized range
finder is kept. The fit runs on the CPU; scoring runs on the model's device. See ../shared/spec/baselines.md §4.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ConfigError, DataError, RunFailed
from recsys_cli.memory import format_bytes
from recsys_cli.models._item_item import ItemItemRecommender
from recsys_cli.models._linalg import element_size, numpy_dtype
from recsys_cli.models._tiles import Matrix
from recsys_cli.models.base import FitContext, Recommender
from recsys_cli.models.registry import register


class PureSVDConfig(ModelConfig):
    name: Literal["puresvd"] = "puresvd"
    num_factors: int = Field(100, ge=1, description="k: singular triplets kept.")


class PureSVDItemConfig(ModelConfig):
    name: Literal["puresvd-item"] = "puresvd-item"
    num_factors: int = Field(100, ge=1, description="k: singular triplets kept.")
    topk: int | None = Field(
        None, ge=1, description="Keep the k largest W_ij per column (target item), stored sparse; null keeps W dense."
    )


def factor_dtype(dtype: torch.dtype, model: str) -> torch.dtype:
    """float64 when asked for, float32 otherwise (LAPACK has no half-precision SVD)."""
    if dtype == torch.float64:
        return torch.float64
    if dtype in (torch.float16, torch.bfloat16):
        console.info(f"{model}: device.dtype {str(dtype).replace('torch.', '')} is fitted and scored in float32 "
                     "(LAPACK has no half-precision SVD)")
    return torch.float32


class _RowBlocks:
    """A CSR matrix cut into row blocks, multiplied by a dense matrix in parallel threads (SciPy's
    sparse products release the GIL; one product over the whole matrix uses one core)."""

    def __init__(self, A: sp.csr_matrix, threads: int):
        edges = np.linspace(0, A.shape[0], max(1, threads) + 1).astype(np.int64)
        self.shape = A.shape
        self.blocks = [(int(a), int(b), A[a:b]) for a, b in itertools.pairwise(edges) if b > a]

    def __matmul__(self, Q: np.ndarray) -> np.ndarray:
        out = np.empty((self.shape[0], Q.shape[1]), dtype=np.result_type(self.blocks[0][2].dtype, Q.dtype))

        def one(block: tuple[int, int, sp.csr_matrix]) -> None:
            a, b, part = block
            out[a:b] = part @ Q

        if len(self.blocks) == 1:
            one(self.blocks[0])
        else:
            with ThreadPoolExecutor(max_workers=len(self.blocks)) as pool:
                list(pool.map(one, self.blocks))
        return out


def randomized_factors(R: sp.csr_matrix, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U, Σ, Vᵀ) of scikit-learn's ``randomized_svd(R, n_components=k, random_state=seed)``, in R's dtype.

    scikit-learn's algorithm step by step (spec §4): k + 10 Gaussian columns from RandomState(seed),
    n_iter LU-normalised power iterations, QR, the SVD of the small projected matrix. The sparse
    products run in threads; the dense factorisations run on one BLAS thread, because they are
    small and OpenBLAS's spinning threads made them many times slower on a loaded machine (measured:
    sklearn's call took 75 s with BLAS threads and 17.5 s without at ML-10M scale on 2 shared cores).
    """
    from scipy import linalg
    from threadpoolctl import threadpool_limits

    if k > min(R.shape):
        raise ConfigError(f"model.num_factors is {k} but the training matrix is {R.shape[0]} × {R.shape[1]}",
                          hint=f"use model.num_factors ≤ {min(R.shape)}")
    rng = np.random.RandomState(int(seed) % 2**32)
    size = k + 10
    n_iter = 7 if k < 0.1 * min(R.shape) else 4
    transpose = R.shape[0] < R.shape[1]
    A = sp.csr_matrix(R.T if transpose else R)
    threads = max(1, torch.get_num_threads())
    A_blocks, At_blocks = _RowBlocks(A, threads), _RowBlocks(A.T.tocsr(), threads)
    Q = rng.normal(size=(A.shape[1], size)).astype(A.dtype, copy=False)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_iter):
            Q = linalg.lu(A_blocks @ Q, permute_l=True, check_finite=False)[0]
            Q = linalg.lu(At_blocks @ Q, permute_l=True, check_finite=False)[0]
        Q = linalg.qr(A_blocks @ Q, mode="economic", check_finite=False)[0]
        B = (At_blocks @ Q).T
        Uh, s, Vt = linalg.svd(B, full_matrices=False, lapack_driver="gesdd", check_finite=False)
        U = Q @ Uh
    U, s, Vt = U[:, :k], s[:k], Vt[:k]
    if transpose:
        return np.ascontiguousarray(Vt.T), s, np.ascontiguousarray(U.T)
    return U, s, Vt


@register
class PureSVD(Recommender):
    name: ClassVar[str] = "puresvd"
    Config: ClassVar[type[ModelConfig]] = PureSVDConfig

    def __init__(self, config, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(config, device=device, dtype=dtype, seed=seed)
        self.user_factors: torch.Tensor | None = None  # U, n_users × k
        self.sigma: torch.Tensor | None = None  # Σ, k
        self.item_factors: torch.Tensor | None = None  # V, n_items × k
        self._item_weights: torch.Tensor | None = None  # diag(Σ)·Vᵀ, k × n_items, on the device
        self.fit_info: dict[str, Any] = {}

    def _set(self, U: torch.Tensor, s: torch.Tensor, V: torch.Tensor) -> None:
        dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        if self.device.type == "mps" and dtype == torch.float64:
            raise ConfigError("Apple MPS has no float64", hint="set device.dtype=float32 or device.accelerator=cpu")
        self.user_factors, self.sigma, self.item_factors = (t.to(dtype) for t in (U, s, V))
        self.n_users, self.n_items = U.shape[0], V.shape[0]
        # ΣVᵀ first, as the reference implementation does, so the score is one product per block of users
        self._item_weights = (self.sigma[:, None] * self.item_factors.T).contiguous().to(self.device)
        self._user_factors_dev = self.user_factors.to(self.device)

    def fit(self, train: sp.csr_matrix, ctx: FitContext) -> None:
        started = time.perf_counter()
        dtype = factor_dtype(self.dtype, "PureSVD")
        k = self.config.num_factors
        R = sp.csr_matrix(train, dtype=numpy_dtype(dtype), copy=True)
        R.eliminate_zeros()
        console.info(f"PureSVD: randomized SVD of {R.shape[0]:,} × {R.shape[1]:,} with {k} factors "
                     f"in {str(dtype).replace('torch.', '')} (seed {ctx.seed})")
        U, s, Vt = randomized_factors(R, k, ctx.seed)
        svd_seconds = time.perf_counter() - started
        self._set(torch.from_numpy(U), torch.from_numpy(s), torch.from_numpy(np.ascontiguousarray(Vt.T)))
        self.fit_info = {"svd_seconds": round(svd_seconds, 3), "fit_seconds": round(time.perf_counter() - started, 3)}
        if ctx.timing is not None:
            ctx.timing.figures["puresvd_fit"] = dict(self.fit_info)
        console.info(f"PureSVD: SVD {svd_seconds:.2f} s")

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._item_weights is None:
            raise RunFailed("puresvd is not fitted", hint="fit or load the model before scoring")
        return self._user_factors_dev[users.to(self.device)] @ self._item_weights

    def state(self) -> dict[str, torch.Tensor]:
        if self.user_factors is None:
            raise RunFailed("puresvd is not fitted", hint="fit the model before saving it")
        return {"user_factors": self.user_factors, "sigma": self.sigma, "item_factors": self.item_factors}

    def load_state(self, state: dict[str, torch.Tensor], train: sp.csr_matrix) -> None:
        U, s, V = state["user_factors"], state["sigma"], state["item_factors"]
        if (U.shape[0], V.shape[0]) != tuple(train.shape):
            raise DataError(f"the saved factors are for {U.shape[0]} × {V.shape[0]} but the training matrix is "
                            f"{train.shape[0]} × {train.shape[1]}", hint="evaluate the run with the split it was trained on")
        self._set(U, s, V)

    def extra_metadata(self) -> dict[str, Any]:
        return {"fit": self.fit_info}


@register
class PureSVDItem(ItemItemRecommender):
    name: ClassVar[str] = "puresvd-item"
    Config: ClassVar[type[ModelConfig]] = PureSVDItemConfig
    matrix_name: ClassVar[str] = "W"
    display_name: ClassVar[str] = "PureSVD-item"
    cpu_only: ClassVar[bool] = True  # the SVD runs in SciPy; W moves to the run's device for scoring
    topk_by_abs: ClassVar[bool] = False  # the largest signed values are kept, as in the reference implementation
    half_precision_note: ClassVar[str] = "LAPACK has no half-precision SVD"

    def memory_estimate(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        size, n = element_size(dtype), X.shape[1]
        # the power iterations hold a few (users + items) × (k + 10) blocks and two copies of X
        svd = 4 * (X.shape[0] + n) * (self.config.num_factors + 10) * size + 2 * X.nnz * (size + 4)
        return n * n * size + svd, f"{n:,}² items × {size} B + {format_bytes(svd)} of SVD blocks and data"

    def describe(self) -> str:
        return f"k = {self.config.num_factors}"

    def compute_W(self, X: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype) -> Matrix:
        started = time.perf_counter()
        _, _, Vt = randomized_factors(X, self.config.num_factors, ctx.seed)
        svd_seconds = time.perf_counter() - started
        V = torch.from_numpy(np.ascontiguousarray(Vt.T)).to(device)
        self.fit_info.update(svd_seconds=round(svd_seconds, 3))
        console.info(f"PureSVD-item: SVD {svd_seconds:.2f} s")
        return V @ V.T  # the diagonal is kept, as in the reference implementation
