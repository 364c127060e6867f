"""Several machines, one study: two `recsys tune` processes share a study on a real PostgreSQL server.

The fixture starts PostgreSQL (initdb, pg_ctl) in a temporary folder on 127.0.0.1 and a free port, as
the `postgres` user when the tests run as root (PostgreSQL refuses root), and stops it afterwards.
Without PostgreSQL the test is skipped; on CI (CI=true) it fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT

PASSWORD = "Tr1alSecret"


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required on CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None or not (bindir / "initdb").exists():
        _unavailable("PostgreSQL (initdb, pg_ctl) is not installed")
    as_root = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="recsys-pg-", dir="/tmp"))
    if as_root:
        try:
            shutil.chown(folder, user="postgres", group="postgres")
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            _unavailable(f"no 'postgres' user to run PostgreSQL as ({exc})")
    folder.chmod(0o700)
    port = _free_port()
    data = folder / "data"

    def pg(*args: str) -> subprocess.CompletedProcess:
        cmd = shlex.join(args)
        full = ["su", "postgres", "-s", "/bin/sh", "-c", cmd] if as_root else ["sh", "-c", cmd]
        return subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)

    init = pg(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(folder / "log"), "-w", "start")
    if start.returncode != 0:
        log = (folder / "log").read_text(errors="replace")[-500:] if (folder / "log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"PostgreSQL did not start: {start.stderr.strip()[-300:]} {log}")
    try:
        # trust authentication ignores the password: it is there to check that it never lands anywhere
        yield f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _files_text(root: Path) -> Iterator[tuple[Path, str]]:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt", ".yaml", ".csv", ".md", ".log"):
            yield path, path.read_text(errors="replace")


def test_two_machines_share_a_study_and_run_exactly_the_requested_trials(postgres_url, tmp_path):
    import optuna

    config = {
        "experiment": {"name": "pg", "seed": 5},
        "data": {"dataset": "synthetic", "data_dir": str(tmp_path / "data"),
                 "synthetic": {"n_users": 200, "n_items": 80, "n_interactions": 3000}},
        "model": {"name": "ease"},
        "device": {"accelerator": "cpu", "threads": 1},
        "search": {"metric": "NDCG@10", "trials": 8, "sampler": "random",
                   "space": {"model.l2_norm": {"type": "float", "low": 1.0, "high": 1000.0, "log": True}}},
    }
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(config))
    procs = []
    for machine in ("a", "b"):  # two "machines": their own runs folders, one database
        env = dict(os.environ, RECSYS_RUNS_DIR=str(tmp_path / f"runs-{machine}"), RECSYS_NO_PROGRESS="1",
                   PYTHONPATH=str(REPO_ROOT), RECSYS_DATA_DIR=str(tmp_path / "data"))
        cmd = [sys.executable, "-m", "recsys_cli", "tune", str(path), "--storage", postgres_url,
               "--study", "shared-study", "--refit", "none"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      cwd=tmp_path))
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        outputs.append(out + err)
        assert p.returncode == 0, err[-2000:]

    from recsys_cli.tuning.storage import normalise_url

    study = optuna.load_study(study_name="shared-study", storage=normalise_url(postgres_url))
    trials = study.get_trials()
    assert len(trials) == 8
    assert sorted(t.number for t in trials) == list(range(8))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # every trial ran once: one run directory per trial number across both machines
    run_dirs = sorted((tmp_path / "runs-a").glob("*-pg-ease-synthetic-tune/trials/*-pg-trial*")) + \
        sorted((tmp_path / "runs-b").glob("*-pg-ease-synthetic-tune/trials/*-pg-trial*"))
    numbers = sorted(int(p.name.split("-trial")[1][:4]) for p in run_dirs)
    assert numbers == list(range(8))
    assert {t.user_attrs["run_dir"] for t in trials} == {str(p) for p in run_dirs}
    # the password is masked in every file and message
    for machine in ("a", "b"):
        for file, text in _files_text(tmp_path / f"runs-{machine}"):
            assert PASSWORD not in text, file
    assert all(PASSWORD not in text for text in outputs)
    study_json = next((tmp_path / "runs-a").glob("*-pg-ease-synthetic-tune/study.json")).read_text()
    assert "postgres:***@127.0.0.1" in study_json


def test_jobs_share_a_postgresql_study_on_one_machine(postgres_url, tmp_path, runs_dir):
    from recsys_cli.config import load_config
    from recsys_cli.tuning import tune

    config = load_config(data={
        "experiment": {"name": "pgjobs", "seed": 5},
        "data": {"dataset": "synthetic", "synthetic": {"n_users": 200, "n_items": 80, "n_interactions": 3000}},
        "model": {"name": "ease"},
        "device": {"accelerator": "cpu"},
        "search": {"metric": "NDCG@10", "trials": 6,
                   "space": {"model.l2_norm": {"type": "float", "low": 1.0, "high": 1000.0, "log": True}}},
    })
    with contextlib.chdir(tmp_path):
        outcome = tune(config, jobs=2, storage=postgres_url, study="jobs-study", refit="none")
    assert outcome.trials == 6 and outcome.states == {"complete": 6}
    import optuna

    from recsys_cli.tuning.storage import normalise_url

    trials = optuna.load_study(study_name="jobs-study", storage=normalise_url(postgres_url)).get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert len({t.user_attrs["worker"] for t in trials}) <= 2  # the two worker processes, nobody else
    assert sorted(p.name for p in outcome.study_dir.glob("worker-*.log")) == ["worker-1.log"]  # worker 0 is the command itself
    names = sorted(p.name.split("-trial")[1][:4] for p in (outcome.study_dir / "trials").glob("*-pgjobs-trial*"))
    assert names == [f"{n:04d}" for n in range(6)]
