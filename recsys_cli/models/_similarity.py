"""The similarity engine of the neighbourhood models: top-K column similarities from a sparse Gram
computed in blocks, never holding a dense n × n matrix.

``column_similarity(X, ...)`` follows the reference implementation's ``Compute_Similarity`` (intended
semantics, i.e. its Python path; see ../shared/spec/baselines.md §1): similarities between the
columns of X, the diagonal zeroed before top-K, the K largest **signed** values kept per target
column (exact zeros then dropped), float32 throughout.

How: XᵀX is produced in blocks of ``width`` rows of its upper triangle, G[a:b, a:], in parallel
threads. Each block is the sum of a sparse product over the light rows of X (SciPy, which releases
the GIL) and a dense GEMM over the heavy rows (rows holding more than ``HEAVY_USER_SHARE`` of the
columns; torch, one thread per worker). A block serves two sets of targets: its own rows (targets
a..b, candidates a..n) and, by symmetry, the columns right of it (targets b..n, candidates a..b).
Each worker normalises its block and keeps a top-K per target; the main thread merges these into a
running top-K per target in block order, so the result does not depend on thread timing.

Ties at the K-th value: torch.topk's choice within a block, and a later block's candidate that ties
the running K-th does not replace it (deterministic for the same data), not NumPy's argpartition as
in the reference implementation; only members tied with the K-th neighbour can differ.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli.models._linalg import HEAVY_USER_SHARE, sparse_product_into

SIMILARITIES = ("cosine", "adjusted", "asymmetric", "pearson", "jaccard", "tanimoto", "dice", "tversky")
SET_BASED = ("jaccard", "tanimoto", "dice", "tversky")
EPS = np.float32(1e-6)
# Cap on the entries of the dense heavy-row matrix (64 Mi entries = 256 MB in float32): past it, only
# the heaviest rows go dense.
HEAVY_ENTRIES = 1 << 26
# Entries of one dense Gram block (w × n): 4 Mi entries = 16 MB, so a block per thread stays small
# (at least 256 rows: 72 MB at 70k users).
BLOCK_ENTRIES = 1 << 22


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch ops on ``n`` intra-op threads (our worker threads supply the parallelism)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def block_width(n: int, width: int | None = None) -> int:
    """Rows per Gram block: ~BLOCK_ENTRIES entries, and at least 256 so that the merges of the column
    candidates (targets × K per block) stay small next to the block itself when n is large."""
    if width is not None:
        return max(1, int(width))
    return int(max(256, min(1024, BLOCK_ENTRIES // max(n, 1))))


@dataclass
class _Rows:
    """The rows of a data matrix split into light (sparse) and heavy (dense) ones."""

    light_T: sp.csr_matrix  # columns × light rows (for slicing row blocks of the Gram)
    light: sp.csr_matrix  # light rows × columns
    heavy: torch.Tensor  # heavy rows × columns, dense


def split_rows(X: sp.csr_matrix, Y: sp.csr_matrix | None = None) -> tuple[_Rows, _Rows]:
    """Heavy/light split of the rows of X (and of Y, the same rows with other values, for XᵀY)."""
    n = X.shape[1]
    counts = np.diff(X.indptr)
    heavy = counts > HEAVY_USER_SHARE * n
    if heavy.sum() * n > HEAVY_ENTRIES:
        keep = np.argsort(-counts, kind="stable")[: max(1, HEAVY_ENTRIES // max(n, 1))]
        heavy = np.zeros_like(heavy)
        heavy[keep] = True
    heavy_rows, light_rows = np.flatnonzero(heavy), np.flatnonzero(~heavy & (counts > 0))

    def parts(M: sp.csr_matrix) -> _Rows:
        light = M[light_rows]
        return _Rows(light.T.tocsr(), light, torch.from_numpy(M[heavy_rows].toarray()))

    first = parts(X)
    return first, (first if Y is None else parts(Y))


def gram_block(A: _Rows, B: _Rows, a: int, b: int, start: int) -> torch.Tensor:
    """(AᵀB)[a:b, start:] as a dense float32 tensor."""
    n = B.light.shape[1]
    out = np.zeros((b - a, n - start), dtype=np.float32)
    if A.light.nnz:
        right = B.light[:, start:] if start else B.light
        sparse_product_into(A.light_T[a:b], right, out)
    block = torch.from_numpy(out)
    if A.heavy.shape[0]:
        block.addmm_(A.heavy[:, a:b].T, B.heavy[:, start:])
    return block


def map_gram_blocks(X: sp.csr_matrix, handle: Callable[[int, int, torch.Tensor], Any], *,
                    Y: sp.csr_matrix | None = None, triangle: bool, width: int | None = None,
                    threads: int | None = None) -> Iterator[tuple[int, int, Any]]:
    """(a, b, handle(a, b, block)) for the row blocks of XᵀY (Y = X by default), in order.

    ``block`` is (XᵀY)[a:b, a:] with ``triangle`` (only for Y = X: the rest follows by symmetry),
    else (XᵀY)[a:b, :]. Blocks are computed and handled in parallel threads.
    """
    if triangle and Y is not None:
        raise ValueError("the triangle of XᵀY is only enough when Y is X")
    n = X.shape[1]
    A, B = split_rows(X, Y)
    w = block_width(n, width)
    edges = list(range(0, n, w)) + [n]
    threads = max(1, threads or torch.get_num_threads())

    def one(k: int) -> tuple[int, int, Any]:
        a, b = edges[k], edges[k + 1]
        return a, b, handle(a, b, gram_block(A, B, a, b, a if triangle else 0))

    with torch_threads(1):
        if threads == 1:
            for k in range(len(edges) - 1):
                yield one(k)
            return
        # at most two blocks per thread in flight: results wait for the in-order merge, and at 70k
        # columns each holds targets × K candidates (tens of MB)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            pending: deque = deque()
            for k in range(len(edges) - 1):
                pending.append(pool.submit(one, k))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


class RunningTopK:
    """The K largest (value, index) pairs seen so far for each of n targets."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.values = torch.full((n, k), -torch.inf, dtype=torch.float32)
        self.indices = torch.full((n, k), -1, dtype=torch.int64)

    def merge(self, start: int, values: torch.Tensor, indices: torch.Tensor) -> None:
        """Offer candidates (rows = targets start.., one row per target) to the running top-K.

        Only targets with a candidate above their current K-th value are merged: once the running
        lists fill up, most blocks change few of them (a tie with the K-th keeps the earlier one).
        """
        stop = start + values.shape[0]
        rows = torch.nonzero(values.max(dim=1).values > self.values[start:stop].min(dim=1).values).squeeze(1)
        if rows.numel() == 0:
            return
        targets = rows + start
        v = torch.cat([self.values[targets], values[rows]], dim=1)
        i = torch.cat([self.indices[targets], indices[rows]], dim=1)
        top = torch.topk(v, self.k, dim=1, sorted=False)
        self.values[targets] = top.values
        self.indices[targets] = torch.gather(i, 1, top.indices)

    def to_csc_columns(self, n_rows: int) -> sp.csr_matrix:
        """W (n_rows × n targets) with target j's kept neighbours in column j, zeros and empties dropped; CSR."""
        keep = torch.isfinite(self.values) & (self.values != 0)
        cols = torch.arange(self.values.shape[0]).unsqueeze(1).expand_as(self.values)[keep].numpy()
        W = sp.csr_matrix((self.values[keep].numpy(), (self.indices[keep].numpy(), cols)),
                          shape=(n_rows, self.values.shape[0]), dtype=np.float32)
        W.sort_indices()
        return W


def topk_rows(block: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of each row of ``block`` and their column indices + offset."""
    k = min(k, block.shape[1])
    top = torch.topk(block, k, dim=1, sorted=False)
    return top.values, top.indices + offset


# ---------------------------------------------------------------------------------------------
# the similarities
# ---------------------------------------------------------------------------------------------
def preprocess(X: sp.csr_matrix, similarity: str) -> sp.csr_matrix:
    """A float32 copy of the data as the similarity needs it (centred, binarised, or raw)."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.eliminate_zeros()
    X.sort_indices()
    counts = np.diff(X.indptr)
    if similarity == "adjusted":  # centre each stored entry on its row's mean of stored entries
        sums = np.add.reduceat(X.data, X.indptr[:-1]) if X.nnz else np.zeros(X.shape[0], np.float32)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), 0).astype(np.float32)
        X.data -= np.repeat(means, counts)
    elif similarity == "pearson":  # ... on its column's mean
        col_counts = np.bincount(X.indices, minlength=X.shape[1])
        col_sums = np.bincount(X.indices, weights=X.data, minlength=X.shape[1])
        means = np.where(col_counts > 0, col_sums / np.maximum(col_counts, 1), 0).astype(np.float32)
        X.data -= means[X.indices]
    elif similarity in SET_BASED:
        X.data[:] = 1
    return X


@dataclass(frozen=True)
class Similarity:
    """W[i, j] = f(G_ij, candidate i, target j), the reference implementation's formulas (spec §1)."""

    similarity: str = "cosine"
    shrink: float = 0.0
    normalize: bool = True
    asymmetric_alpha: float = 0.5
    tversky_alpha: float = 1.0
    tversky_beta: float = 1.0

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {self.similarity!r}; known: {', '.join(SIMILARITIES)}")

    @property
    def symmetric(self) -> bool:
        if self.similarity == "asymmetric":
            return not self.normalize or self.asymmetric_alpha == 0.5
        if self.similarity == "tversky":
            return self.tversky_alpha == self.tversky_beta
        return True

    def column_terms(self, X: sp.csr_matrix) -> dict[str, torch.Tensor]:
        """Per-column quantities of the preprocessed X (float32)."""
        sq = np.bincount(X.indices, weights=X.data.astype(np.float64) ** 2, minlength=X.shape[1]).astype(np.float32)
        terms = {"sq": torch.from_numpy(sq)}
        norm = np.sqrt(sq)
        terms["norm"] = torch.from_numpy(norm)
        if self.similarity == "asymmetric":
            a = np.float32(self.asymmetric_alpha)
            terms["pow_target"] = torch.from_numpy(np.power(norm + EPS, 2 * a).astype(np.float32))
            terms["pow_cand"] = torch.from_numpy(np.power(norm + EPS, 2 * (1 - a)).astype(np.float32))
        return terms

    def apply_(self, G: torch.Tensor, cand: slice, target: slice, terms: dict[str, torch.Tensor],
               cand_axis: int) -> torch.Tensor:
        """Turn a Gram block into similarities in place. ``cand_axis`` is the axis of the candidates."""
        def along(name: str, which: slice, axis: int) -> torch.Tensor:
            v = terms[name][which]
            return v.unsqueeze(1) if axis == 0 else v.unsqueeze(0)

        h = np.float32(self.shrink)
        t_axis = 1 - cand_axis
        s = self.similarity
        if s in ("cosine", "adjusted", "pearson") or (s == "asymmetric" and not self.normalize):
            if self.normalize:
                G.div_(along("norm", cand, cand_axis) * along("norm", target, t_axis) + (h + EPS))
            elif h != 0:
                G.div_(h)
        elif s == "asymmetric":
            G.div_(along("pow_cand", cand, cand_axis) * along("pow_target", target, t_axis) + (h + EPS))
        elif s in ("jaccard", "tanimoto"):
            G.div_(along("sq", cand, cand_axis) + along("sq", target, t_axis) - G + (h + EPS))
        elif s == "dice":
            G.div_(along("sq", cand, cand_axis) + along("sq", target, t_axis) + (h + EPS))
        elif s == "tversky":
            ta, tb = np.float32(self.tversky_alpha), np.float32(self.tversky_beta)
            denom = G + ta * (along("sq", target, t_axis) - G) + tb * (along("sq", cand, cand_axis) - G) + (h + EPS)
            G.div_(denom)
        return G


def column_similarity(X: sp.csr_matrix, sim: Similarity, topk: int, *, width: int | None = None,
                      threads: int | None = None) -> sp.csr_matrix:
    """Top-``topk`` similarities between the columns of X: an n × n float32 CSR W whose column j holds
    target j's neighbours (at most ``topk`` per column, diagonal excluded, zeros dropped)."""
    n = X.shape[1]
    if not 0 <= topk <= n:
        raise ValueError(f"topK must be between 0 and {n} (the number of columns), got {topk}")
    X = preprocess(X, sim.similarity)
    if topk == 0 or n == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    terms = sim.column_terms(X)
    running = RunningTopK(n, topk)

    def handle(a: int, b: int, G: torch.Tensor):
        own = torch.arange(b - a)
        G[own, own] = 0  # an item is never its own neighbour: zeroed before normalising and top-K
        if sim.symmetric:
            S = sim.apply_(G, slice(a, n), slice(a, b), terms, cand_axis=1)
            rows = topk_rows(S, topk, a)
            cols = topk_rows(S[:, b - a:].T.contiguous(), topk, a) if b < n else None
        else:
            cols = None
            if b < n:
                C = sim.apply_(G[:, b - a:].T.contiguous(), slice(a, b), slice(b, n), terms, cand_axis=1)
                cols = topk_rows(C, topk, a)
            rows = topk_rows(sim.apply_(G, slice(a, n), slice(a, b), terms, cand_axis=1), topk, a)
        return rows, cols

    for a, b, (rows, cols) in map_gram_blocks(X, handle, triangle=True, width=width, threads=threads):
        running.merge(a, *rows)
        if cols is not None:
            running.merge(b, *cols)
    return running.to_csc_columns(n)


def similarity_memory_bytes(X: sp.csr_matrix, topk: int, threads: int, *, width: int | None = None,
                            copies: int = 1) -> int:
    """Peak bytes of :func:`column_similarity` (or a walk similarity, ``copies=2`` data matrices):
    copies of the data, the dense heavy rows, per thread a Gram block and its normalised and top-K
    buffers, and the running top-K with its merge buffer and the final W."""
    n = X.shape[1]
    counts = np.diff(X.indptr)
    heavy = min(int((counts > HEAVY_USER_SHARE * n).sum()) * n, HEAVY_ENTRIES)
    data = 3 * X.nnz * 8 * copies + heavy * 4 * copies
    block = 6 * block_width(n, width) * n * 4  # the block, the sparse product's buffers, temporaries
    running = n * max(topk, 1) * 12 * 3
    return data + threads * block + running


def neighbours_kept(topk: int, n: int, what: str, *, warn: bool = True) -> int:
    """``topk``, or every one of the ``n`` candidates when topk asks for more (with a warning unless
    ``warn`` is off, as for a memory plan): a search space shared across data sets may reach past a
    small one's size."""
    if topk <= n:
        return topk
    if warn:
        from recsys_cli import console

        console.warn(f"model.topk is {topk} but there are only {n:,} {what}: keeping all {n:,}")
    return n
