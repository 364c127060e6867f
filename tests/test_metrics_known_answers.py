"""Every column of the table, worked out by hand on a 3-user × 6-item example (cutoffs 1 and 3).

Data (ratings in brackets):

    train   u0: item0 [4], item1 [2]      u1: item0 [5], item2 [3]      u2: item0 [1]
    test    u0: item2 [5], item4 [3]      u1: item3 [4]                 u2: (nothing → skipped)

    pop = [3, 1, 1, 0, 0, 0]  (train entries per item: a count, not a rating sum), N = 5, max pop = 3
    I = 6 items, n_users = 3 rows, U_eval = {u0, u1} (U = 2)

Scores (seen items become −inf):

    u0: [9, 8, 7, 6, 5, 4]  → unseen ranking 2, 3, 4, 5     → list@3 = [2, 3, 4], hits at ranks 1 and 3
    u1: [9, 1, 8, 2, 7, 3]  → unseen ranking 4, 5, 3, 1     → list@3 = [4, 5, 3], hit at rank 3
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.evaluation import COLUMNS, evaluate

L2 = math.log2


def _csr(rows, n_users=3, n_items=6):
    dense = np.zeros((n_users, n_items))
    for u, items in rows.items():
        for i, v in items.items():
            dense[u, i] = v
    return sp.csr_matrix(dense)


TRAIN = _csr({0: {0: 4, 1: 2}, 1: {0: 5, 2: 3}, 2: {0: 1}})
TEST = _csr({0: {2: 5, 4: 3}, 1: {3: 4}})
SCORES = np.array([[9, 8, 7, 6, 5, 4], [9, 1, 8, 2, 7, 3], [0, 0, 0, 0, 0, 0]], dtype=np.float64)


def scorer(users: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(SCORES[users.numpy()])


# Training-side statistics shared by both cutoffs
H_POP = 1 - (9 + 1 + 1) / 25  # Herfindahl of pop over all items = 14/25
GINI_POP = 2 * (3 / 7 * 1 + 2 / 7 * 1 + 1 / 7 * 3) / 5  # sorted [0,0,0,1,1,3], weights (7-j)/7 → 16/35
ENT_POP = -(0.6 * L2(0.6) + 2 * 0.2 * L2(0.2))  # p = [3/5, 1/5, 1/5]
AP_TRAIN = ((1 + 1 / 3) / 2 + (1 + 1 / 3) / 2 + 1) / 3  # profiles {0,1}, {0,2}, {0}: pop/max averaged → 7/9
NOV_TRAIN = (3 * -L2(3 / 5) + 2 * -L2(1 / 5)) / 6 / 3  # item 0 in 3 profiles, items 1 and 2 once; /I /n_users

# ---- cutoff 3 -------------------------------------------------------------------------------------
# u0: list [2,3,4], h = [1,0,1], H = 2, n = 3, |T| = 2
# u1: list [4,5,3], h = [0,0,1], H = 1, n = 3, |T| = 1
NDCG_U0 = (31 / L2(2) + 7 / L2(4)) / (31 / L2(2) + 7 / L2(3))  # gains 2^5−1 = 31 (rank 1), 2^3−1 = 7 (rank 3)
NDCG_U1 = (15 / L2(4)) / (15 / L2(2))  # gain 2^4−1 = 15 at rank 3, ideal at rank 1 → 0.5
# recommendation counts c@3 = [0, 0, 1, 2, 2, 1] (C = 6); hits on items 2, 4 (u0) and 3 (u1)
EXPECTED_3 = {
    "PRECISION": (2 / 3 + 1 / 3) / 2,  # H/n per user
    "PRECISION_RECALL_MIN_DEN": (2 / 2 + 1 / 1) / 2,  # H/min(|T|, n)
    "RECALL": (2 / 2 + 1 / 1) / 2,
    "MAP": ((1 / 1 + 2 / 3) / 3 + (1 / 3) / 3) / 2,  # Σ h_j·P@j divided by the list length 3 → (5/9 + 1/9)/2
    "MAP_MIN_DEN": ((1 / 1 + 2 / 3) / 2 + (1 / 3) / 1) / 2,  # same sums over min(|T|, n) → (5/6 + 1/3)/2
    "MRR": (1 / 1 + 1 / 3) / 2,
    "NDCG": (NDCG_U0 + NDCG_U1) / 2,
    "F1": 2 * 0.5 * 1.0 / (0.5 + 1.0),  # from the averaged P = 0.5 and R = 1 → 2/3
    "HIT_RATE": 1.0,
    "ARHR_ALL_HITS": ((1 + 1 / 3) + 1 / 3) / 2,  # all hits' reciprocal ranks → 5/6
    "NOVELTY": (-L2(1 / 5) / 6 + 0) / 2,  # only item 2 has train popularity (1 of 5); divided by I = 6
    "AVERAGE_POPULARITY": ((1 / 3 + 0 + 0) / 3 + 0) / 2,  # pop/max = 1/3 for item 2 → 1/18
    "DIVERSITY_MEAN_INTER_LIST": 1 - ((1 + 4 + 4 + 1) - 2 * 3) / (3 * 2 * 1),  # = 1 − |L0∩L1|/3 = 1/3
    "DIVERSITY_HERFINDAHL": 1 - (1 + 4 + 4 + 1) / 36,  # 1 − Σ (c/C)^2 = 13/18
    "COVERAGE_ITEM": 4 / 6,  # items 2, 3, 4, 5 recommended
    "COVERAGE_ITEM_HIT": 3 / 6,  # items 2, 3, 4 hit
    "ITEMS_IN_GT": 3 / 6,  # test columns 2, 3, 4 non-empty
    "COVERAGE_USER": 2 / 3,  # denominator: all 3 rows, u2 included
    "COVERAGE_USER_HIT": 2 / 3,
    "USERS_IN_GT": 2 / 3,
    "DIVERSITY_GINI": 2 * (4 / 7 * 1 + 3 / 7 * 1 + 2 / 7 * 2 + 1 / 7 * 2) / 6,  # sorted [0,0,1,1,2,2] → 13/21
    "SHANNON_ENTROPY": -(2 * (1 / 6) * L2(1 / 6) + 2 * (2 / 6) * L2(2 / 6)),  # p = [1/6, 2/6, 2/6, 1/6]
}
EXPECTED_3["RATIO_DIVERSITY_HERFINDAHL"] = (13 / 18) / H_POP
EXPECTED_3["RATIO_DIVERSITY_GINI"] = (13 / 21) / GINI_POP
EXPECTED_3["RATIO_SHANNON_ENTROPY"] = EXPECTED_3["SHANNON_ENTROPY"] / ENT_POP
EXPECTED_3["RATIO_AVERAGE_POPULARITY"] = (1 / 18) / AP_TRAIN  # = 1/14
EXPECTED_3["RATIO_NOVELTY"] = EXPECTED_3["NOVELTY"] / NOV_TRAIN

# ---- cutoff 1 (prefixes of the same lists) -----------------------------------------------------------
# u0: [2] is a hit (rating 5); u1: [4] is a miss.  c@1 = [0,0,1,0,1,0]
EXPECTED_1 = {
    "PRECISION": (1 + 0) / 2,
    "PRECISION_RECALL_MIN_DEN": (1 / min(2, 1) + 0) / 2,
    "RECALL": (1 / 2 + 0) / 2,  # |T_u0| = 2: recall is not capped at the cutoff
    "MAP": (1 + 0) / 2,
    "MAP_MIN_DEN": (1 + 0) / 2,
    "MRR": (1 + 0) / 2,
    "NDCG": (31 / 31 + 0) / 2,  # IDCG@1 takes only the best test rating (5 → 31)
    "F1": 2 * 0.5 * 0.25 / 0.75,  # 1/3
    "HIT_RATE": 0.5,
    "ARHR_ALL_HITS": 0.5,
    "NOVELTY": (-L2(1 / 5) / 6 + 0) / 2,
    "AVERAGE_POPULARITY": (1 / 3 + 0) / 2,
    "DIVERSITY_MEAN_INTER_LIST": 1 - ((1 + 1) - 2 * 1) / (1 * 2 * 1),  # disjoint lists → 1
    "DIVERSITY_HERFINDAHL": 1 - 2 * (1 / 2) ** 2,
    "COVERAGE_ITEM": 2 / 6,
    "COVERAGE_ITEM_HIT": 1 / 6,
    "ITEMS_IN_GT": 3 / 6,  # independent of the cutoff
    "COVERAGE_USER": 2 / 3,
    "COVERAGE_USER_HIT": 1 / 3,
    "USERS_IN_GT": 2 / 3,
    "DIVERSITY_GINI": 2 * (2 / 7 * 1 + 1 / 7 * 1) / 2,  # sorted [0,0,0,0,1,1] → 3/7
    "SHANNON_ENTROPY": 1.0,  # two items, one recommendation each
}
EXPECTED_1["RATIO_DIVERSITY_HERFINDAHL"] = 0.5 / H_POP
EXPECTED_1["RATIO_DIVERSITY_GINI"] = (3 / 7) / GINI_POP  # = 15/16
EXPECTED_1["RATIO_SHANNON_ENTROPY"] = 1.0 / ENT_POP
EXPECTED_1["RATIO_AVERAGE_POPULARITY"] = (1 / 6) / AP_TRAIN  # = 3/14
EXPECTED_1["RATIO_NOVELTY"] = EXPECTED_1["NOVELTY"] / NOV_TRAIN


@pytest.fixture(scope="module")
def result():
    return evaluate(scorer, TRAIN, TEST, [3, 1], progress=False)


def test_table_shape_order_and_skipped_user(result):
    assert list(result.table.columns) == list(COLUMNS) and len(COLUMNS) == 27
    assert result.table.index.name == "cutoff" and list(result.table.index) == [1, 3]
    assert all(dtype == np.float64 for dtype in result.table.dtypes)
    assert result.n_users_evaluated == 2 and result.n_users_skipped == 1


@pytest.mark.parametrize("cutoff,expected", [(1, EXPECTED_1), (3, EXPECTED_3)])
@pytest.mark.parametrize("column", COLUMNS)
def test_column_known_answer(result, cutoff, expected, column):
    assert result.value(column, cutoff) == pytest.approx(expected[column], abs=1e-12)


def test_hand_values_in_closed_form(result):
    # a few of the fractions above, stated as the fractions themselves
    assert result.value("MAP", 3) == pytest.approx(1 / 3)
    assert result.value("MAP_MIN_DEN", 3) == pytest.approx(7 / 12)
    assert result.value("DIVERSITY_GINI", 3) == pytest.approx(13 / 21)
    assert result.value("RATIO_DIVERSITY_GINI", 1) == pytest.approx(15 / 16)
    assert result.value("RATIO_AVERAGE_POPULARITY", 3) == pytest.approx(1 / 14)
    assert result.value("RATIO_DIVERSITY_HERFINDAHL", 3) == pytest.approx(325 / 252)


def test_records_and_course_string(result):
    records = result.to_records()
    assert len(records) == 2 * 27
    assert records[0] == {"cutoff": 1, "metric": "PRECISION", "value": 0.5}
    text = result.course_string().splitlines()
    assert text[0].startswith("CUTOFF: 1 - PRECISION: 0.5000000, PRECISION_RECALL_MIN_DEN: 0.5000000, ")
    assert text[1].endswith("RATIO_NOVELTY: {:.7f}, ".format(EXPECTED_3["RATIO_NOVELTY"]))


def test_binary_ground_truth_gives_binary_ndcg():
    # with every test value 1 the gains are 2^1 − 1 = 1: u0 DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3);
    # u1 DCG = 1/log2(4) = 0.5, IDCG = 1
    binary = TEST.copy()
    binary.data[:] = 1.0
    res = evaluate(scorer, TRAIN, binary, [3], progress=False)
    assert res.value("NDCG", 3) == pytest.approx((1.5 / (1 + 1 / L2(3)) + 0.5) / 2)
    # only NDCG reads the values: everything else is unchanged
    graded = evaluate(scorer, TRAIN, TEST, [3], progress=False)
    for column in COLUMNS:
        if column != "NDCG":
            assert res.value(column, 3) == pytest.approx(graded.value(column, 3))


def test_half_star_test_rating_is_a_hit():
    # relevance is "stored entry", whatever its value: a 0.5-star test rating counts as a hit (gain 2^0.5 − 1)
    low = TEST.copy()
    low.data[:] = 0.5
    res = evaluate(scorer, TRAIN, low, [3], progress=False)
    assert res.value("PRECISION", 3) == pytest.approx(0.5)
    assert res.value("RECALL", 3) == pytest.approx(1.0)
