"""The vectorised evaluator against a plain per-user reference written from the spec, on random data.

The reference below ranks each user with Python's ``sorted`` (class +inf, finite, −inf, NaN; then score
descending; then item index ascending), cuts at K = min(max cutoff, n_items − 1), drops ±inf items,
and computes every column with loops, straight from the formulas of ../shared/spec/evaluation.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_cli.evaluation import COLUMNS, evaluate


def _rank_key(score: float, item: int):
    if math.isnan(score):
        return (3, 0.0, item)
    if score == math.inf:
        return (0, 0.0, item)
    if score == -math.inf:
        return (2, 0.0, item)
    return (1, -score, item)


def _gini(counts: np.ndarray) -> float:
    c = sorted(counts.tolist())
    m, total = len(c), sum(c)
    if m == 0:
        return 0.0  # an empty sum (every item ignored)
    if total == 0:
        return math.nan
    return 2 * sum((m + 1 - j) / (m + 1) * c[j - 1] / total for j in range(1, m + 1))


def _herfindahl(counts: np.ndarray) -> float:
    total = counts.sum()
    return math.nan if total == 0 else 1 - sum((x / total) ** 2 for x in counts)


def _entropy(counts: np.ndarray) -> float:
    total = sum(x for x in counts if x > 0)
    return -sum((x / total) * math.log2(x / total) for x in counts if x > 0)


def _div(a: float, b: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def reference(scores, train, test, cutoffs, *, min_ratings=1, exclude_seen=True, ignore_users=(), ignore_items=()):
    n_users, n_items = test.shape
    ignore_users, ignore_items = set(ignore_users), set(ignore_items)
    train, test = train.tocoo(), test.tocoo()
    truth = {u: {} for u in range(n_users)}
    for u, i, v in zip(test.row, test.col, test.data):
        if v != 0 and i not in ignore_items:
            truth[u][i] = truth[u].get(i, 0.0) + v
    profile = {u: set() for u in range(n_users)}
    for u, i, v in zip(train.row, train.col, train.data):
        if v != 0:
            profile[u].add(i)
    pop = np.zeros(n_items)
    for u in range(n_users):
        for i in profile[u]:
            pop[i] += 1
    total_pop, max_pop = pop.sum(), pop.max()
    evaluated = [u for u in range(n_users) if len(truth[u]) >= min_ratings and u not in ignore_users]
    k_max = min(max(cutoffs), n_items - 1)
    lists = {}
    for u in evaluated:
        s = scores[u].astype(np.float64).copy()
        for i in range(n_items):
            if (exclude_seen and i in profile[u]) or i in ignore_items:
                s[i] = -math.inf
        ranked = sorted(range(n_items), key=lambda i: _rank_key(s[i], i))[:k_max]
        lists[u] = [i for i in ranked if not math.isinf(s[i])]

    def novelty(items):
        return sum(-math.log2(pop[i] / total_pop) for i in items if pop[i] > 0) / n_items

    kept = np.array([i not in ignore_items for i in range(n_items)])
    ap_train = sum(
        (sum(pop[i] / max_pop for i in profile[u]) / len(profile[u])) if profile[u] else 0.0 for u in range(n_users)
    ) / n_users
    nov_train = sum(novelty(profile[u]) for u in range(n_users)) / n_users
    table = {}
    for k in cutoffs:
        acc = dict.fromkeys(COLUMNS, 0.0)
        counts, hit_counts = np.zeros(n_items), np.zeros(n_items)
        covered = covered_hit = 0
        for u in evaluated:
            lst = lists[u][:k]
            n, t = len(lst), truth[u]
            h = [1.0 if i in t else 0.0 for i in lst]
            hits = sum(h)
            ap_sum = sum(h[j] * sum(h[: j + 1]) / (j + 1) for j in range(n))
            dcg = sum((2 ** t[i] - 1) / math.log2(j + 2) for j, i in enumerate(lst) if i in t)
            ideal = sorted(t.values(), reverse=True)[:k]
            idcg = sum((2 ** v - 1) / math.log2(j + 2) for j, v in enumerate(ideal))
            first = next((j + 1 for j in range(n) if h[j]), None)
            acc["PRECISION"] += hits / n if n else 0.0
            acc["PRECISION_RECALL_MIN_DEN"] += hits / min(len(t), n) if n else 0.0
            acc["RECALL"] += hits / len(t)
            acc["MAP"] += ap_sum / n if n else 0.0
            acc["MAP_MIN_DEN"] += ap_sum / min(len(t), n) if n else 0.0
            acc["MRR"] += 1.0 / first if first else 0.0
            acc["NDCG"] += 0.0 if dcg == 0 or idcg == 0 else dcg / idcg
            acc["HIT_RATE"] += 1.0 if hits > 0 else 0.0
            acc["ARHR_ALL_HITS"] += sum(h[j] / (j + 1) for j in range(n))
            acc["NOVELTY"] += novelty(lst)
            with np.errstate(invalid="ignore"):  # an empty training matrix gives 0/0 = NaN, as in the reference evaluator
                acc["AVERAGE_POPULARITY"] += sum(pop[i] / max_pop for i in lst) / n if n else 0.0
            covered += n > 0
            covered_hit += hits > 0
            for j, i in enumerate(lst):
                counts[i] += 1
                hit_counts[i] += h[j]
        n_eval = len(evaluated)
        row = {name: (acc[name] / n_eval if n_eval else 0.0) for name in COLUMNS}
        p, r = row["PRECISION"], row["RECALL"]
        row["F1"] = 2 * p * r / (p + r) if p + r else 0.0
        if n_eval == 0:
            row["DIVERSITY_MEAN_INTER_LIST"] = 1.0
        else:
            couples = n_eval * n_eval - n_eval
            row["DIVERSITY_MEAN_INTER_LIST"] = _div(couples - (sum(counts**2) - n_eval * k) / k, couples)
        cj, pj = counts[kept], pop[kept]
        row["DIVERSITY_HERFINDAHL"] = _herfindahl(cj)
        row["COVERAGE_ITEM"] = _div(np.count_nonzero(cj), kept.sum())
        row["COVERAGE_ITEM_HIT"] = _div(np.count_nonzero(hit_counts[kept]), kept.sum())
        in_gt = {i for u in range(n_users) for i in truth[u]}
        row["ITEMS_IN_GT"] = _div(len(in_gt), n_items - len(ignore_items))
        user_den = n_users - len(ignore_users)
        row["COVERAGE_USER"] = _div(covered, user_den)
        row["COVERAGE_USER_HIT"] = _div(covered_hit, user_den)
        row["USERS_IN_GT"] = _div(sum(1 for u in range(n_users) if truth[u] and u not in ignore_users), user_den)
        row["DIVERSITY_GINI"] = _gini(cj)
        row["SHANNON_ENTROPY"] = _entropy(cj)
        row["RATIO_DIVERSITY_HERFINDAHL"] = _div(row["DIVERSITY_HERFINDAHL"], _herfindahl(pj))
        row["RATIO_DIVERSITY_GINI"] = _div(row["DIVERSITY_GINI"], _gini(pj))
        row["RATIO_SHANNON_ENTROPY"] = _div(row["SHANNON_ENTROPY"], _entropy(pj))
        row["RATIO_AVERAGE_POPULARITY"] = _div(row["AVERAGE_POPULARITY"], ap_train)
        row["RATIO_NOVELTY"] = _div(row["NOVELTY"], nov_train)
        table[k] = row
    return table


def assert_tables_match(result, expected, tol=1e-9):
    for k, row in expected.items():
        for name in COLUMNS:
            got, want = result.value(name, k), row[name]
            if math.isnan(want) or math.isinf(want):
                assert (math.isnan(got) and math.isnan(want)) or got == want, (k, name, got, want)
            else:
                assert got == pytest.approx(want, rel=tol, abs=tol), (k, name, got, want)


# -inf is how a model excludes an item; NaN and +inf scores are refused (test below), not ranked
SPECIAL = [-math.inf]


@st.composite
def problems(draw):
    n_users = draw(st.integers(1, 9))
    n_items = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ratings = np.arange(1, 11) / 2.0

    def matrix(density):
        mask = rng.random((n_users, n_items)) < density
        return sp.csr_matrix(np.where(mask, rng.choice(ratings, size=mask.shape), 0.0))

    train = matrix(draw(st.sampled_from([0.0, 0.2, 0.5])))
    test = matrix(draw(st.sampled_from([0.1, 0.3, 0.6])))
    # few distinct score values (ties everywhere) or continuous ones; sometimes -inf
    if draw(st.booleans()):
        scores = rng.integers(0, draw(st.integers(1, 4)), size=(n_users, n_items)).astype(np.float64)
    else:
        scores = rng.standard_normal((n_users, n_items))
    if draw(st.booleans()):
        special = rng.random(scores.shape) < 0.2
        scores[special] = rng.choice(SPECIAL, size=int(special.sum()))
    cutoffs = draw(st.lists(st.integers(1, n_items + 2), min_size=1, max_size=3, unique=True))
    ignore_users = draw(st.lists(st.integers(0, n_users - 1), max_size=2, unique=True))
    ignore_items = draw(st.lists(st.integers(0, n_items - 1), max_size=2, unique=True))
    return dict(
        scores=scores, train=train, test=test, cutoffs=cutoffs, min_ratings=draw(st.integers(1, 2)),
        exclude_seen=draw(st.booleans()), ignore_users=ignore_users, ignore_items=ignore_items,
        block_size=draw(st.integers(1, 4)),
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_vectorised_evaluator_matches_per_user_reference(problem):
    scores = problem["scores"]
    result = evaluate(
        lambda users: torch.from_numpy(scores[users.numpy()]),
        problem["train"], problem["test"], problem["cutoffs"],
        min_ratings_per_user=problem["min_ratings"], exclude_seen=problem["exclude_seen"],
        ignore_users=problem["ignore_users"], ignore_items=problem["ignore_items"],
        block_size=problem["block_size"], progress=False,
    )
    expected = reference(
        scores, problem["train"], problem["test"], sorted(set(problem["cutoffs"])),
        min_ratings=problem["min_ratings"], exclude_seen=problem["exclude_seen"],
        ignore_users=problem["ignore_users"], ignore_items=problem["ignore_items"],
    )
    assert list(result.table.columns) == list(COLUMNS)
    assert_tables_match(result, expected)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
def test_low_precision_scores_rank_like_their_float64_values(seed, dtype):
    # scores exactly representable in every dtype (small integers): the table must not depend on it
    rng = np.random.default_rng(seed)
    scores = rng.integers(-3, 4, size=(7, 9)).astype(np.float64)
    train = sp.csr_matrix((rng.random((7, 9)) < 0.3).astype(float))
    test = sp.csr_matrix(np.where(rng.random((7, 9)) < 0.4, 4.0, 0.0))
    low = evaluate(lambda u: torch.from_numpy(scores[u.numpy()]).to(dtype), train, test, [3, 5], progress=False)
    expected = reference(scores, train, test, [3, 5])
    assert_tables_match(low, expected)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([math.nan, math.inf]), st.integers(1, 4))
def test_nan_or_plus_inf_scores_fail_the_evaluation_naming_the_first_one(seed, bad, block_size):
    from recsys_cli.errors import RunFailed

    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((6, 8))
    user, item = int(rng.integers(0, 6)), int(rng.integers(0, 8))
    scores[user, item] = bad
    test = sp.csr_matrix(np.ones((6, 8)))
    with pytest.raises(RunFailed, match=f"for user {user}, item {item}"):
        evaluate(lambda u: torch.from_numpy(scores[u.numpy()]), sp.csr_matrix((6, 8)), test, [3],
                 block_size=block_size, progress=False)
