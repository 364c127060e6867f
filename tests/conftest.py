"""Shared fixtures: every test runs with its own data/ and runs/ folders and no progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CONFIGS = REPO_ROOT / "configs"


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RECSYS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RECSYS_NO_PROGRESS", "1")
    monkeypatch.delenv("RECSYS_SKIP", raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return Path(os.environ["RECSYS_DATA_DIR"])


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return Path(os.environ["RECSYS_RUNS_DIR"])


def shared_or_skip(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present (real data lives beside the checkout in ../shared/data)")
    return path
