"""A run's lifecycle on a shared machine: signals, exit codes, live logs, dead runs, full disks and
runs/latest (issue 17: bug 10 and the lifecycle list)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli import rundir as rundir_mod
from recsys_cli.cli.app import app
from recsys_cli.config import load_config
from recsys_cli.rundir import RunDirectory

from .conftest import CONFIGS, REPO_ROOT

runner = CliRunner()
SMALL = ["--set", "data.dataset=synthetic", "--set", "data.synthetic.n_users=200", "--set", "data.synthetic.n_items=80",
         "--set", "data.synthetic.n_interactions=3000", "--set", "device.accelerator=cpu"]
TOPPOP = ["run", str(CONFIGS / "toppop.yaml"), *SMALL]


def run_dirs(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink() and p.name != "latest")


def test_a_real_folder_at_runs_latest_breaks_nothing(runs_dir):
    (runs_dir / "latest").mkdir(parents=True)
    (runs_dir / "latest" / "mine.txt").write_text("keep me")
    result = runner.invoke(app, TOPPOP)
    assert result.exit_code == 0, result.stderr
    assert "is a folder" in result.stderr and "left as it is" in result.stderr
    (run,) = run_dirs(runs_dir)
    assert json.loads((run / "status.json").read_text())["status"] == "succeeded"
    assert (runs_dir / "latest" / "mine.txt").read_text() == "keep me"


def test_latest_moves_only_when_a_run_succeeds(runs_dir):
    assert runner.invoke(app, TOPPOP).exit_code == 0
    (good,) = run_dirs(runs_dir)
    assert (runs_dir / "latest").resolve() == good.resolve()
    bad = runner.invoke(app, [*TOPPOP, "--set", "evaluation.ignore_items=[100000]"])  # fails at evaluation
    assert bad.exit_code == 2
    failed = next(p for p in run_dirs(runs_dir) if p != good)
    assert json.loads((failed / "status.json").read_text())["status"] == "failed"
    assert (runs_dir / "latest").resolve() == good.resolve()


def test_runs_latest_resolves_under_recsys_runs_dir(runs_dir, tmp_path, monkeypatch):
    assert runner.invoke(app, TOPPOP).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["evaluate", "runs/latest"])
    assert result.exit_code == 0, result.stderr
    assert RunDirectory.open("runs/latest").path == run_dirs(runs_dir)[0].resolve()


def test_checks_that_need_no_run_directory_come_first(runs_dir, tmp_path):
    for args, message in (
        (["--set", "data.dataset=movielens-99m"], "movielens-99m"),
        (["--set", "device.accelerator=mps"], "mps"),
        (["--set", "data.synthetic.n_users=1000000000000"], "synthetic data set needs about"),
    ):
        result = runner.invoke(app, [*TOPPOP, *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.stderr)
        assert not runs_dir.exists() or run_dirs(runs_dir) == [], args


def test_status_records_pid_and_host_and_a_gone_process_reads_dead(tmp_path):
    config = load_config(CONFIGS / "toppop.yaml", [f"experiment.runs_dir={tmp_path}"], env={})
    run = RunDirectory.create(config)
    status = run.status()
    assert status["status"] == "running" and status["pid"] == os.getpid() and status["host"]
    assert rundir_mod.effective_status(run) == "running"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    run.write_json("status.json", {**status, "pid": child.pid})
    assert rundir_mod.effective_status(run) == "dead" and rundir_mod.effective_status(run.path) == "dead"
    run.write_json("status.json", {**status, "pid": child.pid, "host": "another-machine"})
    assert rundir_mod.effective_status(run) == "running"  # cannot be checked from here
    # a live pid that another process reuses: its start time differs from the recorded one
    assert isinstance(status["pid_started"], int)
    run.write_json("status.json", {**status, "pid_started": status["pid_started"] - 1})
    assert rundir_mod.effective_status(run) == "dead"
    run.write_json("status.json", {**status, "pid_started": None})  # not recorded (another platform): pid only
    assert rundir_mod.effective_status(run) == "running"
    run.write_status("succeeded")
    assert rundir_mod.effective_status(run) == "succeeded"


def test_log_is_written_as_the_run_goes_and_appended_on_reopen(tmp_path):
    from recsys_cli import console

    config = load_config(CONFIGS / "toppop.yaml", [f"experiment.runs_dir={tmp_path}"], env={})
    run = RunDirectory.create(config)
    with run.active():
        console.info("first line")
        assert "first line" in (run.path / "log.txt").read_text()  # on disk before the run ends
    with run.active():
        console.info("second line")
    text = (run.path / "log.txt").read_text()
    assert text.index("first line") < text.index("second line")


def test_a_full_disk_fails_the_run_with_the_reason(runs_dir, monkeypatch):
    from recsys_cli.models.base import Recommender

    def full(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(Recommender, "save", full)
    result = runner.invoke(app, TOPPOP)
    assert result.exit_code == 2
    assert "No space left on device" in result.stderr and "free some disk space" in result.stderr
    assert "bug" not in result.stderr
    (run,) = run_dirs(runs_dir)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["error"]


def test_ctrl_c_exits_130(monkeypatch, runs_dir):
    from recsys_cli.models import toppop

    def interrupted(self, train, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(toppop.TopPop, "fit", interrupted)
    result = runner.invoke(app, TOPPOP)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    (run,) = run_dirs(runs_dir)
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"


def _start_training(runs_dir: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RECSYS_RUNS_DIR": str(runs_dir),
           "RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_NO_PROGRESS": "1"}
    args = [sys.executable, "-m", "recsys_cli", "train", str(CONFIGS / "dae.yaml"), *SMALL,
            "--set", "training.epochs=100000", "--set", "training.early_stopping.enabled=false",
            "--set", "model.hidden=[8,4]", "--set", "device.threads=1"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(runs_dir.glob("*/checkpoints/last.json")) if runs_dir.exists() else []
        if found:
            return proc, found[0].parent.parent
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no checkpoint within 120 s")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_mid_training_checkpoints_marks_interrupted_and_prints_the_resume_command(
        runs_dir, tmp_path, sig, code, word):
    proc, run = _start_training(runs_dir, tmp_path)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert word in stderr and f"--resume {run}" in stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert (run / "checkpoints" / "last.pt").exists()
    assert "resume" in (run / "log.txt").read_text()


def test_sigkill_keeps_the_log_and_the_run_reads_dead(runs_dir, tmp_path):
    proc, run = _start_training(runs_dir, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    log = (run / "log.txt").read_text()
    assert "run directory:" in log and "epoch" in log
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    assert rundir_mod.effective_status(run) == "dead"


def test_point_latest_never_fails_a_run(tmp_path, monkeypatch):
    config = load_config(CONFIGS / "toppop.yaml", [f"experiment.runs_dir={tmp_path}"], env={})
    run = RunDirectory.create(config)

    def broken(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(rundir_mod.os, "replace", broken)
    monkeypatch.setattr(rundir_mod.atomic, "write_text", broken)
    run.point_latest()  # a warning, not an exception


def test_info_counts_runs_by_status_with_dead_ones(runs_dir):
    config = load_config(CONFIGS / "toppop.yaml", [f"experiment.runs_dir={runs_dir}"], env={})
    finished, alive, gone = (RunDirectory.create(config) for _ in range(3))
    finished.write_status("succeeded")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone.write_json("status.json", {**gone.status(), "pid": child.pid})
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["runs"] == {"dead": 1, "running": 1, "succeeded": 1}
    assert alive.status()["status"] == "running"
