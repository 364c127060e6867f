"""`recsys export mlflow`: runs read back from a local MLflow store with MLflow's own client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.mlflow_export import metric_key, params_of

from .conftest import CONFIGS

mlflow = pytest.importorskip("mlflow")
runner = CliRunner()
SMALL = ["data.dataset=synthetic", "data.synthetic.n_users=150", "data.synthetic.n_items=60",
         "data.synthetic.n_interactions=2500", "evaluation.cutoffs=[5,10]"]


def _run(config: str, *extra: str) -> Path:
    args = ["run", str(CONFIGS / config), *[x for s in [*SMALL, *extra] for x in ("--set", s)], "--json", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["run_dir"])


def _export(runs_dir: Path, uri: str) -> dict:
    result = runner.invoke(app, ["export", "mlflow", f"{runs_dir}/*", "--tracking-uri", uri, "--json", "-q"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_names_and_flattening():
    assert metric_key("NDCG@10") == "NDCG_at_10" and metric_key("val_RECALL@5") == "val_RECALL_at_5"
    assert params_of({"model": {"name": "ease", "hidden": [4, 2]}, "data": {"split": {"seed": None}}}) == {
        "model.name": "ease", "model.hidden": "[4, 2]", "data.split.seed": "null"}


@pytest.mark.slow  # MLflow's import and a new SQLite store take ~10 s on a quiet 2-core machine
def test_export_reads_back_and_does_not_duplicate(tmp_path, runs_dir):
    toppop = _run("toppop.yaml")
    dae = _run("dae.yaml", "training.epochs=2", "model.hidden=[16,8]", "training.batch_size=64")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    first = _export(runs_dir, uri)
    assert sorted(first["created"]) == sorted([toppop.name, dae.name]) and first["unchanged"] == []

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("recsys")
    runs = {r.data.tags["recsys.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {toppop.name, dae.name}
    got = runs[dae.name]
    assert got.info.run_name == dae.name and got.info.status == "FINISHED"
    assert got.data.params["model.name"] == "dae" and got.data.params["training.epochs"] == "2"
    assert got.data.params["model.hidden"] == "[16, 8]" and got.data.params["data.split.seed"] == "null"
    tidy = pd.read_csv(dae / "metrics.csv")
    for row in tidy.itertuples():
        assert got.data.metrics[f"{row.metric}_at_{row.cutoff}"] == pytest.approx(row.value)
    env = json.loads((dae / "env.json").read_text())
    assert got.data.tags["recsys.split_fingerprint"] == env["split"]["fingerprint"]
    assert got.data.tags["mlflow.source.git.commit"] == (env["git_commit"] or "")
    log = pd.read_csv(dae / "train_log.csv")
    history = client.get_metric_history(got.info.run_id, "train.loss")
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == log["epoch"].tolist() == [1, 2]
    assert [m.value for m in history] == pytest.approx(log["loss"].tolist())
    artifacts = {a.path for a in client.list_artifacts(got.info.run_id)}
    assert {"config.yaml", "metrics.csv", "train_log.csv", "env.json", "model"} <= artifacts
    assert (tmp_path / "store" / "mlartifacts").is_dir()  # beside the database, not in the current folder

    second = _export(runs_dir, uri)
    assert sorted(second["unchanged"]) == sorted([toppop.name, dae.name]) and second["created"] == []
    # a re-evaluation changes the run's files: its MLflow run is replaced, still one per directory
    assert runner.invoke(app, ["evaluate", str(toppop), "--cutoffs", "3", "-q"]).exit_code == 0
    third = _export(runs_dir, uri)
    assert third["replaced"] == [toppop.name] and third["unchanged"] == [dae.name]
    active = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["recsys.run_id"] for r in active) == sorted([toppop.name, dae.name])
    again = next(r for r in active if r.data.tags["recsys.run_id"] == toppop.name)
    assert set(again.data.metrics) >= {"PRECISION_at_3", "NDCG_at_3"} and "NDCG_at_10" not in again.data.metrics
    # a new file in the directory (saved recommendations) counts as a change too
    assert runner.invoke(app, ["recommend", str(dae), "--k", "5", "-q"]).exit_code == 0
    fourth = _export(runs_dir, uri)
    assert fourth["replaced"] == [dae.name] and fourth["unchanged"] == [toppop.name]
    latest = client.search_runs([experiment.experiment_id], filter_string=f"tags.`recsys.run_id` = '{dae.name}'")
    assert len(latest) == 1
    assert "recommendations.parquet" in {a.path for a in client.list_artifacts(latest[0].info.run_id)}


def test_missing_mlflow_and_a_refused_store_are_one_line(monkeypatch, runs_dir):
    _run("toppop.yaml")
    refused = runner.invoke(app, ["export", "mlflow", f"{runs_dir}/*", "--tracking-uri", "nosuchscheme://x"])
    assert refused.exit_code == 2 and "MLflow refused the export" in refused.stderr and "nosuchscheme" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    result = runner.invoke(app, ["export", "mlflow", f"{runs_dir}/*"])
    assert result.exit_code == 2
    assert "MLflow is not installed" in result.stderr and "pip install 'recsys-cli[mlflow]'" in result.stderr
