"""Machinery shared by the closed-form item-item models (EASE^R, GF-CF).

Both models learn one items × items matrix W from the Gram matrix XᵀX and score a user as x_u · W.
What they share lives here: building XᵀX densely without densifying X, the memory guard and the
GPU → CPU fallback, the in-place SPD inverse, per-column top-k sparsification, block scoring, and
saving W dense or sparse.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli import console
from recsys_cli.devices import available_memory_bytes
from recsys_cli.errors import DataError, ResourceError, RunFailed
from recsys_cli.models.base import FitContext, Recommender, csr_to_torch

# A user row with more than this share of all items is cheaper to add to XᵀX as a dense rank-1
# update (GEMM, ~I² flops) than through sparse products (~nnz² scattered adds): the crossover was
# measured near 5 % on a 2-core AVX-512 CPU for 10k items, and the heavy tail of real rating data
# puts most of the sparse work in those few users.
HEAVY_USER_SHARE = 0.05
# Below this many items the LAPACK inverse runs on one thread: it takes well under a second either
# way, and OpenBLAS's spinning threads, when another process holds a core, turned 0.05 s into 4 s.
SINGLE_THREAD_LAPACK = 3000
# Entries of one dense block of user rows (64 Mi entries = 256 MB in float32).
DENSE_BLOCK_ENTRIES = 1 << 26
# Columns per block when taking per-column top-k, and rows per block when mirroring a triangle.
COLUMN_BLOCK = 512
# Columns per tile of a CPU-resident W: a block of 1000 users' scores for one tile (1 MB in float32)
# stays in a core's L2 cache while the tile's rows stream past (256 was fastest of 64..1024).
TILE_WIDTH = 256


@contextlib.contextmanager
def quiet_sparse() -> Iterator[None]:
    """Silence torch's one-time notes that sparse CSR tensors are beta (they are used here on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Ss]parse (CSR tensor support|invariant checks)")
        yield


def compute_dtype(dtype: torch.dtype, model: str) -> torch.dtype:
    """float64 when asked for; float32 otherwise (the factorisations are unstable in half precision)."""
    if dtype == torch.float64:
        return torch.float64
    if dtype in (torch.float16, torch.bfloat16):
        console.info(f"{model}: device.dtype {str(dtype).replace('torch.', '')} is computed and scored in float32 "
                     "(a Cholesky factorisation in half precision is not accurate enough)")
    return torch.float32


def numpy_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.1f} KiB"


# ---------------------------------------------------------------------------------------------
# memory guard
# ---------------------------------------------------------------------------------------------
def gram_memory_bytes(X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, int]:
    """(bytes of the items × items matrix, bytes of the working buffers) that :func:`gram` needs."""
    n_items = X.shape[1]
    size = element_size(dtype)
    matrix = n_items * n_items * size
    counts = np.diff(X.indptr)
    dense_users = int((counts > 0).sum()) if device.type != "cpu" else int((counts > HEAVY_USER_SHARE * n_items).sum())
    dense_block = min(dense_users, max(1, DENSE_BLOCK_ENTRIES // max(n_items, 1))) * n_items * size
    if device.type != "cpu":
        return matrix, dense_block + X.nnz * (size + 8) + (X.shape[0] + 1) * 8
    # two transposed copies of X, plus per thread a column slice of X in two layouts and one block
    # of the sparse product with its shifted indices (measured: 0.9 GB above the data at ML-10M scale)
    threads = max(1, torch.get_num_threads())
    rows = -(-n_items // _item_blocks(n_items, threads))
    per_thread = 2 * X.nnz * (size + 4) + rows * n_items * (size + 8)
    return matrix, dense_block + 3 * X.nnz * (size + 4) + threads * per_thread


def plan_fit_device(model: str, ctx: FitContext, estimate: Callable[[torch.device], tuple[int, str]]) -> torch.device:
    """The device to fit on, after checking the memory estimate against the budget.

    ``estimate(device)`` returns (bytes needed, how they add up) for fitting on ``device``.
    A GPU that is short of memory hands the fit to the CPU when the machine's RAM can hold it;
    anything else that does not fit stops before allocating, with the estimate and the fix.
    """
    device = ctx.device
    budget = ctx.memory_budget_bytes if ctx.memory_budget_bytes is not None else available_memory_bytes(device)
    need, formula = estimate(device)
    if need <= budget:
        return device
    if device.type != "cpu":
        cpu = torch.device("cpu")
        cpu_need, _ = estimate(cpu)
        cpu_free = available_memory_bytes(cpu)
        if cpu_need <= cpu_free:
            console.warn(
                f"{model} needs about {format_bytes(need)} on {device} ({formula}) but only {format_bytes(budget)} "
                f"is available there; fitting on the CPU instead ({format_bytes(cpu_need)} of "
                f"{format_bytes(cpu_free)} free RAM)"
            )
            return cpu
    raise ResourceError(
        f"{model} needs about {format_bytes(need)} on {device} ({formula}) but the memory budget is "
        f"{format_bytes(budget)}",
        hint=f"set device.memory_budget_gb to at least {need / 2**30:.2f} if the memory is free, or run on a "
        "machine with more memory, or keep fewer items (the need grows with items²)",
    )


# ---------------------------------------------------------------------------------------------
# linear algebra
# ---------------------------------------------------------------------------------------------
def _item_blocks(n_items: int, threads: int) -> int:
    # several blocks per thread so that the triangular (uneven) work balances out
    return max(1, min(n_items, 4 * threads))


def _dense_rows(X: sp.csr_matrix, rows: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    block = X[rows]
    if device.type == "cpu":
        return torch.from_numpy(block.toarray()).to(dtype)
    with quiet_sparse():
        return csr_to_torch(block, device=device, dtype=dtype).to_dense()


def gram(
    X: sp.csr_matrix, *, device: torch.device, dtype: torch.dtype, full: bool = True,
    heavy_share: float | None = None,
) -> torch.Tensor:
    """XᵀX as a dense items × items tensor on ``device``, never densifying X as a whole.

    On the CPU, light users go through sparse products restricted to the upper triangle (half the
    work), run on item blocks in parallel threads (SciPy releases the GIL), and heavy users through
    dense GEMM; on an accelerator every user goes through dense GEMM in blocks of rows. With
    ``full=False`` only the upper triangle (j ≥ i) is guaranteed, which is all a Cholesky needs.
    """
    n_users, n_items = X.shape
    X = sp.csr_matrix(X, dtype=numpy_dtype(dtype))
    counts = np.diff(X.indptr)
    if device.type == "cpu":
        share = HEAVY_USER_SHARE if heavy_share is None else heavy_share
        heavy = counts > share * n_items
        light_rows = np.flatnonzero(~heavy & (counts > 0))
    else:
        heavy = counts > 0
        light_rows = np.zeros(0, dtype=np.int64)
    heavy_rows = np.flatnonzero(heavy)

    G = torch.zeros((n_items, n_items), dtype=dtype, device=device)
    if light_rows.size:
        # written before the dense part: toarray(out=...) overwrites its rows
        _sparse_upper_gram_into(X[light_rows], G.numpy())
    block = max(1, DENSE_BLOCK_ENTRIES // max(n_items, 1))
    for start in range(0, heavy_rows.size, block):
        D = _dense_rows(X, heavy_rows[start : start + block], device, dtype)
        G.addmm_(D.T, D)
        del D
    if full and light_rows.size:
        mirror_upper_(G)
    return G


def _sparse_upper_gram_into(X: sp.csr_matrix, out: np.ndarray) -> None:
    n_items = X.shape[1]
    threads = max(1, torch.get_num_threads())
    XT = X.T.tocsr()  # items × users
    Xc = X.tocsc()
    edges = np.linspace(0, n_items, _item_blocks(n_items, threads) + 1).astype(np.int64)

    def rows_of_upper(k: int) -> None:
        a, b = int(edges[k]), int(edges[k + 1])
        if a == b:
            return
        part = (XT[a:b] @ Xc[:, a:]).tocsr()  # rows a..b, columns a..n
        shifted = sp.csr_matrix((part.data, part.indices + a, part.indptr), shape=(b - a, n_items))
        shifted.toarray(out=out[a:b])

    # the first blocks carry the most work (widest column range): they are queued first
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(rows_of_upper, range(len(edges) - 1)))


def mirror_upper_(M: torch.Tensor) -> torch.Tensor:
    """Copy the upper triangle of a square matrix onto its lower triangle, in place."""
    n = M.shape[0]
    for a in range(0, n, COLUMN_BLOCK):
        b = min(n, a + COLUMN_BLOCK)
        if a:
            M[a:b, :a] = M[:a, a:b].T
        diag = M[a:b, a:b]
        diag.copy_(torch.triu(diag) + torch.triu(diag, 1).T)
    return M


def spd_inverse_(G: torch.Tensor, *, ridge: float, what: str, hint: str) -> torch.Tensor:
    """(G + ridge·I)⁻¹ for a symmetric G whose upper triangle is set; G is consumed.

    On the CPU this is LAPACK potrf + potri in place (no second n × n buffer); elsewhere torch's
    Cholesky and cholesky_inverse (two n × n buffers at the peak: pass G without keeping a reference).
    On the CPU only the upper triangle of the result (in G's storage) is set; elsewhere all of it.
    """
    G.diagonal().add_(ridge)
    if G.device.type == "cpu":
        from scipy.linalg import lapack

        from threadpoolctl import threadpool_limits

        A = G.numpy().T  # Fortran-ordered view: LAPACK's lower triangle is our upper triangle
        potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (A,))
        with threadpool_limits(limits=1 if A.shape[0] < SINGLE_THREAD_LAPACK else None, user_api="blas"):
            factor, info = potrf(A, lower=1, overwrite_a=1, clean=0)
            if info != 0:
                raise RunFailed(f"{what} is not positive definite (Cholesky failed at column {info})", hint=hint)
            inverse, info = potri(factor, lower=1, overwrite_c=1)
        if info != 0:
            raise RunFailed(f"{what} is singular (potri failed at column {info})", hint=hint)
        if not np.shares_memory(inverse, A):  # LAPACK wrappers copy when they must; keep our buffer
            G.numpy().T[...] = inverse
        return G
    return _torch_spd_inverse(G, what=what, hint=hint)


def _torch_spd_inverse(G: torch.Tensor, *, what: str, hint: str) -> torch.Tensor:
    # off the CPU, gram() fills both triangles, so torch may read the lower one
    L, info = torch.linalg.cholesky_ex(G, upper=False)
    if int(info.item()) != 0:
        raise RunFailed(f"{what} is not positive definite (Cholesky failed at column {int(info.item())})", hint=hint)
    del G
    return torch.cholesky_inverse(L)


class ColumnTiles:
    """A dense n × m matrix kept as contiguous column tiles in one flat CPU buffer.

    Tile k holds columns ``edges[k]..edges[k+1]`` as a C-ordered n × w block at offset n·edges[k].
    Scoring multiplies a block of users' sparse rows, item by item (CSC), by one tile at a time, so
    the tile's rows and the block's output columns stay in cache and each entry of W is read once
    per block of users rather than once per rating: on a 2-core CPU that is 2-4× the throughput of
    one sparse × dense product over the whole matrix, which is bound by memory bandwidth.
    """

    def __init__(self, flat: torch.Tensor, n_rows: int, edges: np.ndarray):
        self.flat, self.n_rows, self.edges = flat, int(n_rows), np.asarray(edges, dtype=np.int64)
        self._arrays = [self.tile(k).numpy() for k in range(len(self.edges) - 1)]

    @staticmethod
    def default_edges(n_cols: int, width: int = TILE_WIDTH) -> np.ndarray:
        return np.unique(np.append(np.arange(0, n_cols, width), n_cols)).astype(np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_rows, int(self.edges[-1])

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def tile(self, k: int) -> torch.Tensor:
        a, b = int(self.edges[k]), int(self.edges[k + 1])
        return self.flat[self.n_rows * a : self.n_rows * b].view(self.n_rows, b - a)

    def blocks(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        for k in range(len(self.edges) - 1):
            yield int(self.edges[k]), int(self.edges[k + 1]), self.tile(k)

    @classmethod
    def from_upper_(cls, M: torch.Tensor, width: int = TILE_WIDTH) -> ColumnTiles:
        """Tiles of the symmetric matrix whose upper triangle M holds, built in M's own storage.

        Tile k occupies the storage of M's rows a..b. Going from the last tile to the first, the
        rows a tile needs (its own, for the diagonal block and the part below it by symmetry, and
        the rows above, still untouched) are read before that storage is overwritten.
        """
        n = M.shape[0]
        if M.shape != (n, n) or not M.is_contiguous() or M.device.type != "cpu":
            raise ValueError("from_upper_ needs a contiguous square CPU tensor")
        edges = cls.default_edges(n, width)
        flat = M.view(-1)
        for k in range(len(edges) - 2, -1, -1):
            a, b = int(edges[k]), int(edges[k + 1])
            tile = torch.empty((n, b - a), dtype=M.dtype)
            tile[:a] = M[:a, a:b]
            diag = M[a:b, a:b]
            tile[a:b] = torch.triu(diag) + torch.triu(diag, 1).T
            tile[b:] = M[a:b, b:].T
            flat[n * a : n * b].view(n, b - a).copy_(tile)
        return cls(flat, n, edges)

    @classmethod
    def from_dense(cls, M: torch.Tensor, width: int = TILE_WIDTH) -> ColumnTiles:
        n, m = M.shape
        edges = cls.default_edges(m, width)
        flat = torch.empty(n * m, dtype=M.dtype)
        out = cls(flat, n, edges)
        for a, b, tile in out.blocks():
            tile.copy_(M[:, a:b])
        return out

    def to_dense(self) -> torch.Tensor:
        return torch.cat([tile for _, _, tile in self.blocks()], dim=1)

    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def matmul_csr(self, rows: sp.csr_matrix) -> torch.Tensor:
        """rows @ W for a sparse block of rows, as a dense tensor."""
        items_major = sp.csc_matrix(rows, dtype=self._arrays[0].dtype if self._arrays else np.float32)
        out = np.empty((rows.shape[0], self.shape[1]), dtype=items_major.dtype)

        def one(k: int) -> None:
            out[:, self.edges[k] : self.edges[k + 1]] = items_major @ self._arrays[k]

        threads = max(1, torch.get_num_threads())
        if threads == 1 or len(self._arrays) == 1:
            for k in range(len(self._arrays)):
                one(k)
        else:  # SciPy's sparse products release the GIL: tiles run in parallel threads
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(one, range(len(self._arrays))))
        return torch.from_numpy(out)


Matrix = torch.Tensor | ColumnTiles


def column_blocks(W: Matrix) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(a, b, columns a..b of W) for a tiled or a dense W; in-place edits reach W."""
    if isinstance(W, ColumnTiles):
        yield from W.blocks()
        return
    for a in range(0, W.shape[1], COLUMN_BLOCK):
        b = min(W.shape[1], a + COLUMN_BLOCK)
        yield a, b, W[:, a:b]


def symmetric_matrix(M: torch.Tensor) -> Matrix:
    """The full symmetric matrix from :func:`spd_inverse_` or ``gram(full=False)``: tiles on the CPU
    (built in place from the upper triangle), the dense tensor (already full) elsewhere."""
    return ColumnTiles.from_upper_(M) if M.device.type == "cpu" else M


def matrix_bytes(W: Matrix) -> int:
    if isinstance(W, ColumnTiles):
        return W.nbytes()
    if W.layout == torch.sparse_csr:
        return sum(x.numel() * x.element_size() for x in (W.crow_indices(), W.col_indices(), W.values()))
    return W.numel() * W.element_size()


def is_sparse(W: Matrix) -> bool:
    return isinstance(W, torch.Tensor) and W.layout == torch.sparse_csr


def topk_columns(W: Matrix, k: int, *, by_abs: bool) -> torch.Tensor:
    """Keep exactly ``k`` entries per column (largest values, or largest |values|) as sparse CSR."""
    n_rows, n_cols = W.shape
    k = min(k, n_rows)
    rows, cols, vals = [], [], []
    for a, b, columns in column_blocks(W):
        block = columns.T.contiguous()  # one row per column of W
        key = block.abs() if by_abs else block
        idx = torch.topk(key, k, dim=1, sorted=False).indices
        rows.append(idx.reshape(-1))
        cols.append(torch.arange(a, b, device=block.device).repeat_interleave(k))
        vals.append(torch.gather(block, 1, idx).reshape(-1))
        del block, key
    indices = torch.stack([torch.cat(rows), torch.cat(cols)])
    with quiet_sparse():
        coo = torch.sparse_coo_tensor(indices, torch.cat(vals), (n_rows, n_cols)).coalesce()
        return coo.to_sparse_csr()


def same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 are the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def place_for_scoring(model: str, W: Matrix, device: torch.device, budget: int | None = None) -> Matrix:
    """W in the form that scores fastest on ``device``: tiles on the CPU, a dense or sparse tensor on
    an accelerator. A device too short of memory for W keeps it on the CPU, with a warning."""
    if device.type == "mps":
        console.info(f"{model}: scoring on the CPU (sparse products are not supported on Apple MPS)")
        device = torch.device("cpu")
    if device.type != "cpu" and not same_device(W.device, device):
        need = matrix_bytes(W) * 5 // 4  # W plus room for a block of scores
        free = available_memory_bytes(device) if budget is None else min(budget, available_memory_bytes(device))
        if need > free:
            console.warn(f"{model}: its {format_bytes(matrix_bytes(W))} matrix does not fit the "
                         f"{format_bytes(free)} available on {device}; scoring on the CPU")
            return place_for_scoring(model, W, torch.device("cpu"))
        return (W.to_dense() if isinstance(W, ColumnTiles) else W).to(device)
    if isinstance(W, ColumnTiles):
        return W
    if device.type == "cpu":
        return W.cpu() if is_sparse(W) else ColumnTiles.from_dense(W.cpu())
    return W


# ---------------------------------------------------------------------------------------------
# the shared recommender
# ---------------------------------------------------------------------------------------------
class ItemItemRecommender(Recommender):
    """Scores x_u · W with W an items × items matrix: column tiles on the CPU, a dense tensor on an
    accelerator, or sparse CSR after top-k."""

    matrix_name: ClassVar[str] = "W"
    display_name: ClassVar[str] = "item-item model"
    topk_by_abs: ClassVar[bool] = False

    def preferred_block_size(self) -> int | None:
        # Column-tile scoring on the CPU amortises each tile over the block's users: the course's
        # 1000-user blocks run ~20 % faster than the evaluator's 24 MiB CPU default at ML-10M size.
        if self.device.type == "cpu" and self.n_items:
            return max(1, min(1000, int(5e8 / self.n_items)))
        return None

    def __init__(self, config, *, device: torch.device, dtype: torch.dtype, seed: int = 0):
        super().__init__(config, device=device, dtype=dtype, seed=seed)
        self.W: Matrix | None = None
        self.X: sp.csr_matrix | None = None  # the user rows scores are computed from (CPU)
        self.fit_info: dict[str, Any] = {}

    # subclasses: the rows the model multiplies W with (e.g. binarised or normalised train)
    def prepare_rows(self, train: sp.csr_matrix, dtype: torch.dtype) -> sp.csr_matrix:
        return sp.csr_matrix(train, dtype=numpy_dtype(dtype), copy=True)

    def _score_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    def dense_W(self) -> torch.Tensor:
        """W as one dense (n_items × n_items) tensor (a copy when W is tiled)."""
        if isinstance(self.W, ColumnTiles):
            return self.W.to_dense()
        return self.W.to_dense() if is_sparse(self.W) else self.W

    def _finish_fit(self, W: Matrix, ctx: FitContext, fit_device: torch.device, started: float) -> None:
        topk = getattr(self.config, "topk", None)
        if topk is not None:
            W = topk_columns(W, topk, by_abs=self.topk_by_abs)
        self.W = place_for_scoring(self.display_name, W, self.device, ctx.memory_budget_bytes)
        self.device = self.W.device
        sparse = is_sparse(self.W)
        self.fit_info.update(fit_device=str(fit_device), fit_seconds=round(time.perf_counter() - started, 3),
                             stored="sparse" if sparse else "dense",
                             compute_dtype=str(self._score_dtype()).replace("torch.", ""),
                             nnz=int(self.W.values().numel()) if sparse else self.n_items**2)
        if ctx.timing is not None:
            ctx.timing.figures[f"{self.name}_fit"] = dict(self.fit_info)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self.W is None or self.X is None:
            raise RunFailed(f"{self.name} is not fitted", hint="fit or load the model before scoring")
        rows = self.X[users.detach().cpu().numpy().astype(np.int64, copy=False)]
        if isinstance(self.W, ColumnTiles):
            return self.W.matmul_csr(rows)
        with quiet_sparse():
            xb = csr_to_torch(rows, device=self.W.device, dtype=self.W.dtype)
            if is_sparse(self.W):
                return torch.sparse.mm(xb, self.W).to_dense()
            return torch.sparse.mm(xb, self.W)

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
        name, n = self.matrix_name, train.shape[1]
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
            raise DataError(f"the saved {name} is {tuple(W.shape)} but the training matrix has {n} items",
                            hint="evaluate the run with the split it was trained on")
        self.X = self.prepare_rows(train, dtype)
        self.n_users, self.n_items = train.shape
        self.W = place_for_scoring(self.display_name, W, self.device)
        self.device = self.W.device

    def extra_metadata(self) -> dict[str, Any]:
        return {"fit": self.fit_info}
