"""`recsys run --seeds`: the group summary by hand, and splits that vary or stay fixed with the seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config import load_config
from recsys_cli.data import get_split, load_dataset, split_seed
from recsys_cli.errors import ConfigError
from recsys_cli.seeds import member_config, parse_seeds, summarize

from .conftest import CONFIGS

runner = CliRunner()
SMALL = ["data.dataset=synthetic", "data.synthetic.n_users=150", "data.synthetic.n_items=60",
         "data.synthetic.n_interactions=2500", "evaluation.cutoffs=[5,10]"]
T_975_DF2 = 4.302652729749462  # Student t quantile 0.975 with 2 degrees of freedom (tables: 4.303)


def _tidy(ndcg: float, precision: float) -> pd.DataFrame:
    return pd.DataFrame({"cutoff": [10, 10], "metric": ["NDCG", "PRECISION"], "value": [ndcg, precision]})


def test_summary_of_three_runs_by_hand():
    summary = summarize([_tidy(0.2, 0.1), _tidy(0.3, 0.1), _tidy(0.4, 0.1)]).set_index("metric")
    ndcg = summary.loc["NDCG"]
    assert ndcg["n"] == 3 and ndcg["cutoff"] == 10
    assert ndcg["mean"] == pytest.approx(0.3) and ndcg["sd"] == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # 0.2484138
    assert ndcg["ci_low"] == pytest.approx(0.3 - half) and ndcg["ci_high"] == pytest.approx(0.3 + half)
    assert ndcg["ci_low"] == pytest.approx(0.0515862, abs=1e-7)
    precision = summary.loc["PRECISION"]  # no spread: the interval is the mean itself
    assert (precision["sd"], precision["ci_low"], precision["ci_high"]) == pytest.approx((0.0, 0.1, 0.1))
    one = summarize([_tidy(0.2, 0.1)]).iloc[0]
    assert one["mean"] == 0.2 and math.isnan(one["sd"]) and math.isnan(one["ci_low"])


def test_seed_parsing_and_member_configs():
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("a,b", "", "1,1", "-1", "0,99999999999999999999"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)
    assert parse_seeds(f"0,{2**63 - 1}") == [0, 2**63 - 1]
    refused = runner.invoke(app, ["run", str(CONFIGS / "toppop.yaml"), *[x for s in SMALL for x in ("--set", s)],
                                  "--seeds", "-1"])
    assert refused.exit_code == 2 and "--seeds: -1 is out of range" in refused.stderr
    cfg = load_config(CONFIGS / "toppop.yaml", SMALL)
    vary, fixed = member_config(cfg, 7, "vary"), member_config(cfg, 7, "fixed")
    assert (vary.experiment.seed, split_seed(vary)) == (7, 7)
    assert (fixed.experiment.seed, split_seed(fixed)) == (7, cfg.experiment.seed)
    cfg.data.split.seed = 3
    assert split_seed(member_config(cfg, 7, "fixed")) == 3 and cfg.experiment.seed != 7  # the base is untouched
    with pytest.raises(ConfigError):
        member_config(cfg, 7, "sometimes")
    refused = runner.invoke(app, ["run", str(CONFIGS / "toppop.yaml"), "--seeds", "0", "--seeds-split", "sometimes"])
    assert refused.exit_code == 2 and "vary" in refused.output


def test_data_split_seed_overrides_the_experiment_seed():
    cfg = load_config(CONFIGS / "toppop.yaml", [*SMALL, "data.split.seed=5", "experiment.seed=1"])
    a = get_split(load_dataset(cfg.data, seed=split_seed(cfg)), cfg.data, seed=split_seed(cfg))
    cfg.experiment.seed = 2
    b = get_split(load_dataset(cfg.data, seed=split_seed(cfg)), cfg.data, seed=split_seed(cfg))
    cfg.data.split.seed = None
    c = get_split(load_dataset(cfg.data, seed=split_seed(cfg)), cfg.data, seed=split_seed(cfg))
    assert a.fingerprint == b.fingerprint != c.fingerprint


@pytest.mark.parametrize("mode", ["vary", "fixed"])
def test_run_seeds_writes_the_group_summary(mode, runs_dir):
    args = ["run", str(CONFIGS / "toppop.yaml"), *[x for s in SMALL for x in ("--set", s)],
            "--seeds", "0,1,2", "--seeds-split", mode, "--json", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    group = Path(out["group_dir"])
    assert group.parent == runs_dir and group.name.endswith("-seeds")
    members = pd.read_csv(group / "members.csv")
    assert members["seed"].tolist() == [0, 1, 2] and (members["status"] == "succeeded").all()
    fingerprints = members["split_fingerprint"].tolist()
    if mode == "vary":
        assert len(set(fingerprints)) == 3
    else:
        assert len(set(fingerprints)) == 1
    for seed, run_dir in zip(members["seed"], members["run_dir"]):
        config = load_config(Path(run_dir) / "config.yaml")
        assert config.experiment.seed == seed
        assert (group / f"seed-{seed}").resolve() == Path(run_dir).resolve()
    # the summary is the members' metrics, averaged by hand
    values = np.array([pd.read_csv(Path(d) / "metrics.csv").query("cutoff == 10 and metric == 'NDCG'")["value"].iloc[0]
                       for d in members["run_dir"]])
    summary = pd.read_csv(group / "summary.csv").query("cutoff == 10 and metric == 'NDCG'").iloc[0]
    assert summary["mean"] == pytest.approx(values.mean()) and summary["sd"] == pytest.approx(values.std(ddof=1))
    assert summary["ci_high"] - summary["mean"] == pytest.approx(T_975_DF2 * values.std(ddof=1) / math.sqrt(3))
    assert json.loads((group / "summary.json").read_text())["split"] == mode
    assert f"| 10 | NDCG | 3 | {values.mean():.6f} |" in (group / "summary.md").read_text()


def test_a_group_evaluated_on_the_validation_split_summarises_its_tables(runs_dir):
    args = ["run", str(CONFIGS / "toppop.yaml"), *[x for s in SMALL for x in ("--set", s)],
            "--set", "evaluation.split=val", "--seeds", "0,1", "--json", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    group = Path(json.loads(result.stdout)["group_dir"])
    members = pd.read_csv(group / "members.csv")
    values = [pd.read_csv(Path(d) / "metrics-val.csv").query("cutoff == 10 and metric == 'NDCG'")["value"].iloc[0]
              for d in members["run_dir"]]
    assert not any((Path(d) / "metrics.csv").exists() for d in members["run_dir"])
    summary = pd.read_csv(group / "summary.csv").query("cutoff == 10 and metric == 'NDCG'").iloc[0]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(np.mean(values))


def test_bad_input_stops_the_group_without_leaving_a_folder(runs_dir):
    args = ["run", str(CONFIGS / "ease.yaml"), "--set", "data.dataset=movielens-100k",
            "--set", f"data.source={runs_dir.parent / 'missing.zip'}", "--seeds", "0,1,2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "missing.zip" in result.stderr
    assert result.stderr.count("error:") == 1  # the first seed's error, not three
    assert not list(runs_dir.glob("*-seeds"))
