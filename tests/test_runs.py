"""Run directories, atomic writes, devices and the MLP-on-Iris sanity check end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recsys_cli import atomic, experiment
from recsys_cli.cli.app import app
from recsys_cli.config import load_config
from recsys_cli.devices import resolve_device, resolve_dtype
from recsys_cli.errors import DeviceError
from recsys_cli.models.mlp_iris import MLPIris

from .conftest import CONFIGS, REPO_ROOT

runner = CliRunner()
IRIS = str(CONFIGS / "mlp-iris.yaml")
RUN_FILES = {"config.yaml", "env.json", "log.txt", "status.json", "timing.json", "metrics.csv", "metrics.json",
             "metrics.md", "loss_curve.csv"}


def test_atomic_write_replaces_whole_or_nothing(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "half')
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no temp file left behind
    atomic.write_text(target, "new")
    assert target.read_text() == "new"


def test_a_runs_folder_blocked_by_a_file_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    for runs_dir in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        monkeypatch.setenv("RECSYS_RUNS_DIR", str(runs_dir))
        result = runner.invoke(app, ["run", str(CONFIGS / "toppop.yaml"), "--set", "data.dataset=synthetic"])
        assert result.exit_code == 2, result.stderr
        assert f"cannot create the folder {runs_dir}: {tmp_path / 'afile'} is a file" in result.stderr
        assert "Traceback" not in result.stderr


def test_json_output_is_strict_json(tmp_path):
    import numpy as np

    obj = {"inf": float("inf"), "rows": [np.float32("nan"), -np.inf, 1.5, np.int64(3)], "nested": {"t": torch.tensor(2.0)}}
    text = atomic.json_text(obj)

    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    assert json.loads(text, parse_constant=refuse) == {"inf": None, "rows": [None, None, 1.5, 3], "nested": {"t": 2.0}}
    atomic.write_json(tmp_path / "x.json", obj)
    assert (tmp_path / "x.json").read_text() == text


def test_tidy_metrics_are_replaced_as_a_set_or_not_at_all(tmp_path, monkeypatch):
    from recsys_cli import rundir

    rundir.write_tidy_metrics(tmp_path, [{"epoch": 1, "accuracy": 0.5}], title="old")
    names = ("metrics.csv", "metrics.json", "metrics.md")
    old = {name: (tmp_path / name).read_bytes() for name in names}
    assert old["metrics.csv"] == b"epoch,accuracy\n1,0.5\n" and b"| 1 | 0.500000 |" in old["metrics.md"]

    def broken(value):
        raise RuntimeError("markdown rendering failed")

    monkeypatch.setattr(rundir, "_fmt", broken)
    with pytest.raises(RuntimeError, match="markdown rendering failed"):
        rundir.write_tidy_metrics(tmp_path, [{"epoch": 2, "accuracy": 0.75}], title="new")
    assert {name: (tmp_path / name).read_bytes() for name in names} == old  # the old set, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files left


def test_write_together_renames_only_once_every_file_is_written(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "blocked" / "b.txt"
    first.write_text("old")
    (tmp_path / "blocked").write_text("a file where a folder should be")
    with pytest.raises(OSError):
        atomic.write_together({first: "new", second: b"new"})
    assert first.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "blocked"]
    atomic.write_together({first: "new", tmp_path / "c.bin": b"\x00\x01"})
    assert first.read_text() == "new" and (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert first.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK


def test_mlp_iris_run_directory_is_complete_and_reproducible(runs_dir):
    first = runner.invoke(app, ["train", IRIS, "--json"])
    assert first.exit_code == 0, first.stderr
    second = runner.invoke(app, ["train", IRIS, "--json"])
    assert second.exit_code == 0, second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    run_a, run_b = Path(a["run_dir"]), Path(b["run_dir"])
    assert run_a != run_b and run_a.parent == runs_dir
    assert RUN_FILES <= {p.name for p in run_a.iterdir()}
    assert (run_a / "model" / "model.pt").is_file()
    # name: <UTC time>-<experiment name>-<config hash>
    stamp, name_and_hash = run_a.name.split("-", 1)
    assert stamp.endswith("Z") and name_and_hash.startswith("mlp-iris-")
    assert json.loads((run_a / "status.json").read_text())["status"] == "succeeded"
    env = json.loads((run_a / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["device"].startswith("cpu") and "command_line" in env
    timing = json.loads((run_a / "timing.json").read_text())
    assert {"data_load", "fit", "evaluate"} <= set(timing["seconds"]) and timing["peak_rss_bytes"] > 0
    assert "test accuracy" in (run_a / "log.txt").read_text()
    # accuracy on the held-out rows, at least 0.9 with the shipped config
    metrics = {(m["split"], m["metric"]): m["value"] for m in a["metrics"]}
    assert metrics[("test", "accuracy")] >= 0.9
    # same seed, same numbers: metrics and the whole loss curve
    assert a["metrics"] == b["metrics"]
    curve_a, curve_b = pd.read_csv(run_a / "loss_curve.csv"), pd.read_csv(run_b / "loss_curve.csv")
    assert len(curve_a) == 100
    pd.testing.assert_frame_equal(curve_a, curve_b)
    # runs/latest names the newest run
    assert (runs_dir / "latest").resolve() == run_b.resolve()


def test_test_accuracy_is_measured_on_held_out_rows():
    from recsys_cli.models.mlp_iris import MLPIrisConfig, load_iris_split

    data = load_iris_split(MLPIrisConfig())
    assert len(data.x_train) == 120 and len(data.x_test) == 30
    train_rows = {tuple(r) for r in data.x_train.tolist()}
    # Iris has one duplicated row; all but that are absent from the training rows
    assert sum(tuple(r) in train_rows for r in data.x_test.tolist()) <= 1


def only_run(runs_dir: Path) -> Path:
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    return run


def test_a_run_that_raises_midway_is_failed_without_metrics(monkeypatch, runs_dir):
    def boom(self, data, training):
        raise RuntimeError("simulated crash during fit")

    monkeypatch.setattr(MLPIris, "fit", boom)
    result = runner.invoke(app, ["train", IRIS])
    # an unexpected exception is one line on stderr (not a traceback) and exit code 1
    assert result.exit_code == 1
    assert "RuntimeError: simulated crash during fit" in result.stderr and "Traceback" not in result.stderr
    run = only_run(runs_dir)  # runs/latest moves only when a run succeeds
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "simulated crash during fit" in status["error"]
    assert not any((run / name).exists() for name in ("metrics.csv", "metrics.json", "metrics.md"))
    assert (run / "log.txt").exists() and (run / "timing.json").exists()


def test_nan_loss_fails_the_run_with_a_clear_message(runs_dir):
    result = runner.invoke(app, ["train", IRIS, "--set", "training.learning_rate=1e30", "--set", "training.epochs=5"])
    assert result.exit_code == 1
    assert "loss became" in result.stderr and "learning_rate" in result.stderr
    status = json.loads((only_run(runs_dir) / "status.json").read_text())
    assert status["status"] == "failed" and "epoch" in status["error"]


def test_absent_accelerator_is_a_clear_error():
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="accelerator=cpu"):
            resolve_device("cuda", log=False)
        result = runner.invoke(app, ["train", IRIS, "--set", "device.accelerator=cuda"])
        assert result.exit_code == 2 and "no CUDA device" in result.stderr
    assert resolve_device("cpu", log=False) == torch.device("cpu")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(DeviceError):
        resolve_dtype("float64", torch.device("mps"))


def test_dtype_is_applied_to_the_model():
    result = experiment.train(load_config(IRIS, ["device.dtype=float64", "training.epochs=2"]))
    state = torch.load(result.run_dir / "model" / "model.pt", weights_only=True)
    assert all(t.dtype == torch.float64 for t in state.values())


@pytest.mark.parametrize("command", ["download", "split", "train", "evaluate", "run", "compare", "bench-dtype",
                                     "info", "models", "config", "config show", "config validate"])
def test_every_subcommand_has_help(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    assert len(result.stdout.strip().splitlines()) > 4


def test_info_reports_versions_and_devices():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["versions"]["torch"] == torch.__version__
    assert facts["accelerators"]["cpu"]["threads"] == torch.get_num_threads()
    assert facts["directories"]["data_dir"] == str(Path(os.environ["RECSYS_DATA_DIR"]).resolve())


def test_models_lists_registered_models():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    listing = json.loads(result.stdout)
    assert listing["mlp-iris"]["hidden"]["default"] == [16, 32]


def test_installed_script_runs_as_a_real_subprocess(tmp_path):
    script = shutil.which("recsys")
    commands = [[sys.executable, "-m", "recsys_cli"]] + ([[script]] if script else [])
    for base in commands:
        out = subprocess.run([*base, "--version"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.startswith("recsys ")
        bad = subprocess.run([*base, "config", "validate", str(tmp_path / "missing.yaml")], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and "does not exist" in bad.stderr and bad.stdout == ""
    if script is None:
        pytest.skip("the `recsys` console script is not on PATH (package not pip-installed)")
    env = {**os.environ, "RECSYS_RUNS_DIR": str(tmp_path / "runs")}
    out = subprocess.run([script, "train", IRIS, "--set", "training.epochs=3", "--json", "-q"], capture_output=True,
                         text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert Path(json.loads(out.stdout)["run_dir"]).is_dir()


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    # mkstemp makes 0600 files; a metrics file or cache manifest must be as readable as open() would make it
    target = tmp_path / "f.txt"
    atomic.write_text(target, "x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK


def test_memory_figures_are_this_process_own():
    import sys as _sys

    from recsys_cli.devices import current_rss_bytes, peak_rss_bytes

    if not _sys.platform.startswith("linux"):
        pytest.skip("VmRSS/VmHWM are Linux figures")
    now, peak = current_rss_bytes(), peak_rss_bytes()
    assert 0 < now <= peak
    block = bytearray(64 * 2**20)  # touch 64 MiB: the high-water mark must rise by about that much
    block[:: 4096] = b"x" * len(block[:: 4096])
    assert peak_rss_bytes() >= now + 60 * 2**20


def test_a_runs_thread_count_is_its_own_and_the_callers_comes_back(tmp_path):
    before = torch.get_num_threads()
    config = load_config(CONFIGS / "toppop.yaml", [f"experiment.runs_dir={tmp_path}", "data.dataset=synthetic",
                                                   "data.synthetic.n_users=200", "data.synthetic.n_items=50",
                                                   "data.synthetic.n_interactions=2000",
                                                   f"device.threads={before + 1}"], env={})
    result = experiment.run(config)
    env = json.loads((result.run_dir / "env.json").read_text())
    assert env["device"].endswith(f"({before + 1} threads)") and env["torch_threads"] == before + 1
    assert torch.get_num_threads() == before
