"""Edge cases of the evaluator: empty and short lists, ties, ±inf/NaN, skipped and ignored users/items."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recsys_cli import console
from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ConfigError, DataError, RunFailed
from recsys_cli.evaluation import default_block_size, evaluate, ranking
from recsys_cli.evaluation.ranking import rank_block
from recsys_cli.models.base import Recommender


def fixed(scores):
    scores = np.asarray(scores, dtype=np.float64)
    return lambda users: torch.from_numpy(scores[users.numpy()])


def csr(dense):
    return sp.csr_matrix(np.asarray(dense, dtype=np.float64))


def test_user_whose_every_item_is_seen_has_an_empty_list_but_counts():
    # u0 has seen all 3 items → empty list; u1 (no train) gets [2, 1] from scores [1, 2, 3] and hits item 2.
    train = csr([[1, 1, 1], [0, 0, 0]])
    test = csr([[0, 4, 0], [0, 0, 4]])
    res = evaluate(fixed([[3, 2, 1], [1, 2, 3]]), train, test, [2], progress=False)
    assert res.n_users_evaluated == 2
    assert res.value("PRECISION", 2) == pytest.approx((0 + 1 / 2) / 2)  # u0 adds 0 but is in the mean
    assert res.value("RECALL", 2) == pytest.approx((0 + 1) / 2)
    assert res.value("MAP", 2) == pytest.approx((0 + 1 / 2) / 2)
    assert res.value("COVERAGE_USER", 2) == pytest.approx(1 / 2)  # only u1 got a list
    # pop = [1, 1, 1] (all from u0), so u1's items have pop/max = 1; u0's empty list adds 0
    assert res.value("AVERAGE_POPULARITY", 2) == pytest.approx((0 + 1) / 2)
    # closed form with a short list: c = [0, 1, 1], U = 2, k = 2 → 1 − (2 − 4)/(2·2·1) = 1.5; the formula uses the
    # nominal k, so short lists can take it above 1 (evaluation.md §2, column 13)
    assert res.value("DIVERSITY_MEAN_INTER_LIST", 2) == pytest.approx(1.5)


def test_fewer_items_than_the_cutoff():
    # 4 items and cutoff 10: the reference evaluator cuts at min(10, n_items − 1) = 3, so even without seen items the lists
    # have 3 entries and item 3 (lowest score) is never recommended.
    test = csr([[0, 0, 0, 5], [5, 0, 0, 0]])
    train = csr(np.zeros((2, 4)))
    res = evaluate(fixed([[4, 3, 2, 1], [4, 3, 2, 1]]), train, test, [10], progress=False)
    assert res.value("PRECISION", 10) == pytest.approx((0 + 1 / 3) / 2)  # denominator: list length 3, not 10
    assert res.value("MAP", 10) == pytest.approx((0 + 1 / 3) / 2)  # AP divides by the list length too
    assert res.value("PRECISION_RECALL_MIN_DEN", 10) == pytest.approx((0 + 1 / 1) / 2)
    assert res.value("COVERAGE_ITEM", 10) == pytest.approx(3 / 4)
    # identical lists of 3 with the nominal k = 10: c = [2, 2, 2, 0] → 1 − (12 − 20)/(10·2·1) = 1.4
    assert res.value("DIVERSITY_MEAN_INTER_LIST", 10) == pytest.approx(1.4)


def test_ties_break_by_lower_item_index():
    items, lengths = rank_block(torch.tensor([[1.0, 5, 5, 5, 0, 5]]), 3)
    assert items.tolist() == [[1, 2, 3]] and lengths.tolist() == [3]
    items, _ = rank_block(torch.tensor([[5.0, 1, 5, 5, 0, 5]]), 2)
    assert items.tolist() == [[0, 2]]
    # all-zero scores over many items: the first K unseen indices, in order, for every row
    zeros = torch.zeros((4, 1000))
    rows = torch.tensor([1, 1, 3])
    cols = torch.tensor([0, 2, 5])
    items, lengths = rank_block(zeros, 5, mask_rows=rows, mask_cols=cols)
    assert items.tolist() == [[0, 1, 2, 3, 4], [1, 3, 4, 5, 6], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert lengths.tolist() == [5, 5, 5, 5]
    assert torch.count_nonzero(zeros) == 0  # the masked entries were restored


def test_blocks_where_some_rows_tie_at_the_cut_and_others_do_not_match_a_lexsort():
    # rows mixing a few distinct values (ties across the cut, many tied items) with continuous
    # rows (no ties), as a model with dead ReLU units produces; reference: sort by (−score, index)
    g = torch.Generator().manual_seed(7)
    scores = torch.rand((40, 300), generator=g)
    coarse = torch.arange(40) % 3 == 0
    scores[coarse] = torch.randint(0, 4, (int(coarse.sum()), 300), generator=g).float()
    for k in (1, 5, 17):
        items, lengths = rank_block(scores.clone(), k)
        expected = [np.lexsort((np.arange(300), -row))[:k].tolist() for row in scores.numpy()]
        assert items.tolist() == expected and lengths.tolist() == [k] * 40


@pytest.mark.parametrize("kind", ["continuous", "few values", "mostly -inf", "nan and inf"])
def test_two_stage_cpu_top_values_equal_torch_topk_on_long_rows(kind):
    g = torch.Generator().manual_seed(3)
    n = 6 * 1024 + 37  # long enough for the chunked path at kk = 11, with a short last chunk
    assert n >= 8 * 11 * ranking.TOPK_CHUNK and n % ranking.TOPK_CHUNK  # (top_values' own condition)
    x = torch.randn((9, n), generator=g)
    if kind == "few values":
        x = torch.randint(0, 3, (9, n), generator=g).float()
    elif kind == "mostly -inf":  # fewer than kk finite items in some rows
        x[:, torch.rand(n, generator=g) < 0.999] = -math.inf
    elif kind == "nan and inf":
        x[0, 5], x[2, 7], x[3, n - 1] = math.nan, math.inf, math.nan
        x[1] = -math.inf
    vals, idx = ranking.top_values(x, 11)
    ref_vals, _ = torch.topk(x, 11, dim=1)
    same = lambda a, b: torch.equal(a.nan_to_num(nan=7e7), b.nan_to_num(nan=7e7))  # noqa: E731
    assert same(vals, ref_vals) and same(x.gather(1, idx), vals)
    assert all(len(set(row)) == 11 for row in idx.tolist())  # eleven distinct items per row
    # and the lists built on it: (−score, index) order, −inf dropped, NaN last
    items, lengths = rank_block(x.clone(), 10)
    for row, got, length in zip(x.numpy(), items.tolist(), lengths.tolist()):
        order = np.lexsort((np.arange(n), -np.nan_to_num(row, nan=-np.inf), np.isnan(row)))[:10]
        keep = [int(i) for i in order if not np.isinf(row[i])]
        assert got[:length] == keep


def test_ties_inside_the_list_are_ordered_by_index_too():
    # values 3, 3, 2, 3 → the three 3s first in index order, then the 2
    items, _ = rank_block(torch.tensor([[3.0, 3, 2, 3, 1]]), 4)
    assert items.tolist() == [[0, 1, 3, 2]]


def test_infinite_scores_are_dropped_and_nan_ranks_last():
    # order: +inf (item 2), 3 (item 1), 2 (item 4), −inf (item 3), NaN (item 0); top 4 = [2, 1, 4, 3]
    # then ±inf dropped → [1, 4]
    items, lengths = rank_block(torch.tensor([[math.nan, 3, math.inf, -math.inf, 2]]), 4)
    assert items[0, : lengths[0]].tolist() == [1, 4]
    # three NaNs and K = 4: after the two finite items come NaN items 0 and 1 (lowest indices)
    items, lengths = rank_block(torch.tensor([[math.nan, math.nan, math.nan, 1, 2]]), 4)
    assert items[0, : lengths[0]].tolist() == [4, 3, 0, 1]
    # a seen NaN item is masked to −inf like any seen item: top 4 = [4, 3, 0 (−inf), 1 (NaN)] → [4, 3, 1]
    items, lengths = rank_block(torch.tensor([[math.nan, math.nan, math.nan, 1, 2]]), 4,
                                mask_rows=torch.tensor([0]), mask_cols=torch.tensor([0]))
    assert items[0, : lengths[0]].tolist() == [4, 3, 1]


def test_minus_inf_shortens_lists_in_the_table():
    # the model excludes items itself with −inf: u0 can only get item 1; it is a hit
    res = evaluate(fixed([[-math.inf, 1, -math.inf]]), csr([[0, 0, 0]]), csr([[0, 3, 0]]), [2], progress=False)
    assert res.value("PRECISION", 2) == 1.0  # 1 hit / list length 1
    assert res.value("COVERAGE_ITEM", 2) == pytest.approx(1 / 3)


def test_users_without_enough_test_items_are_skipped_and_logged():
    test = csr([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    train = csr(np.zeros((3, 3)))
    with console.capture() as log:
        res = evaluate(fixed(np.zeros((3, 3))), train, test, [1], min_ratings_per_user=2, progress=False)
    assert res.n_users_evaluated == 1 and res.n_users_skipped == 2
    text = log.getvalue()
    assert "Ignoring 2 (66.7%) Users that have less than 2 test interactions" in text
    assert "Processed 1 (100.0%) in" in text and "Users per second:" in text
    # USERS_IN_GT counts users with >= 1 test entry even when min_ratings_per_user > 1
    assert res.value("USERS_IN_GT", 1) == pytest.approx(2 / 3)


def test_no_user_evaluated_warns_and_returns_zeros():
    with console.capture() as log:
        res = evaluate(fixed(np.zeros((2, 3))), csr(np.zeros((2, 3))), csr(np.zeros((2, 3))), [2], progress=False)
    assert "No users had a sufficient number of relevant items" in log.getvalue()
    assert res.n_users_evaluated == 0
    assert res.value("PRECISION", 2) == 0.0 and res.value("DIVERSITY_MEAN_INTER_LIST", 2) == 1.0
    assert math.isnan(res.value("DIVERSITY_HERFINDAHL", 2))  # nothing recommended: C = 0


def test_ignore_users_and_items():
    # 3 users × 4 items. ignore user 1 and item 0.
    # u0: test {0, 2}; item 0 ignored → T = {2}.  u2: test {0} only → T empty → skipped.
    train = csr(np.zeros((3, 4)))
    test = csr([[5, 0, 5, 0], [0, 5, 0, 0], [5, 0, 0, 0]])
    scores = fixed([[9, 8, 7, 6], [9, 8, 7, 6], [9, 8, 7, 6]])
    with console.capture() as log:
        res = evaluate(scores, train, test, [2], ignore_users=[1], ignore_items=[0], progress=False)
    assert "Ignoring 1 Items" in log.getvalue() and "Ignoring 1 Users" in log.getvalue()
    assert res.n_users_evaluated == 1  # only u0
    # u0's list skips the ignored item 0: [1, 2] → hit at rank 2
    assert res.value("PRECISION", 2) == pytest.approx(1 / 2)
    assert res.value("RECALL", 2) == pytest.approx(1.0)  # |T| = 1 after removing item 0
    assert res.value("MRR", 2) == pytest.approx(1 / 2)
    # item denominators use the 3 kept items; user denominators the 2 non-ignored rows
    assert res.value("COVERAGE_ITEM", 2) == pytest.approx(2 / 3)
    # items 1 (from the ignored user 1: ITEMS_IN_GT reads every row) and 2; item 0 is ignored
    assert res.value("ITEMS_IN_GT", 2) == pytest.approx(2 / 3)
    assert res.value("COVERAGE_USER", 2) == pytest.approx(1 / 2)
    assert res.value("USERS_IN_GT", 2) == pytest.approx(1 / 2)  # u0 yes; u2's only entry was on item 0


def test_items_in_gt_counts_ignored_users_entries():
    # ITEMS_IN_GT reads the whole test matrix, including users that are ignored or skipped
    test = csr([[5, 0, 0], [0, 5, 0]])
    res = evaluate(fixed(np.zeros((2, 3))), csr(np.zeros((2, 3))), test, [1], ignore_users=[1], progress=False)
    assert res.value("ITEMS_IN_GT", 1) == pytest.approx(2 / 3)


def test_block_size_bounds_every_scorer_call_and_does_not_change_numbers():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((7, 20))
    train = csr(rng.random((7, 20)) < 0.3)
    test = csr((rng.random((7, 20)) < 0.3) * 4.0)
    calls = []

    def scorer(users):
        calls.append(len(users))
        return torch.from_numpy(scores[users.numpy()])

    small = evaluate(scorer, train, test, [3, 5], block_size=3, progress=False)
    assert calls == [3, 3, 1]
    big = evaluate(scorer, train, test, [3, 5], progress=False)
    np.testing.assert_allclose(small.table.to_numpy(), big.table.to_numpy(), rtol=1e-12)


def test_default_block_size():
    cuda = torch.device("cuda")  # only its type is read
    assert default_block_size(10_681, 69_878, cuda) == 1000  # the reference evaluator's block: min(1000, 5e8 / n_items)
    assert default_block_size(1_000_000, 69_878, cuda) == 500  # 5e8 / n_items
    assert default_block_size(100, 7) == 7
    # on the CPU a block of float32 scores stays within 24 MiB: 24 * 2**20 // (4 * 10_681) = 589
    assert default_block_size(10_681, 69_878) == 589
    assert default_block_size(10_681, 69_878, torch.device("cpu")) == 589
    assert default_block_size(100_000_000, 5) == 1  # never zero


def test_cached_and_expanded_score_tensors_are_left_intact():
    popularity = torch.tensor([3.0, 2.0, 1.0, 0.5])
    train = csr([[1, 0, 0, 0], [0, 1, 0, 0]])
    test = csr([[0, 0, 1, 0], [1, 0, 0, 0]])
    res = evaluate(lambda users: popularity.expand(len(users), -1), train, test, [1], progress=False)
    assert popularity.tolist() == [3.0, 2.0, 1.0, 0.5]
    # u0: [1] (item 0 seen) miss; u1: [0] hit
    assert res.value("PRECISION", 1) == pytest.approx(0.5)
    cache = torch.tensor([[3.0, 2.0, 1.0, 0.5], [3.0, 2.0, 1.0, 0.5]])
    evaluate(lambda users: cache, train, test, [1], progress=False)
    assert cache.tolist() == [[3.0, 2.0, 1.0, 0.5]] * 2


class _ConstantConfig(ModelConfig):
    name: Literal["test-evaluator-constant"] = "test-evaluator-constant"


class _Constant(Recommender):
    """A Recommender whose score is item index order reversed; records the device of its inputs."""

    name: ClassVar[str] = "test-evaluator-constant"
    Config = _ConstantConfig
    seen_devices: ClassVar[list] = []

    def fit(self, train, ctx):  # pragma: no cover - not fitted in this test
        self.n_users, self.n_items = train.shape

    def score(self, users):
        self.seen_devices.append(users.device)
        return torch.arange(self.n_items, 0, -1, dtype=self.dtype, device=self.device).expand(len(users), -1)

    def state(self):
        return {}

    def load_state(self, state, train):
        self.n_users, self.n_items = train.shape


def test_recommender_objects_are_scored_through_score():
    model = _Constant(_ConstantConfig(), device=torch.device("cpu"), dtype=torch.float32)
    model.n_users, model.n_items = 2, 5
    res = evaluate(model, csr(np.zeros((2, 5))), csr([[1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]), [1, 2], progress=False)
    assert _Constant.seen_devices and all(d.type == "cpu" for d in _Constant.seen_devices)
    assert res.value("PRECISION", 1) == pytest.approx(0.5)  # both get [0, 1]; u0 hits at rank 1
    assert res.value("HIT_RATE", 2) == pytest.approx(0.5)


def test_bad_inputs_raise_clear_errors():
    ok = fixed(np.zeros((2, 3)))
    train, test = csr(np.zeros((2, 3))), csr([[1, 0, 0], [0, 1, 0]])
    with pytest.raises(DataError, match="different shapes"):
        evaluate(ok, csr(np.zeros((2, 4))), test, [1], progress=False)
    with pytest.raises(ConfigError, match="positive"):
        evaluate(ok, train, test, [0], progress=False)
    with pytest.raises(ConfigError, match="ignore_items has indices"):
        evaluate(ok, train, test, [1], ignore_items=[7], progress=False)
    with pytest.raises(ConfigError, match="min_ratings_per_user"):
        evaluate(ok, train, test, [1], min_ratings_per_user=0, progress=False)
    with pytest.raises(RunFailed, match=r"shape \(2, 2\)"):
        evaluate(lambda users: torch.zeros(len(users), 2), train, test, [1], progress=False)
    with pytest.raises(DataError, match="scipy sparse"):
        evaluate(ok, np.zeros((2, 3)), test, [1], progress=False)


def test_thread_count_is_restored():
    # the evaluator runs its small ops on one CPU thread; the caller's setting must survive, errors included
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        evaluate(fixed(np.zeros((2, 3))), csr(np.zeros((2, 3))), csr([[1, 0, 0], [0, 1, 0]]), [1], progress=False)
        assert torch.get_num_threads() == 2
        with pytest.raises(RunFailed):
            evaluate(lambda users: torch.zeros(len(users), 2), csr(np.zeros((2, 3))), csr([[1, 0, 0], [0, 1, 0]]),
                     [1], progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_ranking_restores_kept_scores_but_not_fresh_ones():
    from recsys_cli.evaluation.ranking import rank_block

    scores = torch.tensor([[0.5, 0.9, 0.1, 0.7]], dtype=torch.float64)
    rows, cols = torch.tensor([0]), torch.tensor([1])  # item 1 is seen
    items, lengths = rank_block(scores, 2, mask_rows=rows, mask_cols=cols)
    assert items[0].tolist() == [3, 0] and lengths.tolist() == [2]
    assert scores[0, 1].item() == 0.9  # restored: the scorer may keep this tensor
    items, _ = rank_block(scores, 2, mask_rows=rows, mask_cols=cols, restore=False)
    assert items[0].tolist() == [3, 0]
    assert scores[0, 1].item() == float("-inf")  # masked in place, not saved


def test_a_recommender_and_a_plain_scorer_give_the_same_table():
    from recsys_cli.models.base import Recommender

    rng = np.random.default_rng(3)
    train = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(float))
    test = sp.csr_matrix(((rng.random((40, 30)) < 0.1) & (train.toarray() == 0)).astype(float) * 4)
    table_scores = torch.from_numpy(rng.random((40, 30)))

    class Fixed(Recommender):
        name = "fixed"
        device, dtype = torch.device("cpu"), torch.float64

        def fit(self, train, ctx):
            return None

        def score(self, users):
            return table_scores[users].clone()

        def state(self):
            return {}

        def load_state(self, state, train):
            return None

    model = Fixed.__new__(Fixed)
    as_model = evaluate(model, train, test, [3, 5], progress=False, block_size=7)
    as_callable = evaluate(lambda users: table_scores[users], train, test, [3, 5], progress=False, block_size=7)
    pd.testing.assert_frame_equal(as_model.table, as_callable.table)

    # A plain scorer that hands back the very tensor it keeps gets it back unmasked.
    test_all = test.tolil()
    test_all[np.arange(40), (np.arange(40) + 1) % 30] = 5.0  # every user has test items: one block of 40
    kept = table_scores.clone()
    evaluate(lambda users: kept, train, sp.csr_matrix(test_all), [3], progress=False, block_size=40)
    assert torch.equal(kept, table_scores)
