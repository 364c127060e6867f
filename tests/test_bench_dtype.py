"""`recsys bench-dtype`: planning, probing, error classification, the summary, and real subprocess runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli.bench.dtype import BenchResult, Variant, bench_dtype, parse_dtypes, plan_variants, probe, select_metrics
from recsys_cli.bench.report import as_json, fmt_delta, summarise
from recsys_cli.bench.worker import FAIL_ENV, classify_error, metrics_of
from recsys_cli.cli.app import app
from recsys_cli.config import load_config
from recsys_cli.errors import ConfigError, DataError, DeviceError, RunFailed

from .conftest import CONFIGS

runner = CliRunner()
IRIS = str(CONFIGS / "mlp-iris.yaml")
REPORT_FILES = {"bench_dtype.csv", "bench_dtype.md", "bench_dtype.png", "bench_dtype.json", "bench_dtype_repeats.csv",
                "config.yaml", "env.json", "status.json", "log.txt", "timing.json"}


# -- planning and probing -------------------------------------------------------------------------
def test_parse_dtypes_defaults_dedupes_and_rejects_unknown():
    assert parse_dtypes(None) == ["float32", "float64", "float16", "bfloat16"]
    assert parse_dtypes("float16, float32,float16") == ["float16", "float32"]
    with pytest.raises(ConfigError, match="unknown dtype half"):
        parse_dtypes("float32,half")
    with pytest.raises(ConfigError):
        parse_dtypes(" , ")


def test_cuda_float32_gets_tf32_on_and_off_rows_cpu_does_not():
    dtypes = ["float32", "float16"]
    assert [v.label for v in plan_variants(dtypes, torch.device("cpu"))] == ["float32", "float16"]
    cuda = plan_variants(dtypes, torch.device("cuda"))
    assert [(v.label, v.dtype, v.tf32) for v in cuda] == [
        ("float32", "float32", False), ("float32+tf32", "float32", True), ("float16", "float16", False)]


def test_probe_flags_float64_on_mps_and_tf32_off_cuda_without_touching_the_device():
    assert "float64 is not supported on Apple MPS" in probe(Variant("float64", "float64"), torch.device("mps"))
    assert probe(Variant("float32+tf32", "float32", True), torch.device("cpu")) == "TF32 exists only on CUDA"
    assert probe(Variant("float32", "float32"), torch.device("cpu")) is None

    class Picky:
        name = "picky"
        supported_dtypes = ("float32", "float64")

    assert probe(Variant("float16", "float16"), torch.device("cpu"), Picky) == "picky supports only float32, float64"


def test_select_metrics_expands_cutoffs_for_recommenders():
    config = load_config(IRIS)
    assert select_metrics(config, "classification", None) == ["test_accuracy", "test_loss"]
    config.evaluation.cutoffs = [5, 10]
    assert select_metrics(config, "recommendation", None) == ["NDCG@5", "NDCG@10", "RECALL@5", "RECALL@10"]
    assert select_metrics(config, "recommendation", ["MAP", "HIT_RATE@5"]) == ["MAP@5", "MAP@10", "HIT_RATE@5"]


# -- worker error classification --------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")
def test_real_torch_low_precision_errors_classify_as_unsupported():
    x = torch.ones(3, 3, dtype=torch.float16)
    with pytest.raises(Exception) as sparse_err:
        x.to_sparse_csr() @ x  # no float16 sparse-CSR product on CPU
    assert classify_error(sparse_err.value) == "unsupported"
    with pytest.raises(Exception) as inv_err:
        torch.linalg.inv(x + torch.eye(3, dtype=torch.float16))
    assert classify_error(inv_err.value) == "unsupported"


def test_run_errors_classify_as_failed_and_capability_errors_as_unsupported():
    assert classify_error(DeviceError("float64 is not supported on Apple MPS")) == "unsupported"
    assert classify_error(RunFailed("loss became nan at epoch 3")) == "failed"
    assert classify_error(DataError("split differs")) == "failed"
    assert classify_error(ValueError("anything else")) == "failed"
    assert classify_error(RuntimeError("CUDA out of memory")) == "failed"
    assert classify_error(RunFailed("the loss is not supported by the evaluator")) == "failed"  # wording aside
    assert classify_error(DeviceError("ease does not take float16", hint="use float32")) == "unsupported"


def test_metrics_of_flattens_classifier_rows_and_evaluator_records():
    rows = [{"split": "test", "metric": "accuracy", "value": 0.9}, {"split": "train", "metric": "loss", "value": 1}]
    assert metrics_of(rows) == {"test_accuracy": 0.9, "train_loss": 1.0}

    class Result:
        def to_records(self):
            return [{"cutoff": 10, "metric": "NDCG", "value": 0.25}, {"cutoff": 5, "metric": "MAP", "value": 0.5}]

    assert metrics_of(Result()) == {"NDCG@10": 0.25, "MAP@5": 0.5}
    assert metrics_of(None) == {}
    from_file = metrics_of([{"cutoff": 10, "metric": "NDCG", "value": None}])  # metrics.json writes NaN as null
    assert list(from_file) == ["NDCG@10"] and math.isnan(from_file["NDCG@10"])


# -- the summary --------------------------------------------------------------------------------
def _attempt(variant, repeat, status="ok", fit=1.0, ev=0.5, mem=100, acc=0.9, reason=None):
    return {"variant": variant, "dtype": variant.split("+")[0], "repeat": repeat, "status": status, "reason": reason,
            "fit_s": fit, "eval_s": ev, "total_s": fit + ev, "peak_memory_bytes": mem, "memory_kind": "rss",
            "metrics": {"acc": acc}}


def test_summary_medians_ranges_deltas_and_statuses_are_hand_checked():
    variants = [Variant("float32", "float32"), Variant("float64", "float64"), Variant("float16", "float16"),
                Variant("bfloat16", "bfloat16"), Variant("nanny", "float16")]
    attempts = [
        _attempt("float32", 1, fit=2.0, ev=1.0, mem=300), _attempt("float32", 2, fit=4.0, ev=1.0, mem=100),
        _attempt("float32", 3, fit=3.0, ev=2.0, mem=200),
        _attempt("float64", 1, fit=6.0, ev=0.0, acc=0.95), _attempt("float64", 2, status="failed", reason="boom"),
        _attempt("float16", 1, status="unsupported", reason='"lu_cpu" not implemented for \'Half\''),
        _attempt("nanny", 1, acc=math.nan, status="nan", reason="non-finite metrics: acc"),
        _attempt("nanny", 2, acc=0.5),
    ]
    rows = {r["variant"]: r for r in summarise(variants, attempts, {"bfloat16": "no bf16 here"}, ["acc"],
                                               repeats=3, device="cpu")}
    f32 = rows["float32"]
    assert (f32["status"], f32["repeats_ok"], f32["repeats_run"]) == ("ok", 3, 3)
    assert (f32["fit_s_median"], f32["fit_s_min"], f32["fit_s_max"]) == (3.0, 2.0, 4.0)
    assert (f32["total_s_median"], f32["total_s_min"], f32["total_s_max"]) == (5.0, 3.0, 5.0)
    assert (f32["peak_memory_bytes_median"], f32["peak_memory_bytes_max"]) == (200, 300)
    assert f32["acc_delta"] == 0.0 and f32["speedup_vs_float32"] == 1.0
    f64 = rows["float64"]  # one failed repeat: timings come from the one that finished
    assert (f64["status"], f64["reason"], f64["repeats_ok"]) == ("1/2 ok", "boom", 1)
    assert f64["total_s_median"] == 6.0 and f64["speedup_vs_float32"] == pytest.approx(5.0 / 6.0)
    assert f64["acc_delta"] == pytest.approx(0.05)
    assert rows["float16"]["status"] == "unsupported" and "Half" in rows["float16"]["reason"]
    assert rows["float16"]["fit_s_median"] is None and rows["float16"]["acc_delta"] is None
    assert (rows["bfloat16"]["status"], rows["bfloat16"]["reason"]) == ("unsupported", "no bf16 here")
    nanny = rows["nanny"]  # a NaN repeat is not hidden by the median
    assert nanny["status"] == "1/2 ok" and math.isnan(nanny["acc"]) and math.isnan(nanny["acc_delta"])
    result = BenchResult(Path("."), "cpu", variants, attempts, list(rows.values()), ["acc"])
    strict = json.loads(json.dumps(as_json(result), allow_nan=False))  # --json output is standard JSON
    assert strict["rows"][4]["acc"] is None and strict["repeats"][6]["metrics"]["acc"] is None


def test_a_model_that_computes_in_another_dtype_says_so_in_its_row():
    attempts = [_attempt("float32", 1), {**_attempt("float16", 1), "computed_as": "float32"}]
    rows = summarise([Variant("float32", "float32"), Variant("float16", "float16")], attempts, {}, ["acc"],
                     repeats=1, device="cpu")
    assert rows[0]["computed_as"] is None and rows[0]["reason"] is None
    assert (rows[1]["status"], rows[1]["computed_as"]) == ("ok (float32)", "float32")
    assert rows[1]["reason"] == "the model computed in float32, not float16"


def test_fmt_delta_keeps_tiny_differences_visible():
    assert fmt_delta(0.0) == "±0"
    assert fmt_delta(1.07e-4) == "+1.1e-04"
    assert fmt_delta(-0.0123) == "-0.0123"
    assert fmt_delta(math.nan) == "nan"


# -- real subprocess runs -----------------------------------------------------------------------
def _metrics_json(run_dir: Path) -> dict[str, float]:
    return metrics_of(json.loads((run_dir / "metrics.json").read_text()))


def test_mlp_iris_rows_are_the_subprocess_outputs_and_a_forced_failure_stays_in_its_row(monkeypatch):
    monkeypatch.setenv(FAIL_ENV, "float16,bfloat16:unsupported")
    config = load_config(IRIS, ["training.epochs=3"])
    # A parent much larger than a worker: Linux hands its ru_maxrss on through fork + exec, and a
    # worker must report its own peak, not this.
    ballast = np.ones(2**30 // 8)
    result = bench_dtype(config, dtypes=["float32", "float16", "bfloat16"], repeats=2, accelerator="cpu",
                         timeout_s=300)
    del ballast

    assert REPORT_FILES <= {p.name for p in result.run_dir.iterdir()}
    assert result.run_dir.name.split("-", 1)[1].startswith("mlp-iris-bench-dtype-")
    assert json.loads((result.run_dir / "status.json").read_text())["status"] == "succeeded"
    assert (result.run_dir / "bench_dtype.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    env = json.loads((result.run_dir / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["split"]["fingerprint"] == result.split_fingerprint

    table = pd.read_csv(result.run_dir / "bench_dtype.csv").set_index("variant")
    assert table.loc["float16", "status"] == "failed" and "forced failure" in table.loc["float16", "reason"]
    assert table.loc["float32", "status"] == "ok" and table.loc["float32", "repeats_ok"] == 2
    # unsupported is found by the first repeat; the second is not attempted
    assert table.loc["bfloat16", "status"] == "unsupported" and table.loc["bfloat16", "repeats_run"] == 1
    assert "not implemented for 'bfloat16'" in table.loc["bfloat16", "reason"]

    ok = [a for a in result.repeats if a["variant"] == "float32"]
    assert [a["repeat"] for a in ok] == [1, 2]
    fits, accs = [], []
    for attempt in ok:  # every tabulated number traces back to that repeat's own run directory
        run_dir = Path(attempt["run_dir"])
        assert run_dir.parent == result.run_dir / "runs"
        timing = json.loads((run_dir / "timing.json").read_text())
        assert attempt["fit_s"] == timing["seconds"]["fit"]
        assert attempt["metrics"] == _metrics_json(run_dir)
        assert attempt["split_fingerprint"] == result.split_fingerprint
        assert 2**30 > attempt["peak_memory_bytes"] > attempt["rss_after_import_bytes"] > 0
        fits.append(attempt["fit_s"])
        accs.append(attempt["metrics"]["test_accuracy"])
    assert table.loc["float32", "fit_s_median"] == pytest.approx(sum(fits) / 2)
    assert table.loc["float32", "fit_s_min"] == pytest.approx(min(fits))
    assert table.loc["float32", "test_accuracy"] == pytest.approx(sum(accs) / 2)
    assert accs[0] == accs[1]  # same config and seed in two fresh processes → same numbers
    repeats = pd.read_csv(result.run_dir / "bench_dtype_repeats.csv")
    # interleaved: repeat 1 of each dtype, then repeat 2 of those still worth running
    assert list(zip(repeats["variant"], repeats["status"])) == [
        ("float32", "ok"), ("float16", "failed"), ("bfloat16", "unsupported"), ("float32", "ok"), ("float16", "failed")]
    md = (result.run_dir / "bench_dtype.md").read_text()
    assert "| float32 | ok |" in md and "forced failure" in md


def test_cli_timeout_rows_and_exit_code_when_every_dtype_fails(runs_dir):
    out = runner.invoke(app, ["bench-dtype", IRIS, "--dtypes", "float32", "--repeats", "1", "--timeout", "0.2",
                              "--device", "cpu", "--json"])
    assert out.exit_code == 1, out.output
    assert "every dtype failed" in out.stderr
    bench_dir = next(p for p in runs_dir.iterdir() if "bench-dtype" in p.name)
    table = pd.read_csv(bench_dir / "bench_dtype.csv")
    assert list(table["status"]) == ["timeout"]
    assert json.loads((bench_dir / "status.json").read_text())["status"] == "failed"


def test_cli_rejects_bad_arguments_with_one_line():
    out = runner.invoke(app, ["bench-dtype", IRIS, "--dtypes", "float8"])
    assert out.exit_code == 2 and "unknown dtype float8" in out.stderr
    out = runner.invoke(app, ["bench-dtype", IRIS, "--repeats", "0"])
    assert out.exit_code == 2 and "--repeats 0 must be at least 1" in out.stderr
    out = runner.invoke(app, ["bench-dtype", IRIS, "--device", "tpu"])
    assert out.exit_code == 2 and "'tpu' is not one of" in out.output  # a choice, refused by the parser


# -- recommenders on the synthetic data set -------------------------------------------------------
SYNTHETIC = ["data.dataset=synthetic", "data.synthetic.n_users=200", "data.synthetic.n_items=120",
             "data.synthetic.n_interactions=4000", "evaluation.cutoffs=[5,10]"]


def _check_recommender_bench(result, variants: list[str]) -> None:
    assert REPORT_FILES <= {p.name for p in result.run_dir.iterdir()}
    table = pd.read_csv(result.run_dir / "bench_dtype.csv").set_index("variant")
    assert list(table.index) == variants and set(table["status"]) == {"ok"}
    env = json.loads((result.run_dir / "env.json").read_text())
    split_dir = env["split"]["directory"]
    for attempt in result.repeats:
        run_dir = Path(attempt["run_dir"])
        run_env = json.loads((run_dir / "env.json").read_text())
        # the split was made once by the benchmark, and every repeat used that very split
        assert run_env["split"] == {"fingerprint": result.split_fingerprint, "directory": split_dir}
        assert attempt["metrics"] == _metrics_json(run_dir)
        assert attempt["fit_s"] == json.loads((run_dir / "timing.json").read_text())["seconds"]["fit"]
        row = table.loc[attempt["variant"]]
        for name in ("NDCG@5", "NDCG@10", "RECALL@5", "RECALL@10"):
            assert row[name] == pytest.approx(attempt["metrics"][name])
            assert row[f"{name}_delta"] == pytest.approx(attempt["metrics"][name] - table.loc["float32", name])
    assert 0 < table.loc["float32", "NDCG@10"] <= 1


def test_synthetic_ease_through_the_cli_with_json(runs_dir):
    args = ["bench-dtype", str(CONFIGS / "ease.yaml"), "--dtypes", "float32,float64", "--repeats", "1",
            "--device", "cpu", "--json", *[a for kv in SYNTHETIC for a in ("--set", kv)]]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    from recsys_cli.bench.dtype import BenchResult as Result

    result = Result(Path(payload["run_dir"]), "cpu", [], payload["repeats"], payload["rows"], payload["metrics"],
                    payload["split_fingerprint"])
    assert Path(payload["run_dir"]).parent == runs_dir
    _check_recommender_bench(result, ["float32", "float64"])
    assert "dtype" in out.stderr and "NDCG@10 (Δ)" in out.stderr  # the rich table went to stderr


def test_synthetic_two_tower():
    # one dtype keeps the test short: the EASE and mlp-iris tests already cover several rows and deltas
    config = load_config(CONFIGS / "two-tower-2.yaml",
                         [*SYNTHETIC, "training.epochs=1", "training.batch_size=2048", "model.layers=[8,4]"])
    result = bench_dtype(config, dtypes=["float32"], repeats=1, accelerator="cpu", timeout_s=300)
    _check_recommender_bench(result, ["float32"])
    assert result.repeats[0]["peak_memory_bytes"] > 0 and result.repeats[0]["memory_kind"] == "rss"
