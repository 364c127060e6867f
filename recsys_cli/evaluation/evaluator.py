"""The batched evaluation loop: score a block of users, rank, and accumulate the metric sums.

The table equals the reference evaluator's (../shared/spec/evaluation.md) on the same lists.

Only one block of scores (block_size × n_items) is alive at a time; everything else is O(users × K)
or O(items). The per-block work runs on the scores' device; metric arithmetic is float64 on the same
device (on the CPU for Apple MPS, which has no float64).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys_cli import console
from recsys_cli.errors import ConfigError, DataError, RunFailed
from recsys_cli.evaluation.metrics import (
    COLUMNS,
    PER_USER,
    USER_SUMS,
    BlockInputs,
    TrainStatistics,
    block_user_metrics,
    global_metrics,
)
from recsys_cli.evaluation.per_user import PerUserValues
from recsys_cli.evaluation.ranking import one_cpu_thread, rank_block
from recsys_cli.models.base import Recommender

PREFIX = "EvaluatorHoldout: "
PRINT_EVERY_SECONDS = 300.0
Scorer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvaluationResult:
    """The metric table (a row per cutoff, the 27 columns in the reference evaluator's order) and run figures."""

    table: pd.DataFrame
    n_users_evaluated: int
    n_users_skipped: int  # users with fewer than min_ratings_per_user ground-truth items
    seconds: float
    users_per_second: float
    block_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    per_user: PerUserValues | None = None  # every evaluated user's PER_USER values at every cutoff

    @property
    def cutoffs(self) -> list[int]:
        return [int(c) for c in self.table.index]

    def value(self, metric: str, cutoff: int) -> float:
        metric = metric.upper()
        if metric not in self.table.columns:
            raise ConfigError(f"unknown metric {metric!r}", hint=f"use one of {', '.join(COLUMNS)}")
        if cutoff not in self.table.index:
            raise ConfigError(f"cutoff {cutoff} was not evaluated", hint=f"evaluated cutoffs: {self.cutoffs}")
        return float(self.table.loc[cutoff, metric])

    def to_records(self) -> list[dict[str, Any]]:
        """Tidy rows ``{cutoff, metric, value}``, cutoffs ascending, metrics in column order."""
        return [
            {"cutoff": int(cutoff), "metric": name, "value": float(self.table.loc[cutoff, name])}
            for cutoff in self.table.index
            for name in self.table.columns
        ]

    def course_string(self) -> str:
        """The reference evaluator's ``results_str`` text: one ``CUTOFF: k - NAME: v, ...`` line per cutoff."""
        lines = []
        for cutoff in self.table.index:
            body = "".join(f"{name}: {self.table.loc[cutoff, name]:.7f}, " for name in self.table.columns)
            lines.append(f"CUTOFF: {cutoff} - {body}\n")
        return "".join(lines)


# On the CPU a block's scores should stay below glibc's largest mmap threshold (32 MiB): larger
# buffers are mmapped afresh for every block, and zero-filling those new pages cost ~15 % of a whole
# ML-10M evaluation; smaller ones are recycled from the heap.
CPU_SCORE_BLOCK_BYTES = 24 * 2**20


def default_block_size(n_items: int, n_users: int, device: torch.device | None = None) -> int:
    """Blocks of min(1000, 5e8 / items) users, as the reference evaluator uses; on the CPU also at most 24 MiB of float32 scores."""
    block = min(1000, int(5e8 / max(n_items, 1)), max(n_users, 1))
    if device is None or device.type == "cpu":
        block = min(block, CPU_SCORE_BLOCK_BYTES // (4 * max(n_items, 1)))
    return max(1, block)


def block_size_for(model_or_scorer: Any, n_items: int, n_users: int, device: torch.device | None) -> int:
    """Users per block when ``evaluation.user_batch_size`` is not set: the model's preferred block
    (:meth:`Recommender.preferred_block_size`), else :func:`default_block_size`."""
    preferred = model_or_scorer.preferred_block_size() if isinstance(model_or_scorer, Recommender) else None
    if preferred:
        return min(preferred, max(n_users, 1))
    return default_block_size(n_items, n_users, device)


def _unit(seconds: float) -> tuple[float, str]:
    value, unit = seconds, "sec"
    for factor, name in ((60, "min"), (60, "hour"), (24, "day"), (365, "year")):
        if value / factor < 1.0:
            break
        value, unit = value / factor, name
    return value, unit


def _index_list(values: Iterable[int], size: int, what: str) -> np.ndarray:
    arr = np.unique(np.asarray(list(values), dtype=np.int64))
    if arr.size and (arr[0] < 0 or arr[-1] >= size):
        bad = arr[(arr < 0) | (arr >= size)][:3].tolist()
        raise ConfigError(f"evaluation.{what} has indices {bad} outside 0..{size - 1}",
                          hint=f"list {what.split('_')[1]} indices of the matrix (0-based)")
    return arr


def _as_csr(matrix: Any, name: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        raise DataError(f"{name} must be a scipy sparse matrix, not {type(matrix).__name__}",
                        hint="pass a users × items scipy.sparse.csr_matrix")
    out = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    n_bad = int(np.count_nonzero(~np.isfinite(out.data)))
    if n_bad:  # NaN gains would leave empty metric cells; refuse instead
        raise DataError(f"{name} holds {n_bad} non-finite value(s) (NaN or ±inf)",
                        hint="check the split's matrices for NaN or infinite ratings")
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _scorer_of(model_or_scorer: Any) -> tuple[Scorer, torch.device | None]:
    score = getattr(model_or_scorer, "score", None)
    if callable(score):
        return score, getattr(model_or_scorer, "device", None)
    if callable(model_or_scorer):
        return model_or_scorer, None
    raise ConfigError(f"cannot evaluate a {type(model_or_scorer).__name__}",
                      hint="pass a Recommender or a callable mapping a LongTensor of users to scores")


def score_block(scorer: Scorer, block_users: np.ndarray, n_items: int, model_device: torch.device | None,
                work_device: torch.device | None) -> torch.Tensor:
    """Scores (len(block_users) × n_items) of one block, on ``work_device`` when given; the shape is checked."""
    users_t = torch.from_numpy(block_users)
    if model_device is not None:
        users_t = users_t.to(model_device)
    elif work_device is not None:
        users_t = users_t.to(work_device)
    with torch.no_grad():
        scores = scorer(users_t)
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(np.asarray(scores))
    if tuple(scores.shape) != (len(block_users), n_items):
        raise RunFailed(f"the model returned scores of shape {tuple(scores.shape)} for "
                        f"{len(block_users)} users; expected ({len(block_users)}, {n_items})",
                        hint="score() must return one row per user and one column per item")
    _check_finite(scores, block_users)
    if work_device is not None and scores.device != work_device:
        scores = scores.to(work_device)
    return scores


def seen_pairs(seen: sp.csr_matrix, block_users: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row in block, item) pairs of the block's training items: rank_block's ``mask_rows``/``mask_cols``."""
    sub = seen[block_users]
    rows = torch.from_numpy(np.repeat(np.arange(len(block_users)), np.diff(sub.indptr))).to(device)
    return rows, torch.from_numpy(sub.indices.astype(np.int64)).to(device)


def evaluate(
    model_or_scorer: Any,
    train: sp.spmatrix,
    truth: sp.spmatrix,
    cutoffs: Sequence[int],
    *,
    min_ratings_per_user: int = 1,
    exclude_seen: bool = True,
    ignore_users: Iterable[int] = (),
    ignore_items: Iterable[int] = (),
    block_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    keep_per_user: bool = True,
) -> EvaluationResult:
    """Evaluate a recommender on held-out ``truth`` and return the 27-column metric table.

    ``train`` is the model's own training matrix: it supplies the seen items (excluded from the
    ranking when ``exclude_seen``) and the item popularity of NOVELTY, AVERAGE_POPULARITY and RATIO_*.
    Lists are computed once at the largest cutoff; smaller cutoffs read prefixes. With ``keep_per_user``
    the result also carries every evaluated user's per-user values (``result.per_user``).
    """
    start_time = time.perf_counter()
    cutoffs = sorted({int(c) for c in cutoffs})
    if not cutoffs or cutoffs[0] < 1:
        raise ConfigError(f"cutoffs must be a non-empty list of positive integers, got {cutoffs}",
                          hint="e.g. evaluation.cutoffs=[5,10,20]")
    if min_ratings_per_user < 1:
        raise ConfigError(f"min_ratings_per_user must be >= 1, got {min_ratings_per_user}",
                          hint="users need at least one ground-truth item to have a recall")
    train = _as_csr(train, "train")
    test = _as_csr(truth, "the ground-truth matrix")
    if train.shape != test.shape:
        raise DataError(f"train {train.shape} and ground truth {test.shape} have different shapes",
                        hint="both must be users × items matrices of the same data set")
    n_rows, n_items = test.shape
    scorer, model_device = _scorer_of(model_or_scorer)
    # Recommender.score returns a new tensor per call (its contract), so ranking may mask it in place
    # without saving and restoring; any other scorer may hand back a tensor it keeps.
    fresh_scores = isinstance(model_or_scorer, Recommender)
    ignored_users = _index_list(ignore_users, n_rows, "ignore_users")
    ignored_items = _index_list(ignore_items, n_items, "ignore_items")
    # a final evaluation says whom it leaves out; the per-epoch validations of training say it at -v
    note = console.info if progress else console.debug
    if ignored_items.size:
        note(f"{PREFIX}Ignoring {ignored_items.size} Items")
        keep = np.ones(n_items, dtype=bool)
        keep[ignored_items] = False
        test = sp.csr_matrix(test @ sp.diags(keep.astype(np.float64)))
        test.eliminate_zeros()
        test.sort_indices()
    kept_items = np.ones(n_items, dtype=bool)
    kept_items[ignored_items] = False

    # users to evaluate: enough ground truth, minus ignore_users, in ascending order
    n_test = np.diff(test.indptr)
    enough = n_test >= min_ratings_per_user
    n_skipped = int(n_rows - enough.sum())
    if n_skipped:
        note(f"{PREFIX}Ignoring {n_skipped} ({100 - enough.sum() / n_rows * 100:4.1f}%) Users that have "
              f"less than {min_ratings_per_user} test interactions")
    if ignored_users.size:
        note(f"{PREFIX}Ignoring {ignored_users.size} Users")
        enough_kept = enough.copy()
        enough_kept[ignored_users] = False
    else:
        enough_kept = enough
    users = np.flatnonzero(enough_kept)
    not_ignored = np.ones(n_rows, dtype=bool)
    not_ignored[ignored_users] = False
    users_in_gt = int(np.count_nonzero((n_test > 0) & not_ignored))

    k_max = min(cutoffs[-1], n_items - 1)
    stats = TrainStatistics.from_train(train)
    seen = sp.csr_matrix(train, dtype=np.float32)  # seen items come from train cast to float32, as the reference evaluator does
    seen.eliminate_zeros()

    work_device = torch.device(device) if device is not None else model_device
    block = int(block_size or block_size_for(model_or_scorer, n_items, len(users), work_device))
    if block < 1:
        raise ConfigError(f"evaluation.user_batch_size must be >= 1, got {block}")

    inputs, metric_device = None, None
    sums = per_user = None
    item_counts = hit_counts = None
    ignore_t = None
    done = 0
    last_print = time.perf_counter()
    bar = console.progress(unit="users") if progress else None
    task = None
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task("evaluating", total=len(users), rate="")
        for lo in range(0, len(users), block):
            block_users = users[lo:lo + block]
            scores = score_block(scorer, block_users, n_items, model_device, work_device)
            dev = scores.device
            if inputs is None:
                metric_device = torch.device("cpu") if dev.type == "mps" else dev
                inputs = _block_inputs(test, stats, cutoffs, metric_device)
                sums = torch.zeros((len(cutoffs), len(USER_SUMS)), dtype=torch.float64, device=metric_device)
                item_counts = torch.zeros((len(cutoffs), n_items), dtype=torch.float64, device=metric_device)
                hit_counts = torch.zeros_like(item_counts)
                # filled block by block on the metric device and copied to the host once at the end
                if keep_per_user:
                    per_user = torch.zeros((len(cutoffs), len(users), len(PER_USER)), dtype=torch.float64,
                                           device=metric_device)
                if ignored_items.size:
                    ignore_t = torch.from_numpy(ignored_items).to(dev)
            mask_rows, mask_cols = seen_pairs(seen, block_users, dev) if exclude_seen else (None, None)
            with _no_autocast(dev), _no_autocast(metric_device):
                items, lengths = rank_block(scores, k_max, mask_rows=mask_rows, mask_cols=mask_cols,
                                            ignore_items=ignore_t, restore=not fresh_scores)
                del scores
                with one_cpu_thread(metric_device):
                    sums += block_user_metrics(
                        torch.from_numpy(block_users).to(metric_device), items.to(metric_device),
                        lengths.to(metric_device), cutoffs, inputs, item_counts, hit_counts,
                        None if per_user is None else per_user[:, lo:lo + len(block_users)],
                    )
            done += len(block_users)
            now = time.perf_counter()
            elapsed = now - start_time
            if bar is not None:
                bar.update(task, completed=done, rate=f"{done / max(elapsed, 1e-9):,.0f} users/s")
            if now - last_print > PRINT_EVERY_SECONDS or done == len(users):
                value, unit = _unit(elapsed)
                console.debug(f"{PREFIX}Processed {done} ({100.0 * done / len(users):4.1f}%) in {value:.2f} {unit}. "
                             f"Users per second: {done / max(elapsed, 1e-9):.0f}")
                last_print = now
    finally:
        if bar is not None:
            bar.stop()

    n_eval = len(users)
    if n_eval == 0:
        console.warn(f"{PREFIX}No users had a sufficient number of relevant items")
        sums_np = np.zeros((len(cutoffs), len(USER_SUMS)))
        counts_np = np.zeros((len(cutoffs), n_items))
        hits_np = np.zeros((len(cutoffs), n_items))
        values_np = np.zeros((len(cutoffs), 0, len(PER_USER)))
    else:
        values_np = per_user.cpu().numpy() if per_user is not None else None
        sums_np = sums.cpu().numpy()
        counts_np = item_counts.cpu().numpy().cumsum(axis=0)
        hits_np = hit_counts.cpu().numpy().cumsum(axis=0)
    test_item_nonempty = np.bincount(test.indices, minlength=n_items) > 0
    rows = [
        global_metrics(
            cutoff=cutoff, user_sums=sums_np[c], n_evaluated=n_eval, counts=counts_np[c], hit_counts=hits_np[c],
            kept_items=kept_items, test_item_nonempty=test_item_nonempty, n_ignored_items=int(ignored_items.size),
            n_rows=n_rows, n_ignored_users=int(ignored_users.size), users_in_gt=users_in_gt, stats=stats,
        )
        for c, cutoff in enumerate(cutoffs)
    ]
    table = pd.DataFrame(rows, index=pd.Index(cutoffs, name="cutoff"), columns=list(COLUMNS)).astype(float)
    seconds = time.perf_counter() - start_time
    return EvaluationResult(
        table=table, n_users_evaluated=n_eval, n_users_skipped=n_skipped, seconds=seconds,
        users_per_second=n_eval / seconds if seconds > 0 else math.inf, block_size=block,
        per_user=PerUserValues(users=users.astype(np.int64), cutoffs=list(cutoffs), values=values_np)
        if keep_per_user else None,
    )


def _check_finite(scores: torch.Tensor, block_users: np.ndarray) -> None:
    """Refuse NaN and +inf scores (-inf is how a model excludes an item); one cheap pass per block.

    The block's maximum is NaN when any score is NaN and +inf when any is +inf, so one reduction
    decides (0.2 ms for 589 × 10,681 scores on a 2-core CPU; ``isfinite(...).all()`` took 11 ms,
    and with ~120 blocks that was a quarter of an ML-10M evaluation). Only a bad block is searched.
    """
    if scores.numel() == 0:
        return
    top = scores.amax()
    if not bool(torch.isnan(top) | torch.isposinf(top)):
        return
    nan, posinf = torch.isnan(scores), torch.isposinf(scores)
    counts = [(int(nan.sum()), "NaN"), (int(posinf.sum()), "+inf")]
    found = [f"{n} {what}" for n, what in counts if n]
    if not found:
        return
    row, item = (int(v) for v in torch.nonzero(nan | posinf)[0])
    raise RunFailed(f"the model's scores hold {' and '.join(found)} value(s) in a block of {len(block_users)} users "
                    f"(the first for user {int(block_users[row])}, item {item})",
                    hint="the fit diverged or overflowed: lower training.learning_rate, use device.dtype=float32, "
                         "or check the training data for non-finite values")


def _no_autocast(device: torch.device):
    """Ranking and metric arithmetic keep their dtypes even when the caller scores under autocast."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # a device type without autocast support
        return contextlib.nullcontext()


def _block_inputs(test: sp.csr_matrix, stats: TrainStatistics, cutoffs: list[int],
                  device: torch.device) -> BlockInputs:
    n_rows, n_items = test.shape
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(test.indptr))
    keys = rows * n_items + test.indices.astype(np.int64)  # sorted: CSR rows ascending, indices sorted
    gains = np.exp2(test.data) - 1.0
    # IDCG at each nominal cutoff: each user's gains in descending order, discounted by rank
    # Rows are already grouped, so one stable sort of row·span + (max − value) orders each row by value,
    # descending (3× faster than np.lexsort at ML-10M size; span exceeds the value range).
    if test.nnz:
        top, span = test.data.max(), 2.0 * float(test.data.max() - test.data.min()) + 1.0
        order = np.argsort(rows * span + (top - test.data), kind="stable")
    else:
        order = np.zeros(0, dtype=np.int64)
    rank = np.arange(order.size) - test.indptr[rows[order]]
    discounted = gains[order] / np.log2(rank + 2.0)
    idcg = np.stack([
        np.bincount(rows[order], weights=np.where(rank < cutoff, discounted, 0.0), minlength=n_rows)
        for cutoff in cutoffs
    ]) if n_rows else np.zeros((len(cutoffs), 0))

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    return BlockInputs(
        test_keys=t(keys), test_gains=t(gains.astype(np.float64)),
        test_counts=t(np.diff(test.indptr).astype(np.float64)), idcg=t(idcg),
        novelty_of_item=t(stats.novelty_of_item), popularity_normalised=t(stats.popularity_normalised),
        n_items=n_items,
    )
