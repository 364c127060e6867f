"""`recsys evaluate` and `recsys compare` on hand-built run directories (and one real run end to end).

The hand-built runs use a test-only Recommender with fixed scores, registered only for the duration of
each test, and the 3-user × 6-item example of test_metrics_known_answers (so NDCG@3 etc. are known).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar, Literal

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config import Config
from recsys_cli.config.schema import ModelConfig
from recsys_cli.data.dataset import Split
from recsys_cli.evaluation import COLUMNS
from recsys_cli.models.base import Recommender
from recsys_cli.rundir import RunDirectory

from .test_metrics_known_answers import EXPECTED_1, EXPECTED_3, SCORES, TEST, TRAIN

runner = CliRunner()
MODEL = "test-cli-fixed-scores"


class FixedConfig(ModelConfig):
    name: Literal["test-cli-fixed-scores"] = MODEL
    scale: float = 1.0


class FixedScores(Recommender):
    """Scores = SCORES × scale (so two runs can differ); the state is the score matrix itself."""

    name: ClassVar[str] = MODEL
    Config = FixedConfig

    def fit(self, train, ctx):
        self.n_users, self.n_items = train.shape
        self.scores = torch.from_numpy(SCORES * self.config.scale).to(self.dtype)

    def score(self, users):
        return self.scores[users]

    def state(self):
        return {"scores": self.scores}

    def load_state(self, state, train):
        self.scores = state["scores"].to(self.dtype)


@pytest.fixture
def fixed_runs(monkeypatch, runs_dir):
    """Register the test model and serve the hand-made split to load_split_for_run; yields a run factory."""
    from recsys_cli import data
    from recsys_cli.models import registry

    registry.available()  # discover the real models first, then add ours for this test only
    monkeypatch.setitem(registry._REGISTRY, MODEL, FixedScores)
    split = Split(train=TRAIN, test=TEST, val=TEST.copy(), fingerprint="f1ngerpr1nt0000")
    monkeypatch.setattr(data, "load_split_for_run", lambda run, config: split)

    def make(name="fixed", scale=1.0, *, fitted=True) -> Path:
        config = Config.model_validate({
            "experiment": {"name": name, "runs_dir": str(runs_dir)},
            "data": {"dataset": "synthetic"},
            "model": {"name": MODEL, "scale": scale},
            "evaluation": {"cutoffs": [1, 3]},
        })
        run = RunDirectory.create(config)
        run.update_env(split={"fingerprint": split.fingerprint})
        if fitted:
            model = FixedScores(config.model, device=torch.device("cpu"), dtype=torch.float64)
            model.fit(TRAIN, None)
            model.save(run.path / "model")
        run.timing.phases["fit"] = 1.5
        run.write_timing()
        run.write_status("succeeded")
        return run.path

    return make


def test_evaluate_writes_the_metric_files_and_prints_key_columns(fixed_runs):
    run = fixed_runs()
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 0, result.stderr
    tidy = pd.read_csv(run / "metrics.csv")
    assert list(tidy.columns) == ["cutoff", "metric", "value"] and len(tidy) == 2 * 27
    assert list(tidy["metric"][:27]) == list(COLUMNS)
    got = {(r.cutoff, r.metric): r.value for r in tidy.itertuples()}
    for name in COLUMNS:
        assert got[(1, name)] == pytest.approx(EXPECTED_1[name], abs=1e-9)
        assert got[(3, name)] == pytest.approx(EXPECTED_3[name], abs=1e-9)
    records = json.loads((run / "metrics.json").read_text())
    assert records[0] == {"cutoff": 1, "metric": "PRECISION", "value": 0.5}
    md = (run / "metrics.md").read_text()
    assert "| NDCG |" in md and "| RATIO_NOVELTY |" in md and "Users evaluated: 2" in md
    assert "NDCG" in result.stderr and "COVERAGE_ITEM" in result.stderr  # the key columns, on stderr
    assert "EvaluatorHoldout: Ignoring 1 (33.3%) Users that have less than 1 test interactions" in result.stderr
    assert result.stdout == ""
    timing = json.loads((run / "timing.json").read_text())
    assert timing["seconds"]["fit"] == 1.5  # re-evaluating keeps the original fit time
    assert timing["evaluation_users_per_second"] > 0
    assert "Processed 2 (100.0%)" in (run / "log.txt").read_text()


def test_a_failed_metrics_write_leaves_the_previous_files_whole(fixed_runs, monkeypatch):
    from recsys_cli.evaluation import report

    run = fixed_runs()
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    names = ("metrics.csv", "metrics.json", "metrics.md", "per-user.parquet")
    old = {name: (run / name).read_bytes() for name in names}
    before = sorted(p.name for p in run.iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("markdown rendering failed")

    working = report.markdown
    monkeypatch.setattr(report, "markdown", broken)
    result = runner.invoke(app, ["evaluate", str(run), "--cutoffs", "5"])  # other cutoffs: other contents
    assert result.exit_code != 0
    assert {name: (run / name).read_bytes() for name in names} == old  # not a mix of old and new
    assert sorted(p.name for p in run.iterdir()) == before  # and no temporary files left
    monkeypatch.setattr(report, "markdown", working)  # (undo() would also undo fixed_runs' patches)
    again = runner.invoke(app, ["evaluate", str(run), "--cutoffs", "5"])
    assert again.exit_code == 0, again.stderr
    assert all((run / name).read_bytes() != old[name] for name in names)


def test_evaluate_json_cutoffs_and_val_split(fixed_runs):
    run = fixed_runs()
    result = runner.invoke(app, ["evaluate", str(run), "--cutoffs", "3", "--split", "val", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n_users_evaluated"] == 2
    values = {(r["cutoff"], r["metric"]): r["value"] for r in out["metrics"]}
    assert set(c for c, _ in values) == {3}
    assert values[(3, "MAP")] == pytest.approx(1 / 3)
    # a validation evaluation never overwrites the test metrics
    assert (run / "metrics-val.csv").is_file() and not (run / "metrics.csv").exists()


def test_assert_passes_and_fails_with_exit_codes(fixed_runs):
    run = fixed_runs()
    ok = runner.invoke(app, ["evaluate", str(run), "--assert", "NDCG@3>=0.5", "--assert", "precision@1 == 0.5"])
    assert ok.exit_code == 0, ok.stderr
    assert "NDCG@3 = " in ok.stderr and "satisfies >= 0.5" in ok.stderr
    bad = runner.invoke(app, ["evaluate", str(run), "--assert", "MAP@3>0.9", "--assert", "RECALL@3>=1", "--json"])
    assert bad.exit_code == 1
    assert "1 of 2 assertions failed: MAP@3>0.9 (got 0.333333)" in bad.stderr
    outcome = json.loads(bad.stdout)["assertions"]
    assert [o["passed"] for o in outcome] == [False, True]
    assert (run / "metrics.csv").is_file()  # the files are written before the bounds are checked


def test_assert_on_an_unevaluated_cutoff_adds_it_or_explains(fixed_runs):
    run = fixed_runs()
    added = runner.invoke(app, ["evaluate", str(run), "--assert", "HIT_RATE@5>=1"])
    assert added.exit_code == 0, added.stderr
    assert set(pd.read_csv(run / "metrics.csv")["cutoff"]) == {1, 3, 5}
    clash = runner.invoke(app, ["evaluate", str(run), "--cutoffs", "3", "--assert", "NDCG@10>=0.1"])
    assert clash.exit_code == 2 and "--cutoffs 3,10" in clash.stderr


@pytest.mark.parametrize("assertion,message", [
    ("NDGC@10>=0.25", "unknown metric 'NDGC' — did you mean NDCG?"),
    ("NDCG10>=0.25", "cannot read the assertion"),
    ("NDCG@10 => 0.25", "cannot read the assertion"),
    ("NDCG@0>=0.25", "cutoff 0"),
])
def test_malformed_or_unknown_assertions_exit_2(fixed_runs, assertion, message):
    run = fixed_runs()
    result = runner.invoke(app, ["evaluate", str(run), "--assert", assertion])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (run / "metrics.csv").exists()  # rejected before evaluating


def test_bad_run_directories_exit_2(fixed_runs, tmp_path):
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    not_run = runner.invoke(app, ["evaluate", str(tmp_path / "empty")])
    assert not_run.exit_code == 2 and "not a run directory" in not_run.stderr
    unfitted = fixed_runs(fitted=False)
    no_model = runner.invoke(app, ["evaluate", str(unfitted)])
    assert no_model.exit_code == 2 and "has no saved model" in no_model.stderr
    bad_split = runner.invoke(app, ["evaluate", str(unfitted), "--split", "train"])
    assert bad_split.exit_code == 2 and "'train' is not one of 'val'," in bad_split.output
    bad_cutoffs = runner.invoke(app, ["evaluate", str(unfitted), "--cutoffs", "a,b"])
    assert bad_cutoffs.exit_code == 2 and "comma-separated" in bad_cutoffs.stderr


@pytest.mark.parametrize("damaged", ["model.json", "model.pt"])
def test_damaged_saved_model_is_one_line_exit_2(fixed_runs, damaged):
    run = fixed_runs()
    (run / "model" / damaged).write_text("x")
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 2, result.stderr
    assert "the saved model in" in result.stderr and "cannot be loaded" in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == result.stderr.splitlines()[-1:]


def test_compare_builds_a_sorted_leaderboard(fixed_runs, runs_dir, tmp_path, monkeypatch):
    good = fixed_runs("good")
    # negated scores rank the unseen items in reverse: u0 gets [5, 4, 3], u1 gets [1, 3, 5]
    worse = fixed_runs("worse", scale=-1.0)
    for run in (good, worse):
        assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    unevaluated = fixed_runs("unevaluated", scale=2.0)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compare", str(runs_dir / "*"), "--metrics", "NDCG@3,precision@1", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    rows = out["rows"]
    assert [r["run"] for r in rows] == [good.name, worse.name, unevaluated.name]  # best first, blanks last
    assert rows[0]["NDCG@3"] == pytest.approx(EXPECTED_3["NDCG"])
    assert rows[0]["PRECISION@1"] == pytest.approx(0.5)
    assert rows[2]["NDCG@3"] is None and "has no metrics file" in result.stderr
    assert rows[0]["model"] == MODEL and rows[0]["dataset"] == "synthetic"
    assert rows[0]["fingerprint"] == "f1ngerpr1nt0" and rows[0]["fit_s"] == 1.5
    assert rows[0]["evaluate_s"] > 0
    assert [r["model.scale"] for r in rows] == [1.0, -1.0, 2.0]  # the hyperparameter that differs
    written = Path(out["files"][0])
    assert written.parent == runs_dir and written.suffix == ".csv"  # into the runs folder by default
    table = pd.read_csv(written)
    assert list(table.columns) == ["run", "model", "dataset", "split", "fingerprint", "status", "model.scale",
                                   "NDCG@3", "PRECISION@1", "fit_s", "evaluate_s"]
    out = runner.invoke(app, ["compare", str(good), str(good), "--output", str(tmp_path / "lb" / "board.md")])
    assert out.exit_code == 0
    assert (tmp_path / "lb" / "board.md").read_text().count(good.name) == 1  # the same run twice is listed once


def test_compare_default_metrics_and_errors(fixed_runs, tmp_path, monkeypatch):
    run = fixed_runs()
    assert runner.invoke(app, ["evaluate", str(run), "--cutoffs", "3,10"]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compare", str(run), "--json"])
    assert result.exit_code == 0
    assert {"PRECISION@10", "RECALL@10", "MAP@10", "NDCG@10"} <= set(json.loads(result.stdout)["rows"][0])
    for args, message in [
        (["compare", str(tmp_path / "missing")], "does not exist"),
        (["compare", str(tmp_path / "nothing-*")], "no run directory matches"),
        (["compare", str(run), "--metrics", "RECAL@10"], "did you mean RECALL?"),
        (["compare", str(run), "--metrics", "NDCG@x"], "no valid cutoff"),
        (["compare", str(run), "--metrics", "accuracy"], "no run has a metric named 'accuracy'"),
    ]:
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2, args
        assert message in bad.stderr, (args, bad.stderr)


def test_end_to_end_run_then_evaluate_then_compare(tmp_path, monkeypatch, runs_dir):
    """`recsys run` on the synthetic data set with TopPop, then re-evaluate from the saved model."""
    args = ["run", str(Path(__file__).resolve().parent.parent / "configs" / "toppop.yaml"),
            "--set", "data.dataset=synthetic", "--set", "data.synthetic.n_users=300",
            "--set", "data.synthetic.n_items=120", "--set", "data.synthetic.n_interactions=4000",
            "--set", "evaluation.cutoffs=[5,10]", "--set", "evaluation.split=test", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    run_dir = Path(json.loads(first.stdout)["run_dir"])
    before = pd.read_csv(run_dir / "metrics.csv")
    again = runner.invoke(app, ["evaluate", str(run_dir), "--json", "--assert", "NDCG@10>0"])
    assert again.exit_code == 0, again.stderr
    after = pd.read_csv(run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(before, after)  # same saved model, same split → same numbers
    ndcg = before[(before.metric == "NDCG") & (before.cutoff == 10)].value.item()
    assert 0 < ndcg < 1 and not math.isnan(ndcg)
    monkeypatch.chdir(tmp_path)
    board = runner.invoke(app, ["compare", str(run_dir), "--json"])
    assert board.exit_code == 0
    row = json.loads(board.stdout)["rows"][0]
    assert row["model"] == "toppop" and row["NDCG@10"] == pytest.approx(ndcg) and len(row["fingerprint"]) > 0
