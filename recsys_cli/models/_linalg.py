"""Dense linear algebra of the item-item models: XᵀX without densifying X, an in-place SPD inverse,
mirroring a triangle, and the small dtype helpers they share."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli.errors import RunFailed
from recsys_cli.models.base import csr_to_torch

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
# Rows per block when mirroring a triangle.
MIRROR_BLOCK = 512


@contextlib.contextmanager
def quiet_sparse() -> Iterator[None]:
    """Silence torch's one-time notes that sparse CSR/CSC tensors are beta (they are used here on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Ss]parse (CS[RC] tensor support|invariant checks)")
        yield


def numpy_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings mean something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    n_items = X.shape[1]
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
    for a in range(0, n, MIRROR_BLOCK):
        b = min(n, a + MIRROR_BLOCK)
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


def sparse_product_into(left: sp.csr_matrix, right: sp.csr_matrix, out: np.ndarray) -> None:
    """out += left @ right for CSR operands and a dense C-ordered ``out`` (its dtype is the product's).

    The block is nearly dense, so SciPy's first pass (counting the product's nonzeros to size it)
    buys nothing: its kernels are called directly with the dense size as the bound (38 % less CPU
    than ``left @ right`` then ``toarray`` at ML-10M scale). Falls back to the public API if SciPy's
    private kernels change.
    """
    rows, cols = out.shape
    try:
        from scipy.sparse import _sparsetools

        index = np.int32 if rows * cols < 2**31 and max(left.nnz, right.nnz) < 2**31 else np.int64
        Cp = np.empty(rows + 1, dtype=index)
        Cj = np.empty(rows * cols, dtype=index)
        Cx = np.empty(rows * cols, dtype=out.dtype)
        _sparsetools.csr_matmat(rows, cols, left.indptr.astype(index, copy=False),
                                left.indices.astype(index, copy=False), left.data.astype(out.dtype, copy=False),
                                right.indptr.astype(index, copy=False), right.indices.astype(index, copy=False),
                                right.data.astype(out.dtype, copy=False), Cp, Cj, Cx)
        _sparsetools.csr_todense(rows, cols, Cp, Cj, Cx, out)
    except (ImportError, AttributeError, TypeError, ValueError):
        out += (left @ right).toarray()
