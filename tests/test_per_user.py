"""Per-user results: the evaluator's per-user values, their Parquet file, and its reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.errors import DataError
from recsys_cli.evaluation import evaluate
from recsys_cli.evaluation.metrics import PER_USER
from recsys_cli.evaluation.per_user import column, per_user_path, read_per_user
from recsys_cli.evaluation.report import write_metrics

from .test_metrics_known_answers import TEST, TRAIN, scorer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_known_per_user_values_of_the_hand_worked_example():
    # u0 (train 0,1; test 2:5, 4:3) gets [2, 3, 4]: hits at 1 and 3. u1 (train 0,2; test 3:4) gets [4, 5, 3]:
    # a hit at 3. u2 has no test items and is not evaluated.
    result = evaluate(scorer, TRAIN, TEST, [1, 3], progress=False)
    pu = result.per_user
    assert pu.users.tolist() == [0, 1] and pu.cutoffs == [1, 3]
    frame = pu.frame(np.array(["a", "b", "c"]))
    assert frame["user_id"].tolist() == ["a", "b"]
    assert frame["PRECISION@3"].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert frame["RECALL@3"].tolist() == pytest.approx([1.0, 1.0])
    assert frame["MRR@3"].tolist() == pytest.approx([1.0, 1 / 3])
    assert frame["ARHR_ALL_HITS@3"].tolist() == pytest.approx([1 + 1 / 3, 1 / 3])
    assert frame["MAP@3"].tolist() == pytest.approx([(1 + 2 / 3) / 3, (1 / 3) / 3])
    assert frame["HIT_RATE@1"].tolist() == [1.0, 0.0]
    assert frame["PRECISION@1"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_user_means_equal_the_table_whatever_the_block_size(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 57, 23
    train = sp.random(n_users, n_items, density=0.2, random_state=seed, format="csr",
                      data_rvs=lambda n: rng.integers(1, 6, n).astype(float))
    test = sp.random(n_users, n_items, density=0.15, random_state=seed + 100, format="csr",
                     data_rvs=lambda n: rng.integers(1, 6, n).astype(float))
    test = sp.csr_matrix(test - test.multiply(train != 0))
    test.eliminate_zeros()
    scores = torch.from_numpy(rng.normal(size=(n_users, n_items)))
    scores[rng.random((n_users, n_items)) < 0.05] = -torch.inf  # some short lists

    def score(users):
        return scores[users].clone()

    cutoffs = [1, 5, 10]
    whole = evaluate(score, train, test, cutoffs, block_size=1000, progress=False, min_ratings_per_user=2)
    blocks = evaluate(score, train, test, cutoffs, block_size=7, progress=False, min_ratings_per_user=2)
    np.testing.assert_array_equal(whole.per_user.values, blocks.per_user.values)
    np.testing.assert_array_equal(whole.per_user.users, np.flatnonzero(np.diff(test.indptr) >= 2))
    frame = blocks.per_user.frame()
    for cutoff in cutoffs:
        for metric in PER_USER:
            assert frame[column(metric, cutoff)].mean() == pytest.approx(blocks.value(metric, cutoff), abs=1e-12)
        p, r = frame[f"PRECISION@{cutoff}"].mean(), frame[f"RECALL@{cutoff}"].mean()
        assert blocks.value("F1", cutoff) == pytest.approx(2 * p * r / (p + r))  # F1 is of the means


def test_no_evaluated_user_gives_an_empty_frame():
    result = evaluate(scorer, TRAIN, TEST, [3], min_ratings_per_user=5, progress=False)
    assert result.per_user.values.shape == (1, 0, len(PER_USER))
    assert len(result.per_user.frame()) == 0


def test_written_file_round_trips_with_ids_and_metadata(tmp_path):
    result = evaluate(scorer, TRAIN, TEST, [1, 3], progress=False)
    write_metrics(tmp_path, result, split_name="val", user_ids=np.array(["u10", "u20", "u30"]), fingerprint="abc")
    assert not per_user_path(tmp_path).exists()
    frame = read_per_user(per_user_path(tmp_path, "val"))
    assert frame.index.name == "user_index" and frame.index.tolist() == [0, 1]
    assert frame["user_id"].tolist() == ["u10", "u20"]
    assert frame.attrs["recsys"] == {"format": 1, "cutoffs": [1, 3], "metrics": list(PER_USER), "split": "val",
                                     "fingerprint": "abc"}
    expected = result.per_user.frame(np.array(["u10", "u20", "u30"])).set_index("user_index")
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    only = read_per_user(per_user_path(tmp_path, "val"), columns=["NDCG@3"])
    assert list(only.columns) == ["user_id", "NDCG@3"]


def test_written_file_without_ids_has_null_ids(tmp_path):
    write_metrics(tmp_path, evaluate(scorer, TRAIN, TEST, [3], progress=False))
    frame = read_per_user(tmp_path)  # a run directory reads its test-split file
    assert frame["user_id"].isna().all() and len(frame) == 2


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="per-user.parquet does not exist"):
        read_per_user(tmp_path)
    write_metrics(tmp_path, evaluate(scorer, TRAIN, TEST, [3], progress=False))
    with pytest.raises(DataError, match="has no column 'NDCG@10'") as info:
        read_per_user(tmp_path, columns=["NDCG@10"])
    assert info.value.hint.startswith("its cutoffs are 3 and its metrics PRECISION, PRECISION_RECALL_MIN_DEN,")
    per_user_path(tmp_path).write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot be read"):
        read_per_user(tmp_path)


def test_run_and_evaluate_write_per_user_files_with_original_ids(runs_dir):
    runner = CliRunner()
    first = runner.invoke(app, [
        "run", str(CONFIGS / "toppop.yaml"), "--set", "data.dataset=synthetic",
        "--set", "data.synthetic.n_users=200", "--set", "data.synthetic.n_items=80",
        "--set", "data.synthetic.n_interactions=3000", "--set", "evaluation.cutoffs=[5,10]",
        "--set", "evaluation.split=test", "--json"])
    assert first.exit_code == 0, first.stderr
    run_dir = Path(json.loads(first.stdout)["run_dir"])
    frame = read_per_user(run_dir)
    tidy = pd.read_csv(run_dir / "metrics.csv")
    for row in tidy[tidy.metric.isin(PER_USER)].itertuples():
        assert frame[column(row.metric, row.cutoff)].mean() == pytest.approx(row.value, rel=1e-9, abs=1e-12)
    assert frame["user_id"].tolist() == [str(i) for i in frame.index]  # the synthetic data set's ids
    env = json.loads((run_dir / "env.json").read_text())
    assert frame.attrs["recsys"]["fingerprint"] == env["split"]["fingerprint"]
    # re-evaluation reads the ids from the data set's cache
    again = runner.invoke(app, ["evaluate", str(run_dir), "--split", "val", "--cutoffs", "3"])
    assert again.exit_code == 0, again.stderr
    val = read_per_user(per_user_path(run_dir, "val"))
    assert list(val.columns) == ["user_id"] + [column(m, 3) for m in PER_USER]
    assert val["user_id"].tolist() == [str(i) for i in val.index]
    assert "user ids are not cached" not in again.stderr
