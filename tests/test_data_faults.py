"""Bad data that must be refused, and downloads that must not lose data (issue 17: bugs 1, 2, 3)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config.schema import SplitConfig
from recsys_cli.data import cache as cache_mod
from recsys_cli.data import get_split, prepare_dataset
from recsys_cli.data.splits import make_split
from recsys_cli.errors import DataError, RunFailed
from recsys_cli.evaluation import evaluate

from .test_data_zips import http_server, make_zip, md5, ml10m_members  # noqa: F401
from .test_split import dataset, synthetic_config  # noqa: F401

runner = CliRunner()
ZIP = make_zip(ml10m_members())


def save_raw_csr(path, data, indices, indptr, shape):
    """A .npz in save_npz's layout whose arrays scipy's constructor would not check."""
    np.savez(path, data=np.asarray(data, dtype=np.float64), indices=np.asarray(indices, dtype=np.int32),
             indptr=np.asarray(indptr, dtype=np.int32), format=np.array(b"csr"), shape=np.asarray(shape))


@pytest.fixture
def import_folder(dataset, tmp_path):  # noqa: F811
    made, _ = make_split(dataset, SplitConfig(val_fraction=0.0), 5)
    folder = tmp_path / "mine"
    folder.mkdir()
    sp.save_npz(folder / "train.npz", made.train)
    sp.save_npz(folder / "test.npz", made.test)
    return folder, made


def refused(dataset, folder, pattern):  # noqa: F811
    with pytest.raises(DataError, match=pattern):
        get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)


@pytest.mark.parametrize("bad_column, pattern", [
    (200, r"test.npz: column index 200 is outside 0\.\.199"),
    (-3, r"test.npz: column index -3 is outside 0\.\.199"),
])
def test_import_with_column_indices_out_of_range_is_refused(dataset, import_folder, bad_column, pattern):  # noqa: F811
    folder, made = import_folder
    test = made.test
    indices = test.indices.copy()
    indices[0] = bad_column
    save_raw_csr(folder / "test.npz", test.data, indices, test.indptr, test.shape)
    refused(dataset, folder, pattern)
    assert not (folder.parent / "data" / "splits").exists() or not any((folder.parent / "data" / "splits").iterdir())


def test_import_with_a_broken_indptr_is_refused(dataset, import_folder):  # noqa: F811
    folder, made = import_folder
    test = made.test
    indptr = test.indptr.copy()
    indptr[5], indptr[6] = indptr[6], indptr[5] - 1  # decreasing
    save_raw_csr(folder / "test.npz", test.data, test.indices, indptr, test.shape)
    refused(dataset, folder, r"test.npz: its row pointers \(indptr\) are not a valid CSR structure")


def test_import_with_duplicate_entries_is_refused_not_summed(dataset, import_folder):  # noqa: F811
    folder, made = import_folder
    coo = made.test.tocoo()
    doubled = sp.coo_matrix((np.r_[coo.data, coo.data[:1]], (np.r_[coo.row, coo.row[:1]], np.r_[coo.col, coo.col[:1]])),
                            shape=coo.shape)
    sp.save_npz(folder / "test.npz", doubled)
    refused(dataset, folder, r"test.npz holds 1 duplicate \(user, item\) entr")


def test_import_with_unsorted_indices_is_sorted_and_kept_whole(dataset, import_folder):  # noqa: F811
    folder, made = import_folder
    test = made.test.copy()
    row = next(r for r in range(test.shape[0]) if test.indptr[r + 1] - test.indptr[r] >= 2)
    lo, hi = test.indptr[row], test.indptr[row + 1]
    test.indices[lo:hi] = test.indices[lo:hi][::-1].copy()
    test.data[lo:hi] = test.data[lo:hi][::-1].copy()
    save_raw_csr(folder / "test.npz", test.data, test.indices, test.indptr, test.shape)
    split = get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)
    assert split.test.has_sorted_indices and (split.test != made.test).nnz == 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_import_with_non_finite_values_is_refused(dataset, import_folder, value):  # noqa: F811
    folder, made = import_folder
    train = made.train.copy()
    train.data[3] = value
    sp.save_npz(folder / "train.npz", train)
    refused(dataset, folder, r"train.npz holds 1 non-finite value")


def test_make_split_refuses_a_data_set_with_non_finite_ratings():
    from recsys_cli.data.dataset import Dataset

    urm = sp.random(30, 20, density=0.3, format="csr", random_state=0)
    urm.data[0] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        make_split(Dataset(name="t", urm=urm), SplitConfig(), 0)


# -- non-finite scores and ground truth in the evaluator -----------------------------------------

TRAIN = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float64))
TRUTH = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_scores_that_are_not_finite_fail_the_evaluation_naming_the_cause(bad):
    def scorer(users):
        scores = torch.rand(len(users), 4, dtype=torch.float64)
        scores[-1, 2] = bad
        return scores

    with pytest.raises(RunFailed, match=r"the model's scores hold 1 (NaN|\+inf) value.* user 2"):
        evaluate(scorer, TRAIN, TRUTH, [2], progress=False)


def test_minus_inf_scores_still_exclude_items():
    def scorer(users):
        scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64).repeat(len(users), 1)
        scores[:, 3] = -torch.inf
        return scores

    result = evaluate(scorer, TRAIN, TRUTH, [1], progress=False)
    # top unseen item: 2, 2, 1 for users 0, 1, 2 (item 3 is never ranked): only user 1 hits
    assert result.value("HIT_RATE", 1) == pytest.approx(1 / 3)


def test_non_finite_ground_truth_is_refused():
    truth = TRUTH.copy()
    truth.data[1] = np.nan
    with pytest.raises(DataError, match=r"the ground-truth matrix holds 1 non-finite value"):
        evaluate(lambda users: torch.rand(len(users), 4), TRAIN, truth, [2], progress=False)


# -- download --force keeps the verified zip until the replacement verifies ----------------------

@pytest.fixture
def mirror(http_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", http_server.base_url)
    monkeypatch.setenv("RECSYS_DOWNLOAD_RETRIES", "2")
    monkeypatch.setenv("RECSYS_DOWNLOAD_BACKOFF", "0.01")
    return http_server


def test_force_keeps_the_verified_zip_when_the_new_download_fails(mirror, data_dir, monkeypatch):
    mirror.add("/ml-10m.zip", ZIP)
    assert runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)]).exit_code == 0
    zip_path = data_dir / "downloads" / "ml-10m.zip"
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", "http://127.0.0.1:9")  # offline now
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP), "--force"])
    assert result.exit_code == 2 and "cannot reach" in result.stderr
    assert zip_path.read_bytes() == ZIP
    # a replacement that fails its checksum does not replace it either
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", mirror.base_url)
    mirror.add("/ml-10m.zip", ZIP[:-1] + b"!")
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP), "--force"])
    assert result.exit_code == 2 and "checksum mismatch" in result.stderr
    assert zip_path.read_bytes() == ZIP


def test_a_name_that_does_not_resolve_is_not_retried(monkeypatch, data_dir):
    calls = []

    def no_such_name(host, *args, **kwargs):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", "http://mirror.invalid")
    monkeypatch.setenv("RECSYS_DOWNLOAD_RETRIES", "4")
    monkeypatch.setenv("RECSYS_DOWNLOAD_BACKOFF", "0.01")
    result = runner.invoke(app, ["download", "movielens-10m"])
    assert result.exit_code == 2 and "mirror.invalid" in result.stderr and "Name or service not known" in result.stderr
    assert "retrying" not in result.stderr
    assert calls.count("mirror.invalid") == 2  # the .md5 look-up and one attempt at the zip: no retry
    assert "--source FILE.zip" in result.stderr


def test_hints_name_the_option_of_the_command(mirror, data_dir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: movielens-1m}\nmodel: {name: toppop}\n")
    for command in (["split", str(config)], ["run", str(config)], ["train", str(config)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "HTTP 404" in result.stderr, command
        assert "--set data.source=FILE.zip" in result.stderr and "--source FILE.zip" not in result.stderr
    result = runner.invoke(app, ["download", "movielens-1m"])
    assert result.exit_code == 2 and "--source FILE.zip" in result.stderr and "data.source" not in result.stderr


# -- stale temporary folders of a killed parse ----------------------------------------------------

def test_stale_temporary_cache_folders_are_removed_on_the_next_parse(tmp_path, data_dir):
    local = tmp_path / "ml-10m.zip"
    local.write_bytes(ZIP)
    data_dir.mkdir(parents=True)
    dead_pid = _dead_pid()
    stale = [data_dir / f".movielens-10m.tmp-{dead_pid}-abcd1234", data_dir / f".movielens-10m.old-{dead_pid}-abcd1234"]
    for folder in stale:
        folder.mkdir()
        (folder / "URM_all.npz").write_bytes(b"x" * 1000)
    alive = data_dir / f".movielens-10m.tmp-{os.getpid()}-live0000"  # a parse still running here
    alive.mkdir()
    prepare_dataset("movielens-10m", data_dir, source=str(local), verify=False, statistics=False)
    assert not any(folder.exists() for folder in stale)
    assert alive.exists() and (data_dir / "movielens-10m" / "manifest.json").exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staged_directory_names_carry_the_pid(tmp_path):
    with cache_mod.staged_directory(tmp_path / "target") as tmp:
        assert tmp.name.startswith(f".target.tmp-{os.getpid()}-")


def test_a_folder_another_writer_swaps_in_meanwhile_does_not_fail_the_write(tmp_path, monkeypatch):
    # Two processes writing the same split: the other one's folder lands on the target between this
    # one's move-aside and its rename, which fails with "Directory not empty"; the swap is retried.
    target = tmp_path / "split"
    target.mkdir()
    (target / "who").write_text("first")
    real_replace = os.replace
    raced = []

    def racing_replace(src, dst):
        if str(dst) == str(target) and not raced:
            raced.append(True)
            target.mkdir()
            (target / "who").write_text("other writer")
        return real_replace(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", racing_replace)
    with cache_mod.staged_directory(target) as tmp:
        (tmp / "who").write_text("this writer")
    assert raced and (target / "who").read_text() == "this writer"
    assert [p.name for p in tmp_path.iterdir()] == ["split"]  # no temporary or moved-aside folder left


def test_a_swap_that_keeps_failing_is_a_one_line_data_error(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "split"

    def always_taken(src, dst):
        if str(dst) == str(target):
            raise OSError(errno.ENOTEMPTY, "Directory not empty")
        return os.rename(src, dst)

    monkeypatch.setattr(cache_mod.os, "replace", always_taken)
    with pytest.raises(DataError, match="could not write .*split: Directory not empty"):
        with cache_mod.staged_directory(target) as tmp:
            (tmp / "x").write_text("x")
    assert list(tmp_path.iterdir()) == []
