"""`recsys evaluate` never loses the training-time table (issue 17, bug 6): other cutoffs are added to it,
--set overrides go beside it with the overrides recorded."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from recsys_cli.cli.app import app

from .test_cli_evaluate import fixed_runs  # noqa: F401

runner = CliRunner()
NAMES = ("metrics.csv", "metrics.json", "metrics.md")


def originals(run):
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0  # the training-time table (cutoffs 1, 3)
    return {name: (run / name).read_bytes() for name in NAMES}


def lines_by_cutoff(path):
    tidy = pd.read_csv(path)
    return {int(c): tidy[tidy.cutoff == c].to_csv(index=False) for c in sorted(set(tidy.cutoff))}


def test_other_cutoffs_are_added_to_the_training_time_table(fixed_runs):  # noqa: F811
    run = fixed_runs()
    originals(run)
    before = lines_by_cutoff(run / "metrics.csv")
    result = runner.invoke(app, ["evaluate", str(run), "--cutoffs", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics_file"] == str(run / "metrics.csv")
    after = lines_by_cutoff(run / "metrics.csv")
    assert sorted(after) == [1, 2, 3] and after[1] == before[1] and after[3] == before[3]
    assert "| metric | @1 | @2 | @3 |" in (run / "metrics.md").read_text()
    assert not (run / "evaluations").exists()
    # a plain evaluate afterwards keeps the added cutoff (its rows come out the same)
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    assert lines_by_cutoff(run / "metrics.csv") == after
    assert sorted(pd.read_parquet(run / "per-user.parquet").filter(like="NDCG").columns) == ["NDCG@1", "NDCG@2", "NDCG@3"]


def test_set_overrides_are_recorded_and_kept_apart(fixed_runs):  # noqa: F811
    run = fixed_runs()
    before = originals(run)
    result = runner.invoke(app, ["evaluate", str(run), "--set", "evaluation.exclude_seen=false"])
    assert result.exit_code == 0, result.stderr
    assert {name: (run / name).read_bytes() for name in NAMES} == before
    (json_file,) = (run / "evaluations").glob("metrics-test-k1-3-set-*.json")
    record = json.loads(json_file.read_text())
    assert record["overrides"] == ["evaluation.exclude_seen=false"]
    assert "--set evaluation.exclude_seen=false" in json_file.with_suffix(".md").read_text()
    # another override gets another file; the same one again replaces its own
    assert runner.invoke(app, ["evaluate", str(run), "--set", "evaluation.min_ratings_per_user=2"]).exit_code == 0
    assert runner.invoke(app, ["evaluate", str(run), "--set", "evaluation.exclude_seen=false"]).exit_code == 0
    assert len(list((run / "evaluations").glob("*.json"))) == 2


def test_an_assert_at_another_cutoff_keeps_the_table(fixed_runs):  # noqa: F811
    run = fixed_runs()
    originals(run)
    before = lines_by_cutoff(run / "metrics.csv")
    result = runner.invoke(app, ["evaluate", str(run), "--assert", "NDCG@2>=0"])
    assert result.exit_code == 0, result.stderr
    after = lines_by_cutoff(run / "metrics.csv")
    assert sorted(after) == [1, 2, 3] and after[1] == before[1] and after[3] == before[3]


def test_set_of_keys_a_saved_model_cannot_take_is_refused(fixed_runs):  # noqa: F811
    run = fixed_runs()
    before = originals(run)
    for key in ("model.l2_norm=5", "data.split.test_fraction=0.5", "experiment.seed=7", "training.epochs=3"):
        result = runner.invoke(app, ["evaluate", str(run), "--set", key])
        assert result.exit_code == 2, key
        assert f"--set {key.split('=')[0]} cannot apply to a re-evaluation" in result.stderr
    assert not (run / "evaluations").exists()
    assert {name: (run / name).read_bytes() for name in NAMES} == before
    # where the data lives and how to evaluate may change
    assert runner.invoke(app, ["evaluate", str(run), "--set", "device.threads=1", "--set",
                               "evaluation.min_ratings_per_user=2"]).exit_code == 0
