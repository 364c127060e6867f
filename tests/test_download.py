"""Downloads against a real HTTP server on 127.0.0.1: checksums, resume, retries, and every bad input."""

from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.data import cache as cache_mod
from recsys_cli.data import download as download_mod
from recsys_cli.data import prepare_dataset, readers
from recsys_cli.data.registry import get_spec
from recsys_cli.errors import DataError

from .test_data_zips import http_server, make_zip, md5, ml10m_members, ml100k_members  # noqa: F401

runner = CliRunner()
ZIP = make_zip(ml10m_members())


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setenv("RECSYS_DOWNLOAD_RETRIES", "3")
    monkeypatch.setenv("RECSYS_DOWNLOAD_BACKOFF", "0.01")
    monkeypatch.setenv("RECSYS_DOWNLOAD_TIMEOUT", "5")


@pytest.fixture
def mirror(http_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", http_server.base_url)
    return http_server


def leftovers(data_dir):
    """Files that a failed command must not leave behind (a resumable .part is allowed)."""
    if not data_dir.exists():
        return []
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                  if p.is_file() and not p.name.endswith(".part"))


def test_good_download_verifies_and_caches(mirror, data_dir, monkeypatch):
    monkeypatch.setenv("RECSYS_NO_PROGRESS", "0")  # exercise the progress bar path too
    mirror.add("/ml-10m.zip", ZIP)
    mirror.add("/ml-10m.zip.md5", f"{md5(ZIP)}  ml-10m.zip\n".encode())
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP), "--json"])
    assert result.exit_code == 0, result.stderr
    assert (data_dir / "downloads" / "ml-10m.zip").read_bytes() == ZIP
    assert "DataReader: current dataset is: Movielens10M" in result.stderr
    assert '"n_users": 3' in result.stdout
    manifest = cache_mod.read_manifest(data_dir / "movielens-10m")
    assert manifest["source"]["md5"] == md5(ZIP) and manifest["source"]["verified"] is True
    # a second download reuses the checked cache without touching the network
    n_requests = len(mirror.requests)
    again = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)])
    assert again.exit_code == 0 and len(mirror.requests) == n_requests
    assert "loaded the processed cache" in again.stderr


def test_published_md5_is_used_when_nothing_is_pinned(mirror, data_dir):
    mirror.add("/ml-latest-small.zip.md5", b"0" * 32 + b"\n")
    from .test_data_zips import csv_members

    body = make_zip(csv_members())
    mirror.add("/ml-latest-small.zip", body)
    with pytest.raises(DataError, match="checksum mismatch .* expected 0{32}"):
        prepare_dataset("movielens-latest-small", data_dir)
    mirror.add("/ml-latest-small.zip.md5", md5(body).encode())
    assert prepare_dataset("movielens-latest-small", data_dir, statistics=False).urm.nnz == 5


def test_resume_after_dropped_connection(mirror, data_dir):
    mirror.add("/ml-10m.zip", ZIP, drop_after=len(ZIP) // 2, drops=1)
    prepare_dataset("movielens-10m", data_dir, md5=md5(ZIP), statistics=False)
    ranges = [r for path, r in mirror.requests if path == "/ml-10m.zip"]
    assert ranges == [None, f"bytes={len(ZIP) // 2}-"]
    assert (data_dir / "downloads" / "ml-10m.zip").read_bytes() == ZIP


def test_rerun_resumes_after_retries_run_out(mirror, data_dir, monkeypatch):
    monkeypatch.setenv("RECSYS_DOWNLOAD_RETRIES", "1")
    mirror.add("/ml-10m.zip", ZIP, drop_after=100, drops=1)
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)])
    assert result.exit_code == 2 and "connection dropped after 100" in result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) > 0 and leftovers(data_dir) == []
    assert (data_dir / "downloads" / "ml-10m.zip.part").stat().st_size == 100
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)])
    assert result.exit_code == 0, result.stderr
    assert mirror.requests[-1] == ("/ml-10m.zip", "bytes=100-")


def test_server_without_range_support_restarts_cleanly(mirror, data_dir):
    mirror.add("/ml-10m.zip", ZIP, drop_after=50, drops=1, ranges=False)
    prepare_dataset("movielens-10m", data_dir, md5=md5(ZIP), statistics=False)
    assert (data_dir / "downloads" / "ml-10m.zip").read_bytes() == ZIP


def test_transient_server_errors_are_retried_then_reported(mirror, data_dir):
    mirror.add("/ml-10m.zip", ZIP, status=503)
    result = runner.invoke(app, ["download", "movielens-10m"])
    assert result.exit_code == 2
    assert "failed after 3 attempt(s): HTTP 503" in result.stderr
    assert sum(path == "/ml-10m.zip" for path, _ in mirror.requests) == 3
    assert leftovers(data_dir) == []


def test_http_404_is_not_retried(mirror, data_dir):
    result = runner.invoke(app, ["download", "movielens-1m"])
    assert result.exit_code == 2 and "HTTP 404" in result.stderr and "/ml-1m.zip" in result.stderr
    assert sum(path == "/ml-1m.zip" for path, _ in mirror.requests) == 1
    assert leftovers(data_dir) == []


def test_unreachable_host(monkeypatch, data_dir):
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    result = runner.invoke(app, ["download", "movielens-10m"])
    assert result.exit_code == 2
    assert "cannot reach 127.0.0.1:9" in result.stderr and "http://127.0.0.1:9/ml-10m.zip" in result.stderr
    assert leftovers(data_dir) == []


def test_wrong_bytes_fail_the_checksum(mirror, data_dir):
    mirror.add("/ml-10m.zip", ZIP[:-1] + b"!")
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)])
    assert result.exit_code == 2 and "checksum mismatch" in result.stderr
    assert leftovers(data_dir) == [] and not (data_dir / "downloads" / "ml-10m.zip.part").exists()
    # the pinned GroupLens checksum applies when no --md5 is given
    result = runner.invoke(app, ["download", "movielens-10m"])
    assert result.exit_code == 2 and "expected ce571fd55effeba0271552578f2648bd" in result.stderr


def test_not_a_zip_and_missing_members(mirror, data_dir, tmp_path):
    mirror.add("/ml-10m.zip", b"<html>not a zip</html>")
    result = runner.invoke(app, ["download", "movielens-10m", "--no-verify"])
    assert result.exit_code == 2 and "is not a zip archive" in result.stderr
    assert "rerun with --force to download it again" in result.stderr
    assert not (data_dir / "movielens-10m").exists()
    wrong = tmp_path / "wrong.zip"
    wrong.write_bytes(make_zip(ml100k_members()))
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(wrong), "--no-verify"])
    assert result.exit_code == 2 and "lacks ml-10M100K/ratings.dat" in result.stderr
    assert not (data_dir / "movielens-10m").exists()


def test_local_source_damage_hints_at_the_file_not_force(tmp_path, data_dir):
    # --force cannot repair a local --source, so its hint must point at the file itself
    local = tmp_path / "ml-10m.zip"
    local.write_bytes(b"<html>not a zip</html>")
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify"])
    assert result.exit_code == 2 and f"{local} is not a zip archive" in result.stderr
    assert "--force" not in result.stderr
    assert f"check {local} or replace it" in " ".join(result.stderr.split())
    # damage inside a readable local zip gets the same advice
    members = ml10m_members()
    members["ml-10M100K/ratings.dat"] = "1::2::x::3\n"
    local.write_bytes(make_zip(members))
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify"])
    assert result.exit_code == 2 and "malformed line" in result.stderr
    assert "--force" not in result.stderr and f"check {local} or replace it" in " ".join(result.stderr.split())
    assert not (data_dir / "movielens-10m").exists()


def test_source_and_checksum_options(tmp_path, data_dir):
    local = tmp_path / "ml-10m.zip"
    local.write_bytes(ZIP)
    bad = runner.invoke(app, ["download", "movielens-10m", "--source", str(local)])
    assert bad.exit_code == 2 and "checksum mismatch" in bad.stderr and local.exists()
    assert runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--md5", "xyz"]).exit_code == 2
    ok = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--md5", md5(ZIP).upper()])
    assert ok.exit_code == 0, ok.stderr
    assert "instead of GroupLens's checksum" in ok.stderr
    # a bad --md5 is refused even when the checked cache means no zip would be verified
    cached = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify", "--md5", "xyz"])
    assert cached.exit_code == 2 and "is not an MD5 checksum" in cached.stderr
    missing = runner.invoke(app, ["download", "movielens-10m", "--source", str(tmp_path / "nope.zip")])
    assert missing.exit_code == 2 and "neither an existing file nor an http(s) URL" in missing.stderr


def test_mirror_url_source(http_server, data_dir):  # noqa: F811
    url = http_server.add("/mirror/any-name.zip", ZIP)
    ds = prepare_dataset("movielens-10m", data_dir, source=url, md5=md5(ZIP), statistics=False)
    assert ds.manifest["source"]["location"] == url


def test_force_downloads_again(mirror, data_dir):
    mirror.add("/ml-10m.zip", ZIP)
    prepare_dataset("movielens-10m", data_dir, md5=md5(ZIP), statistics=False)
    prepare_dataset("movielens-10m", data_dir, md5=md5(ZIP), force=True, statistics=False)
    assert sum(path == "/ml-10m.zip" for path, _ in mirror.requests) == 2


def test_ctrl_c_during_download_leaves_no_zip_or_cache(mirror, data_dir, monkeypatch):
    mirror.add("/ml-10m.zip", ZIP)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download_mod, "_progress", interrupted)
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)])
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert leftovers(data_dir) == []


def test_ctrl_c_during_parse_leaves_no_cache(tmp_path, data_dir, monkeypatch):
    local = tmp_path / "ml-10m.zip"
    local.write_bytes(ZIP)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(readers, "_read_dat_tags", interrupted)
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify"])
    assert result.exit_code == 130
    assert leftovers(data_dir) == []
    # and a Ctrl-C while the cache is being written removes the half-written folder
    monkeypatch.undo()
    monkeypatch.setenv("RECSYS_NO_PROGRESS", "1")
    monkeypatch.setattr(cache_mod.np, "savez", interrupted)
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify"])
    assert result.exit_code == 130 and leftovers(data_dir) == []


def test_disk_write_failure(tmp_path, data_dir, monkeypatch):
    local = tmp_path / "ml-10m.zip"
    local.write_bytes(ZIP)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.sp, "save_npz", full_disk)
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify"])
    assert result.exit_code == 2
    assert "could not write" in result.stderr and "No space left on device" in result.stderr
    assert "free some disk space" in result.stderr and leftovers(data_dir) == []
    # a data folder that cannot be created at all
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(local), "--no-verify",
                                 "--data-dir", str(blocker / "data")])
    assert result.exit_code == 2 and "could not write" in result.stderr


def test_disk_failure_while_downloading(mirror, data_dir, monkeypatch):
    mirror.add("/ml-10m.zip", ZIP)
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and "b" in mode and ("w" in mode or "a" in mode):
            raise OSError(errno.EACCES, "Permission denied")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download_mod, "open", failing_open, raising=False)
    result = runner.invoke(app, ["download", "movielens-10m", "--md5", md5(ZIP)])
    assert result.exit_code == 2 and "Permission denied" in result.stderr and leftovers(data_dir) == []


def test_spec_urls_follow_the_base_url(monkeypatch):
    monkeypatch.delenv("RECSYS_MOVIELENS_BASE_URL", raising=False)
    assert get_spec("movielens-10m").url == "https://files.grouplens.org/datasets/movielens/ml-10m.zip"
    monkeypatch.setenv("RECSYS_MOVIELENS_BASE_URL", "http://mirror.example/ml/")
    assert get_spec("movielens-25m").url == "http://mirror.example/ml/ml-25m.zip"
