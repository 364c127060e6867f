"""LightGCN asked for float16/bfloat16 on the CPU says that its propagation ran in float32 (issue 17, bug 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli.bench.dtype import Variant
from recsys_cli.bench.report import summarise
from recsys_cli.bench.worker import computed_as
from recsys_cli.cli.app import app

from .conftest import CONFIGS
from .test_lifecycle import SMALL

runner = CliRunner()
TINY = ["--set", "training.epochs=1", "--set", "model.dim=4", "--set", "model.layers=1", "--json"]


@pytest.mark.parametrize("dtype, expect_warning", [("float16", True), ("bfloat16", True), ("float32", False)])
def test_lightgcn_on_the_cpu_records_and_warns_what_ran(dtype, expect_warning):
    result = runner.invoke(app, ["train", str(CONFIGS / "lightgcn.yaml"), *SMALL, *TINY,
                                 "--set", f"device.dtype={dtype}"])
    assert result.exit_code == 0, result.stderr
    run = Path(json.loads(result.stdout)["run_dir"])
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["dtype"] == dtype and meta["compute_dtype"] == "float32"
    assert computed_as(run) == "float32"
    warned = f"the graph propagation runs in float32, not {dtype}" in " ".join(result.stderr.split())
    assert warned == expect_warning


def test_bench_dtype_status_says_what_ran():
    attempts = [{"variant": v, "dtype": v, "repeat": 1, "status": "ok", "reason": None, "fit_s": 1.0, "eval_s": 0.5,
                 "total_s": 1.5, "peak_memory_bytes": 1, "memory_kind": "rss", "metrics": {"acc": 0.5},
                 "computed_as": "float32"} for v in ("float32", "float16")]
    rows = summarise([Variant("float32", "float32"), Variant("float16", "float16")], attempts, {}, ["acc"],
                     repeats=1, device="cpu")
    assert [r["status"] for r in rows] == ["ok", "ok (float32)"]
