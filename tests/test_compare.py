"""`recsys compare`: seed groups, paired tests against a baseline, refusals, formats and files.

Runs are built by hand: a config, env.json with a split fingerprint, status.json, and metrics files plus
per-user.parquet from the real evaluator on a small random split with fixed scores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy import stats as sst
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config import Config
from recsys_cli.evaluation import evaluate
from recsys_cli.evaluation.per_user import read_per_user
from recsys_cli.evaluation.report import write_metrics
from recsys_cli.rundir import RunDirectory

runner = CliRunner()
N_USERS, N_ITEMS = 400, 50
RNG = np.random.default_rng(0)
TRAIN = sp.random(N_USERS, N_ITEMS, density=0.1, random_state=1, format="csr", data_rvs=lambda n: np.ones(n))
_test = sp.random(N_USERS, N_ITEMS, density=0.08, random_state=2, format="csr", data_rvs=lambda n: np.ones(n))
TEST = sp.csr_matrix(_test - _test.multiply(TRAIN != 0))
TEST.eliminate_zeros()
NOISE = RNG.normal(size=(N_USERS, N_ITEMS))
INFORMED = NOISE + 2.0 * TEST.toarray()  # a model that knows the test items: clearly better


def make_run(runs_dir: Path, name: str, scores: np.ndarray, *, seed: int = 0, l2: float = 1.0,
             fingerprint: str = "fp-one-aaaaaaaa", status: str = "succeeded", split: str = "test",
             cutoffs=(5, 10), bench: bool = False, per_user: bool = True, model: dict | None = None,
             training: dict | None = None) -> Path:
    config = Config.model_validate({
        "experiment": {"name": name, "seed": seed, "runs_dir": str(runs_dir)},
        "data": {"dataset": "synthetic"}, "model": model or {"name": "ease", "l2_norm": l2},
        "evaluation": {"cutoffs": list(cutoffs)}, "training": training or {},
    })
    run = RunDirectory.create(config)
    run.update_env(split={"fingerprint": fingerprint}, **({"bench": {"dtypes": ["float32"]}} if bench else {}))
    table = torch.from_numpy(scores)
    result = evaluate(lambda users: table[users].clone(), TRAIN, TEST, list(cutoffs), progress=False)
    write_metrics(run.path, result, split_name=split, fingerprint=fingerprint)
    if not per_user:
        (run.path / ("per-user.parquet" if split == "test" else "per-user-val.parquet")).unlink()
    run.timing.phases["fit"] = 2.0
    run.write_timing()
    run.write_status(status)
    return run.path


def invoke(*args: str):
    return runner.invoke(app, ["compare", *map(str, args)])


def test_identical_runs_give_p_1_and_no_mark(runs_dir, tmp_path):
    base = make_run(runs_dir, "base", NOISE, l2=1.0)
    same = make_run(runs_dir, "same", NOISE, l2=2.0)  # another hyperparameter, the same scores
    for fmt, ext in (("csv", "csv"), ("md", "md"), ("latex", "tex")):
        out = invoke(base, same, "--baseline", base, "--format", fmt, "--output", tmp_path / f"t.{ext}", "--json")
        assert out.exit_code == 0, out.stderr
        stats = json.loads(out.stdout)["statistics"]
        assert len(stats) == 4 and all(s["p_value"] == 1.0 and s["mean_diff"] == 0.0 for s in stats)
        assert not any(s["significant"] for s in stats)
        text = (tmp_path / f"t.{ext}").read_text()
        body = text.split("\n\n\\* p <")[0] if fmt == "md" else text.split("% ")[0]
        assert "*" not in body.replace("**", "")  # bold markers aside, no significance mark
    for test in ("ttest", "bootstrap"):
        other = invoke(base, same, "--baseline", base, "--test", test, "--output", tmp_path / f"{test}.csv", "--json")
        assert [s["p_value"] for s in json.loads(other.stdout)["statistics"]] == [1.0] * 4
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv["model.l2_norm"]) == [1.0, 2.0] or list(csv["model.l2_norm"]) == [2.0, 1.0]
    assert csv["NDCG@10 sig"].isna().all() and (csv["NDCG@10 p"].dropna() == 1.0).all()


def test_a_planted_improvement_is_detected_with_scipys_p_values(runs_dir, tmp_path):
    base = make_run(runs_dir, "base", NOISE, l2=1.0)
    better = make_run(runs_dir, "better", INFORMED, l2=5.0)
    out = invoke(base, better, "--baseline", base, "--metrics", "NDCG@10,RECALL@5", "--correction", "none",
                 "--output", tmp_path / "t.csv", "--json")
    assert out.exit_code == 0, out.stderr
    stats = {s["metric"]: s for s in json.loads(out.stdout)["statistics"]}
    a, b = read_per_user(better), read_per_user(base)
    for metric in ("NDCG@10", "RECALL@5"):
        s = stats[metric]
        assert s["p_value"] == sst.wilcoxon(a[metric], b[metric]).pvalue  # SciPy's, on the same vectors
        assert s["significant"] and s["p_value"] < 1e-6 and s["mean_diff"] > 0.1
        assert s["n_users"] == len(a) and s["ci_low"] < s["mean_diff"] < s["ci_high"]
        assert s["mean_diff"] == pytest.approx(a[metric].mean() - b[metric].mean())
    rows = pd.read_csv(tmp_path / "t.csv")
    assert rows["run"][0] == better.name and rows["NDCG@10 sig"][0] == "*"  # best first, and marked
    stats_file = pd.read_csv(tmp_path / "t.csv.stats.csv")
    assert set(stats_file["metric"]) == {"NDCG@10", "RECALL@5"} and (stats_file["test"] == "wilcoxon").all()
    # ttest + Holm: the corrected p-values are Holm's over the 2 tests of SciPy's ttest_rel p-values
    out = invoke(base, better, "--baseline", base, "--metrics", "NDCG@10,RECALL@5", "--test", "ttest",
                 "--output", tmp_path / "t2.csv", "--json")
    stats = json.loads(out.stdout)["statistics"]
    raw = [sst.ttest_rel(a[s["metric"]], b[s["metric"]]).pvalue for s in stats]
    assert [s["p_value"] for s in stats] == raw
    small, large = sorted(raw)
    expected = {small: min(1, 2 * small), large: max(min(1, 2 * small), large)}
    assert [s["p_adjusted"] for s in stats] == pytest.approx([expected[p] for p in raw])
    md = invoke(base, better, "--baseline", base, "--output", tmp_path / "m.md")
    assert md.exit_code == 0
    text = (tmp_path / "m.md").read_text()
    assert re.search(r"\*\*0\.\d{4}\*\*\\\*", text)  # the best value is bold and marked significant
    assert "p < 0.05 against" in text and "holm correction over 4 tests" in text
    tex = invoke(base, better, "--baseline", base, "--output", tmp_path / "l.tex")
    latex = (tmp_path / "l.tex").read_text()
    assert tex.exit_code == 0 and "\\toprule" in latex and "$^{*}$" in latex and "\\textbf{" in latex
    assert "base" in latex and "model.l2\\_norm" in latex  # escaped headers


def test_seed_groups_give_mean_and_sd_by_hand(runs_dir, tmp_path):
    shifts = [0.0, 0.5, 1.0]
    group = [make_run(runs_dir, f"ease-seed{s}", NOISE + shift * TEST.toarray(), seed=s)
             for s, shift in enumerate(shifts)]
    single = make_run(runs_dir, "other", NOISE, l2=9.0)
    out = invoke(*group, single, "--metrics", "NDCG@10", "--output", tmp_path / "g.csv", "--json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert len(rows) == 2
    row = next(r for r in rows if r["seeds"] == "0,1,2")
    values = [pd.read_csv(g / "metrics.csv").query("metric == 'NDCG' and cutoff == 10")["value"].item() for g in group]
    assert row["NDCG@10"] == pytest.approx(np.mean(values))
    assert row["NDCG@10 sd"] == pytest.approx(np.std(values, ddof=1))
    assert row["run"] == ";".join(g.name for g in group)
    md = invoke(*group, single, "--metrics", "NDCG@10", "--output", tmp_path / "g.md")
    assert md.exit_code == 0
    assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in (tmp_path / "g.md").read_text()
    assert "×3" in md.stderr
    # a group against a single-run baseline on the same split: per-user values averaged over the seeds
    tested = invoke(*group, single, "--metrics", "NDCG@10", "--baseline", single, "--test", "ttest",
                    "--output", tmp_path / "g2.csv", "--json")
    assert tested.exit_code == 0, tested.stderr
    stat = json.loads(tested.stdout)["statistics"][0]
    mean_vector = sum(read_per_user(g)["NDCG@10"] for g in group) / 3
    assert stat["p_value"] == sst.ttest_rel(mean_vector, read_per_user(single)["NDCG@10"]).pvalue


def test_columns_are_the_hyperparameters_each_row_uses(runs_dir, tmp_path):
    ease = make_run(runs_dir, "ease", NOISE, l2=3.0)
    dae = {"name": "dae", "hidden": [8]}
    short = make_run(runs_dir, "dae-short", NOISE, model=dae, training={"epochs": 5, "batch_size": 64})
    long = make_run(runs_dir, "dae-long", INFORMED, model=dae, training={"epochs": 7, "batch_size": 64})
    out = invoke(ease, short, long, "--metrics", "NDCG@10", "--output", tmp_path / "h.csv", "--json")
    assert out.exit_code == 0, out.stderr
    rows = {r["run"]: r for r in json.loads(out.stdout)["rows"]}
    hyper = [c for c in rows[ease.name] if c.startswith(("model.", "training."))]
    # each model's own keys tell it from the other; the DAE's batch size is the same in both DAE rows
    # and EASE, which does not train, has none: no column; epochs differ between the DAE rows
    assert {"model.l2_norm", "model.hidden"} <= set(hyper)
    assert [c for c in hyper if c.startswith("training.")] == ["training.epochs"]
    assert [rows[r.name]["training.epochs"] for r in (ease, short, long)] == [None, 5, 7]
    assert [rows[r.name]["model.l2_norm"] for r in (ease, short, long)] == [3.0, None, None]


@pytest.mark.parametrize("change,message", [
    ({"fingerprint": "fp-two-bbbbbbbb"}, "used split fp-two-bbbbb, which no baseline run used (the baseline's: fp-one-aaaaa)"),
    ({"cutoffs": (5, 20)}, "was evaluated at cutoffs [5, 20], the baseline"),
    ({"split": "val"}, "was evaluated on the val split, the baseline"),
    ({"per_user": False}, "has no per-user results (per-user.parquet)"),
])
def test_runs_that_cannot_be_paired_are_refused(runs_dir, tmp_path, change, message):
    base = make_run(runs_dir, "base", NOISE)
    other = make_run(runs_dir, "other", INFORMED, l2=3.0, **change)
    out = invoke(base, other, "--baseline", base, "--metrics", "RECALL@5", "--output", tmp_path / "x.csv")
    assert out.exit_code == 2, out.stderr
    assert message in out.stderr and other.name in out.stderr
    assert not (tmp_path / "x.csv").exists()
    plain = invoke(base, other, "--metrics", "RECALL@5", "--output", tmp_path / "y.csv")  # no tests: no refusal
    assert plain.exit_code == 0, plain.stderr


def test_failed_interrupted_and_benchmark_runs_are_left_out_unless_all(runs_dir, tmp_path):
    ok = make_run(runs_dir, "ok", NOISE)
    failed = make_run(runs_dir, "failed", NOISE, l2=2.0, status="failed")
    interrupted = make_run(runs_dir, "stopped", NOISE, l2=3.0, status="interrupted")
    bench = make_run(runs_dir, "bench", NOISE, l2=4.0, bench=True)
    repeat = make_run(bench / "runs", "bench-repeat", NOISE, l2=5.0)  # bench-dtype keeps its repeats inside
    assert invoke(repeat, "--output", tmp_path / "r.csv").exit_code == 2  # left out: nothing to compare
    out = invoke(runs_dir / "*", "--output", tmp_path / "a.csv", "--json")
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert [r["run"] for r in result["rows"]] == [ok.name]
    assert sorted(result["excluded"]) == sorted(p.name for p in (failed, interrupted, bench))
    assert "left out 3 failed, interrupted or benchmark run(s)" in out.stderr and "--all keeps them" in out.stderr
    every = invoke(runs_dir / "*", "--all", "--output", tmp_path / "b.csv", "--json")
    assert len(json.loads(every.stdout)["rows"]) == 4
    refused = invoke(ok, failed, "--baseline", failed, "--output", tmp_path / "c.csv")
    assert refused.exit_code == 2 and "the baseline" in refused.stderr and "status failed" in refused.stderr


def test_output_goes_to_the_runs_folder_and_never_over_a_users_file(runs_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = make_run(runs_dir, "one", NOISE)
    first = invoke(run, "--json")
    second = invoke(run, "--format", "md", "--json")
    assert first.exit_code == 0 and second.exit_code == 0
    a, b = Path(json.loads(first.stdout)["files"][0]), Path(json.loads(second.stdout)["files"][0])
    assert a.parent == b.parent == runs_dir and a != b
    assert re.fullmatch(r"compare-\d{8}T\d{6}Z(-\d+)?\.csv", a.name) and b.suffix == ".md"
    mine = tmp_path / "mine.csv"
    mine.write_text("my own notes\n")
    refused = invoke(run, "--output", mine)
    assert refused.exit_code == 2 and "already exists" in refused.stderr and "--force" in refused.stderr
    assert mine.read_text() == "my own notes\n"
    forced = invoke(run, "--output", mine, "--force")
    assert forced.exit_code == 0 and "NDCG@10" in mine.read_text()
    bad = invoke(run, "--format", "xlsx")
    assert bad.exit_code == 2 and "'xlsx' is not one of 'csv'," in bad.output
    bad = invoke(run, "--test", "anova")
    assert bad.exit_code == 2 and "'anova' is not one of" in bad.output


def test_the_terminal_table_fits_80_columns(runs_dir, tmp_path):
    runs = [make_run(runs_dir, f"a-rather-long-experiment-name-{i}", NOISE + i * TEST.toarray(), l2=float(i))
            for i in range(3)]
    out = invoke(*runs, "--baseline", runs[0], "--metrics",
                 "NDCG@10,RECALL@10,PRECISION@10,MAP@10,MRR@10,HIT_RATE@10,COVERAGE_ITEM@10",
                 "--output", tmp_path / "w.csv")
    assert out.exit_code == 0, out.stderr
    table = [line for line in out.stderr.splitlines() if line.startswith(("run", "1:", "2:", "3:"))]
    assert len(table) == 4 and all(len(line) <= 80 for line in table)
    assert "not shown to fit 80 columns:" in out.stderr
    assert "COVERAGE_ITEM@10" in pd.read_csv(tmp_path / "w.csv").columns  # the file keeps them all


def test_metric_directions_pick_the_best_value():
    from recsys_cli.evaluation.compare import direction

    assert direction("NDCG@10") == 1 and direction("AVERAGE_POPULARITY@10") == -1
    assert direction("RATIO_AVERAGE_POPULARITY@5") == -1 and direction("ITEMS_IN_GT@10") == 0
    assert direction("accuracy") == 1


# -- issue 17, bug 9 -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,content", [
    ("status.json", "[1, 2]"), ("status.json", '"succeeded"'), ("env.json", "[]"), ("timing.json", "3"),
    ("timing.json", '{"seconds": [1]}'), ("env.json", '{"split": "abc"}'),
])
def test_json_files_that_are_not_objects_do_not_crash_compare(runs_dir, tmp_path, name, content):
    run = make_run(runs_dir, "odd", NOISE)
    (run / name).write_text(content)
    out = invoke(run, "--output", tmp_path / "o.csv", "--json")
    assert out.exit_code == 0, out.stderr
    row = json.loads(out.stdout)["rows"][0]
    assert row["NDCG@10"] > 0
    if name == "status.json":
        assert row["status"] == "unknown"


@pytest.mark.parametrize("metrics,message", [
    ("NDCG@²", "--metrics entry 'NDCG@²' has no valid cutoff"),
    ("NDCG@3", "no run was evaluated at cutoff 3"),
    ("NDCG", "--metrics NDCG needs a cutoff"),
    ("FOO@10", "unknown metric 'FOO'"),
    ("accuracy", "no run has a metric named 'accuracy'"),
])
def test_unknown_metric_names_are_one_line_errors(runs_dir, tmp_path, metrics, message):
    run = make_run(runs_dir, "one", NOISE)
    out = invoke(run, "--metrics", metrics, "--output", tmp_path / "m.csv")
    assert out.exit_code == 2, out.stderr
    assert message in out.stderr and out.stderr.count("\n") == 1


def test_run_status_of_a_non_object_status_json_is_unknown(runs_dir):
    run = make_run(runs_dir, "odd", NOISE)
    (run / "status.json").write_text("[1, 2]")
    assert RunDirectory.open(run).status() == {"status": "unknown"}


def test_a_seed_group_folder_stands_for_its_member_runs(runs_dir, tmp_path):
    members = [make_run(runs_dir, "ease", NOISE, seed=s) for s in (0, 1)]
    group = runs_dir / "20250101T000000Z-ease-seeds"
    group.mkdir()
    for seed, member in zip((0, 1), members):
        (group / f"seed-{seed}").symlink_to(Path("..") / member.name, target_is_directory=True)
    (group / "members.csv").write_text("seed,run_dir\n")
    out = invoke(group, "--output", tmp_path / "s.csv", "--json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert [r["run"] for r in rows] == [";".join(m.name for m in members)] and rows[0]["seeds"] == "0,1"
    every = invoke(runs_dir / "*", "--output", tmp_path / "t.csv", "--json")  # members listed once
    assert json.loads(every.stdout)["rows"][0]["run"] == rows[0]["run"]


def test_a_running_run_whose_process_is_gone_is_left_out_as_dead(runs_dir, tmp_path):
    import subprocess
    import sys

    ok = make_run(runs_dir, "ok", NOISE)
    ghost = make_run(runs_dir, "ghost", NOISE, l2=2.0, status="running")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer exists: the run's process died without updating status.json
    status = json.loads((ghost / "status.json").read_text())
    status["pid"] = gone.pid
    (ghost / "status.json").write_text(json.dumps(status))
    out = invoke(runs_dir / "*", "--output", tmp_path / "a.csv", "--json")
    assert out.exit_code == 0, out.stderr
    result = json.loads(out.stdout)
    assert [r["run"] for r in result["rows"]] == [ok.name] and result["excluded"] == [ghost.name]
