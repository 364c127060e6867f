"""The 27 metric columns of the reference holdout evaluator: per-block kernels and global statistics.

Per-user metrics are computed for a whole block of users at once from cumulative sums along the
recommendation list, so every cutoff is a column read of the same arrays. Global metrics (diversity,
coverage, the RATIO_* family) are computed once at the end from item recommendation counts. All
arithmetic is float64. Definitions and quirks: docs/metrics.md (and ../shared/spec/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

COLUMNS: tuple[str, ...] = (
    "PRECISION",
    "PRECISION_RECALL_MIN_DEN",
    "RECALL",
    "MAP",
    "MAP_MIN_DEN",
    "MRR",
    "NDCG",
    "F1",
    "HIT_RATE",
    "ARHR_ALL_HITS",
    "NOVELTY",
    "AVERAGE_POPULARITY",
    "DIVERSITY_MEAN_INTER_LIST",
    "DIVERSITY_HERFINDAHL",
    "COVERAGE_ITEM",
    "COVERAGE_ITEM_HIT",
    "ITEMS_IN_GT",
    "COVERAGE_USER",
    "COVERAGE_USER_HIT",
    "USERS_IN_GT",
    "DIVERSITY_GINI",
    "SHANNON_ENTROPY",
    "RATIO_DIVERSITY_HERFINDAHL",
    "RATIO_DIVERSITY_GINI",
    "RATIO_SHANNON_ENTROPY",
    "RATIO_AVERAGE_POPULARITY",
    "RATIO_NOVELTY",
)

# Sums over users accumulated block by block (the last two are counts for COVERAGE_USER[_HIT]); the first
# eleven are the per-user metrics (PER_USER), whose per-user values evaluate() also keeps.
USER_SUMS: tuple[str, ...] = (
    "PRECISION",
    "PRECISION_RECALL_MIN_DEN",
    "RECALL",
    "MAP",
    "MAP_MIN_DEN",
    "MRR",
    "NDCG",
    "HIT_RATE",
    "ARHR_ALL_HITS",
    "NOVELTY",
    "AVERAGE_POPULARITY",
    "users_with_list",
    "users_with_hit",
)
PER_USER: tuple[str, ...] = USER_SUMS[:11]


# -- training-data statistics ------------------------------------------------------------------
@dataclass
class TrainStatistics:
    """Item popularity of the model's training data and the RATIO_* denominators computed from it."""

    popularity: np.ndarray  # pop_i: stored non-zero train entries of item i (a count)
    novelty_of_item: np.ndarray  # −log2(pop_i / N), 0 where pop_i = 0
    popularity_normalised: np.ndarray  # pop_i / max pop
    n_items: int
    average_popularity_train: float  # AP_train
    novelty_train: float  # NOV_train

    @classmethod
    def from_train(cls, train: sp.csr_matrix) -> TrainStatistics:
        train = sp.csr_matrix(train)
        if not np.all(train.data != 0):  # explicit zeros are not interactions
            train = train.copy()
            train.eliminate_zeros()
        n_users, n_items = train.shape
        cols = train.indices
        pop = np.bincount(cols, minlength=n_items).astype(np.float64)
        total = pop.sum()
        # One pass over the entries: per-user sums of an item statistic are a sparse product of the
        # binary profile matrix with that statistic, and sums over all entries are pop-weighted sums.
        binary = sp.csr_matrix((np.ones(cols.size), cols, train.indptr), shape=train.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            novelty = np.where(pop > 0, -np.log2(pop / total), 0.0)
            pop_norm = pop / pop.max() if n_items else pop
            # AP_train: each train row scored as a list; empty rows add 0 but count in the mean
            profile_len = np.diff(train.indptr).astype(np.float64)
            profile_pop = binary @ pop_norm
            per_user = np.where(profile_len > 0, profile_pop / np.where(profile_len > 0, profile_len, 1), 0.0)
            ap_train = per_user.sum() / n_users if n_users else np.nan
            nov_train = (pop @ novelty / n_items) / n_users if n_users and n_items else np.nan
        return cls(pop, novelty, pop_norm, n_items, float(ap_train), float(nov_train))


# -- global distribution statistics -------------------------------------------------------------
def herfindahl(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return float("nan")
    return float(1.0 - np.sum((counts / total) ** 2))


def gini_diversity(counts: np.ndarray) -> float:
    """2 Σ_j ((m+1−j)/(m+1)) c_(j)/C over counts sorted ascending, zero counts included."""
    ordered = np.sort(counts)
    m = ordered.shape[0]
    weights = (m + 1 - np.arange(1, m + 1)) / (m + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(2.0 * np.sum(weights * ordered / ordered.sum()))


def shannon_entropy(counts: np.ndarray) -> float:
    positive = counts[counts > 0]
    if positive.size == 0:
        return 0.0
    p = positive / positive.sum()
    return float(-np.sum(p * np.log2(p)))


def _ratio(num: float, den: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(num) / np.float64(den))


def mean_inter_list(counts: np.ndarray, n_users: int, cutoff: int) -> float:
    """1 − (Σ c_i² − U·k) / (k·U·(U−1)): the mean pairwise list dissimilarity (1.0 with no user, NaN/inf with one)."""
    if n_users == 0:
        return 1.0
    cooccurrences = np.float64(np.sum(counts.astype(np.float64) ** 2) - n_users * cutoff)
    couples = np.float64(n_users) ** 2 - n_users
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((couples - cooccurrences / cutoff) / couples)


# -- per-block kernel ----------------------------------------------------------------------------
@dataclass
class BlockInputs:
    """Tensors on the metric device that every block reads."""

    test_keys: torch.Tensor  # sorted row * n_items + col of every ground-truth entry
    test_gains: torch.Tensor  # 2^t − 1 per ground-truth entry (float64)
    test_counts: torch.Tensor  # |T_u| per user (float64)
    idcg: torch.Tensor  # (n_cutoffs, n_users) ideal DCG at each nominal cutoff
    novelty_of_item: torch.Tensor  # (n_items,) float64
    popularity_normalised: torch.Tensor  # (n_items,) float64
    n_items: int


def block_user_metrics(
    users: torch.Tensor,
    items: torch.Tensor,
    lengths: torch.Tensor,
    cutoffs: list[int],
    inputs: BlockInputs,
    item_counts: torch.Tensor,
    hit_counts: torch.Tensor,
    per_user: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sums over the block's users of the per-user metrics, shape (len(cutoffs), len(USER_SUMS)).

    ``per_user`` (len(cutoffs), block users, len(PER_USER)), when given, receives each user's values.

    ``item_counts`` / ``hit_counts`` (n_cutoffs, n_items) receive, per cutoff *segment* (positions
    between the previous cutoff and this one), how often each item was recommended / was a hit; the
    caller turns segments into per-cutoff counts with a cumulative sum at the end.
    """
    f64 = torch.float64
    n_block, k_max = items.shape
    out = torch.zeros((len(cutoffs), len(USER_SUMS)), dtype=f64, device=users.device)
    if n_block == 0:
        return out
    if k_max == 0:
        return out  # one-item catalogue: every list is empty and every per-user value is 0
    positions = torch.arange(1, k_max + 1, dtype=f64, device=users.device)
    valid = positions.unsqueeze(0) <= lengths.unsqueeze(1).to(f64)

    # hits and graded gains by binary search of (user, item) among the sorted ground-truth keys
    query = users.unsqueeze(1) * inputs.n_items + items
    where = torch.searchsorted(inputs.test_keys, query).clamp(max=max(inputs.test_keys.numel() - 1, 0))
    hit = valid & (inputs.test_keys[where] == query) if inputs.test_keys.numel() else torch.zeros_like(valid)
    h = hit.to(f64)
    gain = torch.where(hit, inputs.test_gains[where] if inputs.test_keys.numel() else h, torch.zeros_like(h))

    cum_hits = h.cumsum(dim=1)
    cum_ap = (h * cum_hits / positions).cumsum(dim=1)
    cum_dcg = (gain / torch.log2(positions + 1)).cumsum(dim=1)
    cum_rr = (h / positions).cumsum(dim=1)
    zero = torch.zeros_like(h)
    cum_novelty = torch.where(valid, inputs.novelty_of_item[items], zero).cumsum(dim=1)
    cum_popularity = torch.where(valid, inputs.popularity_normalised[items], zero).cumsum(dim=1)
    first_hit = torch.where(hit.any(dim=1), h.argmax(dim=1).to(f64) + 1, torch.full_like(h[:, 0], np.inf))
    n_test = inputs.test_counts[users]

    start = 0
    for c, cutoff in enumerate(cutoffs):
        col = min(cutoff, k_max) - 1
        n_list = lengths.clamp(max=cutoff).to(f64)
        has_list = n_list > 0
        one = torch.ones_like(n_list)
        list_den = torch.where(has_list, n_list, one)
        min_den = torch.where(has_list, torch.minimum(n_test, n_list), one)
        hits = cum_hits[:, col]
        dcg = cum_dcg[:, col]
        idcg = inputs.idcg[c, users]
        values = (
            torch.where(has_list, hits / list_den, 0.0),  # PRECISION
            torch.where(has_list, hits / min_den, 0.0),  # PRECISION_RECALL_MIN_DEN
            hits / n_test,  # RECALL
            torch.where(has_list, cum_ap[:, col] / list_den, 0.0),  # MAP
            torch.where(has_list, cum_ap[:, col] / min_den, 0.0),  # MAP_MIN_DEN
            torch.where(first_hit <= cutoff, 1.0 / first_hit, 0.0),  # MRR
            torch.where((dcg == 0) | (idcg == 0), 0.0, dcg / torch.where(idcg == 0, 1.0, idcg)),  # NDCG
            (hits > 0).to(f64),  # HIT_RATE
            cum_rr[:, col],  # ARHR_ALL_HITS
            cum_novelty[:, col] / inputs.n_items,  # NOVELTY
            torch.where(has_list, cum_popularity[:, col] / list_den, 0.0),  # AVERAGE_POPULARITY
            has_list.to(f64),
            (hits > 0).to(f64),
        )
        stacked = torch.stack(values, dim=1)
        out[c] = stacked.sum(dim=0)
        if per_user is not None:
            per_user[c] = stacked[:, :len(PER_USER)]
        stop = min(cutoff, k_max)
        if stop > start:
            seg_valid = valid[:, start:stop]
            seg_items = items[:, start:stop][seg_valid]
            item_counts[c].index_add_(0, seg_items, torch.ones_like(seg_items, dtype=item_counts.dtype))
            seg_hits = items[:, start:stop][hit[:, start:stop]]
            hit_counts[c].index_add_(0, seg_hits, torch.ones_like(seg_hits, dtype=hit_counts.dtype))
            start = stop
    return out


def global_metrics(
    *,
    cutoff: int,
    user_sums: np.ndarray,
    n_evaluated: int,
    counts: np.ndarray,
    hit_counts: np.ndarray,
    kept_items: np.ndarray,
    test_item_nonempty: np.ndarray,
    n_ignored_items: int,
    n_rows: int,
    n_ignored_users: int,
    users_in_gt: int,
    stats: TrainStatistics,
) -> dict[str, float]:
    """One row of the table from the accumulated sums and the item counts of this cutoff."""
    s = dict(zip(USER_SUMS, user_sums.tolist()))
    row: dict[str, float] = {}
    for name in PER_USER:
        row[name] = s[name] / n_evaluated if n_evaluated else 0.0
    p, r = row["PRECISION"], row["RECALL"]
    row["F1"] = 2 * p * r / (p + r) if p + r != 0 else 0.0
    c_j = counts[kept_items]
    pop_j = stats.popularity[kept_items]
    n_kept = int(kept_items.sum())
    row["DIVERSITY_MEAN_INTER_LIST"] = mean_inter_list(counts, n_evaluated, cutoff)
    row["DIVERSITY_HERFINDAHL"] = herfindahl(c_j)
    row["COVERAGE_ITEM"] = _ratio(np.count_nonzero(c_j), n_kept)
    row["COVERAGE_ITEM_HIT"] = _ratio(np.count_nonzero(hit_counts[kept_items]), n_kept)
    row["ITEMS_IN_GT"] = _ratio(np.count_nonzero(test_item_nonempty[kept_items]), stats.n_items - n_ignored_items)
    user_den = n_rows - n_ignored_users
    row["COVERAGE_USER"] = _ratio(s["users_with_list"], user_den)
    row["COVERAGE_USER_HIT"] = _ratio(s["users_with_hit"], user_den)
    row["USERS_IN_GT"] = _ratio(users_in_gt, user_den)
    row["DIVERSITY_GINI"] = gini_diversity(c_j)
    row["SHANNON_ENTROPY"] = shannon_entropy(c_j)
    row["RATIO_DIVERSITY_HERFINDAHL"] = _ratio(row["DIVERSITY_HERFINDAHL"], herfindahl(pop_j))
    row["RATIO_DIVERSITY_GINI"] = _ratio(row["DIVERSITY_GINI"], gini_diversity(pop_j))
    row["RATIO_SHANNON_ENTROPY"] = _ratio(row["SHANNON_ENTROPY"], shannon_entropy(pop_j))
    row["RATIO_AVERAGE_POPULARITY"] = _ratio(row["AVERAGE_POPULARITY"], stats.average_popularity_train)
    row["RATIO_NOVELTY"] = _ratio(row["NOVELTY"], stats.novelty_train)
    return {name: float(row[name]) for name in COLUMNS}
