"""SLIM ElasticNet (Ning & Karypis 2011), as the reference implementation's SLIMElasticNetRecommender
fits it.

For every target item j, with X the training matrix (raw ratings, float32) and n the number of users:

    w_j = argmin_w  1/(2n)·‖x_j − X_{−j} w‖² + alpha·l1_ratio·‖w‖₁ + alpha·(1 − l1_ratio)/2·‖w‖²,  w ≥ 0
    W[:, j] = the topk entries of w_j largest in |w| (the diagonal is 0: column j is not a feature)
    score(u) = x_u · W

Each w_j is scikit-learn's coordinate descent (``ElasticNet`` with the reference implementation's
settings: random coordinate order, 100 epochs at most, tol 1e-4, no intercept). The reference draws
one coordinate-order seed per item from NumPy's global RNG, in item order; here the same draws come
from ``RandomState(experiment.seed)`` in the same order, so chunks of items can run in parallel
(joblib) and still get the seeds a sequential fit gives. W is stored sparse. See
../shared/spec/baselines.md §6 and docs/models.md.
"""

from __future__ import annotations

import contextlib
import queue
import time
import warnings
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig
from recsys_cli.memory import format_bytes
from recsys_cli.models._item_item import ItemItemRecommender
from recsys_cli.models._linalg import element_size, quiet_sparse
from recsys_cli.models._tiles import Matrix
from recsys_cli.models.base import FitContext
from recsys_cli.models.registry import register

# sklearn's coordinate descent draws its xorshift seed as rng.randint(0, RAND_R_MAX)
RAND_R_MAX = 2**31 - 1
# the reference implementation's fixed solver settings
MAX_ITER = 100
TOL = 1e-4
# chunks per worker: enough for the progress bar and for load balance (items differ in cost: popular
# targets take more coordinate-descent epochs), with at least MIN_CHUNK_ITEMS items a chunk
CHUNKS_PER_WORKER = 40
MIN_CHUNK_ITEMS = 2


class SLIMConfig(ModelConfig):
    name: Literal["slim"] = "slim"
    l1_ratio: float = Field(0.1, ge=0, le=1, description="Share of the L1 penalty in the elastic net (ρ).")
    alpha: float = Field(1.0, gt=0, description="Overall penalty weight of the elastic net.")
    positive_only: bool = Field(True, description="Constrain the weights to be ≥ 0.")
    topk: int = Field(100, ge=1, description="Keep the topk weights of largest |w| per column (target item).")
    n_jobs: int | None = Field(
        None, ge=1, description="Parallel workers over items (default: torch's CPU threads, i.e. device.threads)."
    )


def seed_states(seed: int, chunks: list[np.ndarray]) -> list[tuple]:
    """The RandomState at the start of each chunk when one seed per item is drawn in item order."""
    rng = np.random.RandomState(int(seed) % 2**32)
    states = []
    for chunk in chunks:
        states.append(rng.get_state())
        rng.randint(0, RAND_R_MAX, size=len(chunk))  # the draws the chunk's fits make
    return states


def fit_columns(X: sp.csc_matrix, items: np.ndarray, state: tuple, *, alpha: float, l1_ratio: float,
                positive: bool, topk: int, scratch: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, values) of W for the target ``items``, fitted one after the other.

    ``state`` is the RandomState the first fit draws its coordinate-order seed from; each fit draws
    once. ``X`` is not modified: each target's column is zeroed in ``scratch``, a copy of X's values
    (made here when not given) that holds them again on return.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet

    X = sp.csc_matrix((X.data.copy() if scratch is None else scratch, X.indices, X.indptr), shape=X.shape)
    rng = np.random.RandomState()
    rng.set_state(state)
    model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, positive=positive, fit_intercept=False, copy_X=False,
                       precompute=True, selection="random", max_iter=MAX_ITER, tol=TOL, random_state=rng)
    rows, cols, vals = [], [], []
    y = np.zeros(X.shape[0], dtype=X.dtype)
    for j in items:
        a, b = X.indptr[j], X.indptr[j + 1]
        y[X.indices[a:b]] = X.data[a:b]
        saved = X.data[a:b].copy()
        X.data[a:b] = 0  # the target is no feature of itself (kept stored, as the reference implementation does)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X, y, check_input=False)
        finally:  # the scratch copy goes back to the pool whole, whatever happened
            X.data[a:b] = saved
        y[X.indices[a:b]] = 0
        coef = model.coef_
        nonzero = np.flatnonzero(coef)
        if nonzero.size > topk:
            nonzero = nonzero[np.argpartition(-np.abs(coef[nonzero]), topk - 1)[:topk]]
        rows.append(nonzero)
        cols.append(np.full(nonzero.size, j, dtype=np.int64))
        vals.append(coef[nonzero])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, X.dtype)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def slim_matrix(X: sp.csr_matrix, *, alpha: float, l1_ratio: float, positive: bool, topk: int, seed: int,
                n_jobs: int, targets: np.ndarray | None = None) -> sp.csr_matrix:
    """W (items × items CSR, X's dtype) with one elastic net per column, over ``n_jobs`` threads.

    Threads, not processes: the coordinate descent runs without the GIL, and threads share X.
    ``targets`` fits only those columns (the benchmark's sample); their seeds are then those of
    the first items, so only the full fit matches the reference implementation.
    """
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    Xc = sp.csc_matrix(X)
    Xc.sort_indices()
    n_items = Xc.shape[1]
    targets = np.arange(n_items) if targets is None else np.asarray(targets, dtype=np.int64)
    n_chunks = max(1, min(-(-targets.size // MIN_CHUNK_ITEMS), n_jobs * CHUNKS_PER_WORKER))
    chunks = [c for c in np.array_split(targets, n_chunks) if c.size]
    states = seed_states(seed, chunks)
    params = {"alpha": alpha, "l1_ratio": l1_ratio, "positive": positive, "topk": topk}
    parallel = Parallel(n_jobs=n_jobs, backend="threading", return_as="generator_unordered")
    # one scratch copy of X's values per worker, handed from chunk to chunk: chunks can then be small
    # (load balance) without a copy each
    scratch: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(min(n_jobs, len(chunks))):
        scratch.put(Xc.data.copy())
    jobs = (delayed(_sized)(Xc, chunk, state, params, scratch) for chunk, state in zip(chunks, states, strict=True))
    parts = []
    # the solver's dense vector operations (BLAS level 1 over the users) would each start BLAS threads
    # of their own, competing with the other workers: one thread each while n_jobs threads run fits
    blas = threadpool_limits(limits=1, user_api="blas") if n_jobs > 1 else contextlib.nullcontext()
    with blas, console.progress(unit="items") as bar:
        task = bar.add_task("SLIM", total=targets.size, rate="")
        started, done = time.perf_counter(), 0
        for size, part in parallel(jobs):
            parts.append(part)
            done += size
            bar.update(task, completed=done, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.1f} items/s")
    rows, cols, vals = (np.concatenate([p[k] for p in parts]) for k in range(3))
    W = sp.csr_matrix((vals, (rows, cols)), shape=(n_items, n_items), dtype=Xc.dtype)
    W.sort_indices()
    return W


def _sized(X, chunk, state, params, scratch):
    values = scratch.get()
    try:
        return len(chunk), fit_columns(X, chunk, state, **params, scratch=values)
    finally:
        scratch.put(values)


@register
class SLIM(ItemItemRecommender):
    name: ClassVar[str] = "slim"
    Config: ClassVar[type[ModelConfig]] = SLIMConfig
    matrix_name: ClassVar[str] = "W"
    display_name: ClassVar[str] = "SLIM"
    cpu_only: ClassVar[bool] = True  # scikit-learn's solver; W moves to the run's device for scoring
    half_precision_note: ClassVar[str] = "scikit-learn's solver works in float32 or float64"

    def n_jobs(self) -> int:
        return self.config.n_jobs or max(1, torch.get_num_threads())

    def memory_estimate(self, X: sp.csr_matrix, dtype: torch.dtype, device: torch.device) -> tuple[int, str]:
        size, n_items = element_size(dtype), X.shape[1]
        # a CSC copy of X, per worker a copy of its values and a dense target column, and W's triplets
        data = X.nnz * (size + 4) + self.n_jobs() * (X.nnz * size + X.shape[0] * size)
        weights = n_items * min(self.config.topk, n_items) * (size + 16)
        return data + weights, f"{format_bytes(data)} of data copies + {format_bytes(weights)} of top-k weights"

    def describe(self) -> str:
        c = self.config
        n = self.n_jobs()
        return (f"alpha {c.alpha:g}, l1_ratio {c.l1_ratio:g}, topk {c.topk}, "
                f"{n} thread{'s' if n > 1 else ''}")

    def compute_W(self, X: sp.csr_matrix, ctx: FitContext, device: torch.device, dtype: torch.dtype) -> Matrix:
        c = self.config
        started = time.perf_counter()
        W = slim_matrix(X, alpha=c.alpha, l1_ratio=c.l1_ratio, positive=c.positive_only, topk=c.topk,
                        seed=ctx.seed, n_jobs=self.n_jobs())
        seconds = time.perf_counter() - started
        rate = self.n_items / max(seconds, 1e-9)
        self.fit_info.update(n_jobs=self.n_jobs(), items_per_second=round(rate, 1))
        console.info(f"SLIM: {W.nnz:,} weights in {seconds:.2f} s ({rate:,.0f} items/s)")
        with quiet_sparse():
            return torch.sparse_csr_tensor(torch.from_numpy(W.indptr.astype(np.int64)),
                                           torch.from_numpy(W.indices.astype(np.int64)),
                                           torch.from_numpy(W.data), size=W.shape).to(device)
