"""Where an item-item W lives: dense column tiles for fast CPU scoring, per-column blocks, top-k to sparse."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli.models._linalg import quiet_sparse

# Columns per block when taking per-column top-k.
COLUMN_BLOCK = 512
# Columns per tile of a CPU-resident W: a block of 1000 users' scores for one tile (1 MB in float32)
# stays in a core's L2 cache while the tile's rows stream past (256 was fastest of 64..1024).
TILE_WIDTH = 256


class ColumnTiles:
    """A dense n × m matrix kept as contiguous column tiles in one flat CPU buffer.

    Tile k holds columns ``edges[k]..edges[k+1]`` as a C-ordered n × w block at offset n·edges[k].
    Scoring multiplies a block of users' sparse rows by one tile at a time, so the tile's rows stay
    in cache while the block's users read them: on a 2-core CPU that is 2-4× the throughput of one
    sparse × dense product over the whole matrix, which is bound by memory bandwidth.
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
        if self.dtype == torch.float32:
            return self._matmul_bags(rows)
        return self._matmul_scipy(rows)

    def _matmul_bags(self, rows: sp.csr_matrix) -> torch.Tensor:
        # Each user's scores over a tile are a weighted sum of the tile's rows at the user's items:
        # an embedding bag. PyTorch's float32 kernel for it (FBGEMM, vectorised, parallel over
        # users) scores 1.2-1.4x as many users/s as SciPy's product on the same tiles at ML-10M
        # scale; for float64 it has no such kernel and SciPy stays faster
        # (benchmarks/bench_recommend.py, docs/benchmarks.md).
        rows = sp.csr_matrix(rows, dtype=np.float32)
        items = torch.from_numpy(rows.indices.astype(np.int64, copy=False))
        offsets = torch.from_numpy(rows.indptr.astype(np.int64, copy=False))
        weights = torch.from_numpy(rows.data)
        parts = [torch.nn.functional.embedding_bag(items, tile, offsets, mode="sum", per_sample_weights=weights,
                                                   include_last_offset=True)
                 for _, _, tile in self.blocks()]
        if len(parts) <= 1:
            return parts[0] if parts else torch.zeros((rows.shape[0], 0), dtype=self.dtype)
        return torch.cat(parts, dim=1)

    def _matmul_scipy(self, rows: sp.csr_matrix) -> torch.Tensor:
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


def sparse_tensor(W: sp.csr_matrix) -> torch.Tensor:
    """A SciPy CSR matrix as a torch sparse CSR tensor on the CPU, sharing its values."""
    with quiet_sparse():
        return torch.sparse_csr_tensor(torch.from_numpy(W.indptr.astype(np.int64)),
                                       torch.from_numpy(W.indices.astype(np.int64)),
                                       torch.from_numpy(W.data), size=W.shape)


def scipy_csr(W: torch.Tensor) -> sp.csr_matrix:
    """A torch sparse CSR tensor on the CPU as a SciPy CSR matrix sharing its buffers (int64 indices)."""
    return sp.csr_matrix((W.values().numpy(), W.col_indices().numpy(), W.crow_indices().numpy()),
                         shape=tuple(W.shape))
