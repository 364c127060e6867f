"""`recsys recommend` and evaluation.save_recommendations: the evaluator's lists, original ids, round trips."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.data import original_ids
from recsys_cli.evaluation import evaluate, evaluator
from recsys_cli.evaluation.recommend import read_table, to_table, top_k, write_table
from recsys_cli.experiment import load_trained

from .conftest import CONFIGS, shared_or_skip

runner = CliRunner()
SYNTHETIC = ["--set", "data.dataset=synthetic", "--set", "data.synthetic.n_users=300",
             "--set", "data.synthetic.n_items=150", "--set", "data.synthetic.n_interactions=6000",
             "--set", "evaluation.cutoffs=[5,20]"]


def test_top_k_known_lists_with_ties_seen_items_and_ignored_items():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0],
                                    [0, 0, 0, 0, 0],
                                    [0, 1, 1, 0, 0]], dtype=np.float64))
    scores = torch.tensor([[9.0, 1.0, 5.0, 5.0, 0.5],   # item 0 seen; 2 and 3 tie: lower index first
                           [1.0, 1.0, 1.0, 1.0, 1.0],   # all tied: 0, 1, 2
                           [0.0, 8.0, 7.0, 3.0, 3.0]])  # items 1, 2 seen; item 3 ignored
    lists = top_k(lambda users: scores[users].clone(), train, [0, 1, 2], 3, ignore_items=[3])
    assert lists.items.tolist() == [[2, 1, 4], [0, 1, 2], [4, 0, -1]]
    assert lists.lengths.tolist() == [3, 3, 2]
    np.testing.assert_array_equal(lists.scores[0], [5.0, 1.0, 0.5])
    assert np.isnan(lists.scores[2, 2])
    # user order is the caller's; --include-seen keeps training items
    again = top_k(lambda users: scores[users].clone(), train, [2, 0], 2, exclude_seen=False)
    assert again.items.tolist() == [[1, 2], [0, 2]]


def _ml100k_run(tmp_path, extra=()):
    zip_path = shared_or_skip("ml-100k", "ml-100k.zip")
    args = ["run", str(CONFIGS / "ease.yaml"), "--set", "data.dataset=movielens-100k",
            "--set", f"data.source={zip_path}", "--set", "data.verify=false",
            "--set", "evaluation.cutoffs=[10,50]", *extra, "--json", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["run_dir"], zip_path


def test_recommend_equals_the_evaluators_lists_and_maps_to_movielens_ids(tmp_path, monkeypatch):
    run_dir, zip_path = _ml100k_run(tmp_path)
    trained = load_trained(run_dir)
    # the evaluator's own lists, caught as it ranks each block
    seen_lists = {}
    real_rank_block = evaluator.rank_block

    def spy(scores, k, **kwargs):
        items, lengths = real_rank_block(scores, k, **kwargs)
        seen_lists.setdefault("blocks", []).append((items.clone(), lengths.clone()))
        return items, lengths

    monkeypatch.setattr(evaluator, "rank_block", spy)
    result = evaluate(trained.model, trained.split.train, trained.split.test, [50])
    evaluated = np.flatnonzero(np.diff(trained.split.test.indptr) > 0)
    ev_items = torch.cat([b[0] for b in seen_lists["blocks"]]).numpy()
    assert ev_items.shape == (len(evaluated), 50) and result.n_users_evaluated == len(evaluated)
    monkeypatch.setattr(evaluator, "rank_block", real_rank_block)

    out = tmp_path / "recs.parquet"
    cli = runner.invoke(app, ["recommend", run_dir, "--k", "50", "--output", str(out), "--json"])
    assert cli.exit_code == 0, cli.stderr
    assert json.loads(cli.stdout)["n_users"] == 943
    frame = read_table(out)
    mine = frame.pivot(index="user_index", columns="rank", values="item_index")
    np.testing.assert_array_equal(mine.loc[evaluated].to_numpy(), ev_items)

    # original ids: each row's ids are the MovieLens ids of its indices, and no training pair is recommended
    with zipfile.ZipFile(zip_path) as zf, zf.open("ml-100k/u.data") as fh:
        ratings = pd.read_csv(fh, sep="\t", names=["user", "item", "rating", "ts"])
    user_ids, item_ids = original_ids(trained.config, trained.split)
    train = trained.split.train.tocoo()
    train_pairs = pd.DataFrame({"user": user_ids[train.row].astype(int), "item": item_ids[train.col].astype(int),
                                "rating": train.data})
    joined = train_pairs.merge(ratings, on=["user", "item"], how="left", suffixes=("", "_raw"))
    assert joined["rating_raw"].notna().all() and (joined["rating"] == joined["rating_raw"]).all()
    assert set(frame["user_id"]) == set(ratings["user"])
    assert (frame["user_id"].to_numpy() == user_ids[frame["user_index"]].astype(int)).all()
    assert (frame["item_id"].to_numpy() == item_ids[frame["item_index"]].astype(int)).all()
    overlap = frame.merge(train_pairs, left_on=["user_id", "item_id"], right_on=["user", "item"])
    assert overlap.empty


def test_save_recommendations_during_run_and_the_users_file(tmp_path):
    result = runner.invoke(app, ["run", str(CONFIGS / "toppop.yaml"), *SYNTHETIC,
                                 "--set", "evaluation.save_recommendations=7", "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    run_dir = json.loads(result.stdout)["run_dir"]
    saved = read_table(f"{run_dir}/recommendations.parquet")
    assert saved.groupby("user_index").size().max() == 7 and saved["user_index"].nunique() == 300
    assert (saved.groupby("user_index")["rank"].apply(list).map(lambda r: r == list(range(1, len(r) + 1)))).all()
    assert (saved.groupby("user_index")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    assert "recommend" in json.loads(Path(run_dir, "timing.json").read_text())["seconds"]

    users = tmp_path / "users.txt"
    users.write_text("user_id\n17\n3\n17\n")
    out = tmp_path / "some.csv"
    cli = runner.invoke(app, ["recommend", run_dir, "--k", "7", "--users", str(users), "--output", str(out)])
    assert cli.exit_code == 0, cli.stderr
    picked = read_table(out)
    assert picked["user_id"].drop_duplicates().tolist() == [17, 3]  # the file's order, each once
    expected = saved[saved["user_index"].isin([3, 17])].sort_values(["user_index", "rank"]).reset_index(drop=True)
    got = picked.sort_values(["user_index", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[["user_index", "item_index", "rank"]],
                                  expected[["user_index", "item_index", "rank"]], check_dtype=False)
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-6)
    # recommend's own CSV (a quoted header) and a spreadsheet's export (a byte-order mark, quoted ids)
    # are users files too
    assert out.read_text().startswith('"user_id"')
    again = runner.invoke(app, ["recommend", run_dir, "--k", "2", "--users", str(out), "--output", str(tmp_path / "a.csv")])
    assert again.exit_code == 0, again.stderr
    assert read_table(tmp_path / "a.csv")["user_id"].drop_duplicates().tolist() == [17, 3]
    users.write_bytes('\ufeffuserId,note\n"3","a, b"\n17,c\n'.encode("utf-8"))
    again = runner.invoke(app, ["recommend", run_dir, "--k", "2", "--users", str(users), "--output", str(tmp_path / "b.csv")])
    assert again.exit_code == 0, again.stderr
    assert read_table(tmp_path / "b.csv")["user_id"].drop_duplicates().tolist() == [3, 17]

    users.write_text("3\n999999\n")
    bad = runner.invoke(app, ["recommend", run_dir, "--users", str(users)])
    assert bad.exit_code == 2 and "999999" in bad.stderr and "not in the data set" in bad.stderr
    bad = runner.invoke(app, ["recommend", run_dir, "--output", str(tmp_path / "x.xlsx")])
    assert bad.exit_code == 2 and ".parquet or .csv" in bad.stderr


@pytest.mark.parametrize("name", ["r.csv", "r.parquet"])
def test_files_round_trip(tmp_path, name):
    train = sp.random(40, 30, density=0.2, format="csr", random_state=1)
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.standard_normal((40, 30)).astype(np.float32))
    lists = top_k(lambda u: scores[u].clone(), train, np.arange(40), 10)
    user_ids = np.array([f"u{i}" for i in range(40)])  # non-numeric ids stay strings
    item_ids = np.arange(100, 130).astype(str)          # numeric ids become integers
    table = to_table(lists, user_ids, item_ids)
    back = read_table(write_table(table, tmp_path / name))
    pd.testing.assert_frame_equal(back, table.to_pandas(), check_dtype=False)
    assert back["item_id"].dtype.kind == "i" and back["user_id"].iloc[0] == "u0"
    assert back["score"].to_numpy(np.float32).tolist() == table.column("score").to_pylist()



def test_ids_come_back_when_the_cached_id_file_is_gone(data_dir):
    result = runner.invoke(app, ["run", str(CONFIGS / "toppop.yaml"), *SYNTHETIC, "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    run_dir = json.loads(result.stdout)["run_dir"]
    (ids_file,) = data_dir.glob("synthetic-*/ids.npz")
    ids_file.unlink()  # the cache fails its check: the data set is built again from its seed
    trained = load_trained(run_dir)
    users, items = original_ids(trained.config, trained.split)
    assert users.tolist() == [str(i) for i in range(300)] and items.tolist() == [str(i) for i in range(150)]
    assert ids_file.is_file()
