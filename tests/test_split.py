"""Splits: exact partitions, fractions, seeding, `course_compatible` (the reference implementation's split), fingerprints, import."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config.schema import DataConfig, SplitConfig, SyntheticConfig
from recsys_cli.data import get_split, load_dataset, load_split_for_run
from recsys_cli.data.dataset import Dataset
from recsys_cli.data.splits import holdout_masks, load_split_dir, make_split
from recsys_cli.errors import DataError

runner = CliRunner()
SMALL = SyntheticConfig(n_users=300, n_items=200, n_interactions=6000)


def synthetic_config(**split) -> DataConfig:
    return DataConfig(dataset="synthetic", synthetic=SMALL, split=SplitConfig(**split))


@pytest.fixture
def dataset(data_dir) -> Dataset:
    return load_dataset(synthetic_config(), seed=0)


def random_urm(seed: int, shape=(40, 30), density=0.3) -> sp.csr_matrix:
    m = sp.random(*shape, density=density, format="csr", random_state=seed, data_rvs=lambda n: np.arange(1, n + 1))
    m.sum_duplicates()
    return m


def as_set(m: sp.csr_matrix) -> set[tuple[int, int, float]]:
    c = m.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist(), c.data.tolist()))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), test_fraction=st.floats(0.05, 0.95), val_fraction=st.floats(0, 0.9),
       protocol=st.sampled_from(["holdout", "temporal"]), course=st.booleans())
def test_holdout_and_temporal_are_exact_partitions(seed, test_fraction, val_fraction, protocol, course):
    urm = random_urm(seed % 1000)
    ds = Dataset(name="t", urm=urm, urm_timestamp=urm.copy())
    cfg = SplitConfig(protocol=protocol, test_fraction=test_fraction, val_fraction=val_fraction, course_compatible=course)
    split, _ = make_split(ds, cfg, seed)
    parts = [split.train, split.test] + ([split.val] if split.val is not None else [])
    assert sum(p.nnz for p in parts) == urm.nnz
    assert set().union(*map(as_set, parts)) == as_set(urm)  # values kept, nothing lost or duplicated
    n_tv = round(urm.nnz * (1 - test_fraction))
    assert split.test.nnz == urm.nnz - n_tv  # within one interaction of the fraction, by Python's round
    if split.val is not None:
        assert split.val.nnz == n_tv - round(n_tv * (1 - val_fraction))
    for p in parts:
        assert p.shape == urm.shape and p.dtype == np.float64 and p.has_canonical_format


def test_course_compatible_mode_reproduces_the_double_indexing():
    urm = random_urm(3)
    n = urm.nnz
    np.random.seed(7)  # the reference split takes no seed: its caller seeds NumPy's global RNG
    perm = np.arange(n)
    np.random.shuffle(perm)
    n_train = round(n * 0.8)
    expected_test = np.zeros(n, bool)
    expected_test[perm[perm[n_train:]]] = True
    test, val = holdout_masks(urm, 0.2, 0.0, 7, course_compatible=True)
    np.testing.assert_array_equal(test, expected_test)
    assert not val.any()
    # the modern generator gives a different (but also exact) sample
    modern, _ = holdout_masks(urm, 0.2, 0.0, 7, course_compatible=False)
    assert modern.sum() == test.sum() and not np.array_equal(modern, test)


def test_temporal_split_cuts_at_a_time():
    urm = random_urm(5)
    ts = urm.copy()
    ts.data = np.random.default_rng(0).permutation(ts.nnz).astype(float) + 1
    split, _ = make_split(Dataset("t", urm, ts), SplitConfig(protocol="temporal", val_fraction=0.25), 0)
    time_of = {(r, c): t for r, c, t in as_set(ts)}
    latest_train = max(time_of[(r, c)] for r, c, _ in as_set(split.train))
    earliest_val = min(time_of[(r, c)] for r, c, _ in as_set(split.val))
    assert latest_train < earliest_val < min(time_of[(r, c)] for r, c, _ in as_set(split.test))


def test_leave_k_out_latest_takes_each_users_newest_items():
    urm = random_urm(9, density=0.5)
    ts = urm.copy()
    ts.data = np.random.default_rng(1).permutation(ts.nnz).astype(float) + 1
    split, _ = make_split(Dataset("t", urm, ts), SplitConfig(protocol="leave-k-out", k=2, order="latest"), 0)
    for u in range(urm.shape[0]):
        times = dict(zip(ts[u].indices.tolist(), ts[u].data.tolist()))
        test_items = set(split.test[u].indices.tolist())
        val_items = set(split.val[u].indices.tolist())
        newest = sorted(times, key=times.get)[::-1]
        if len(times) > 4:
            assert test_items == set(newest[:2]) and val_items == set(newest[2:4])
        assert split.train[u].nnz + len(test_items) + len(val_items) == len(times)
    random_split, _ = make_split(Dataset("t", urm, ts), SplitConfig(protocol="leave-k-out", k=1, val_fraction=0), 0)
    assert random_split.val is None
    assert np.all(np.diff(random_split.test.indptr)[np.diff(urm.indptr) > 1] == 1)


def test_a_zero_timestamp_or_rating_does_not_break_time_ordered_splits():
    # user 0 rated items 0..3 at times 0, 30, 10, 20; user 1 rated item 3 with a 0 (a stored zero, dropped)
    entries = [(0, 0, 4.0, 0), (0, 1, 3.0, 30), (0, 2, 5.0, 10), (0, 3, 2.0, 20),
               (1, 0, 1.0, 5), (1, 1, 2.0, 6), (1, 2, 3.0, 7), (1, 3, 0.0, 8)]
    rows, cols, ratings, times = (np.array(c) for c in zip(*entries))
    urm = sp.csr_matrix((ratings.astype(float), (rows, cols)), shape=(2, 4))
    ts = sp.csr_matrix((times.astype(float), (rows, cols)), shape=(2, 4))
    urm.eliminate_zeros()
    ts.eliminate_zeros()  # as the readers and caches store them: zeros gone
    assert urm.nnz == 7 and ts.nnz == 7 and (urm != 0).multiply(ts != 0).nnz == 6
    ds = Dataset("t", urm, ts)
    split, _ = make_split(ds, SplitConfig(protocol="leave-k-out", k=1, order="latest"), 0)
    assert as_set(split.test) == {(0, 1, 3.0), (1, 2, 3.0)}  # each user's newest rated item
    assert as_set(split.val) == {(0, 3, 2.0), (1, 1, 2.0)}
    assert as_set(split.train) == {(0, 0, 4.0), (0, 2, 5.0), (1, 0, 1.0)}  # the item at time 0 is the oldest
    split, _ = make_split(ds, SplitConfig(protocol="temporal", test_fraction=2 / 7, val_fraction=0), 0)
    assert as_set(split.test) == {(0, 1, 3.0), (0, 3, 2.0)}  # the two latest, times 30 and 20
    assert (0, 0, 4.0) in as_set(split.train)


def test_split_is_deterministic_and_seeds_differ(dataset):
    a, _ = make_split(dataset, SplitConfig(), 1)
    b, _ = make_split(dataset, SplitConfig(), 1)
    c, _ = make_split(dataset, SplitConfig(), 2)
    assert a.fingerprint == b.fingerprint and (a.test != b.test).nnz == 0
    assert a.fingerprint != c.fingerprint and as_set(a.test) != as_set(c.test)


def test_saved_split_is_reused_and_tampering_is_refused(dataset, data_dir):
    cfg = synthetic_config()
    first = get_split(dataset, cfg, seed=3)
    assert first.directory.parent == data_dir / "splits"
    assert first.directory.name.endswith("-holdout-test0.2-val0.2-seed3")
    manifest = json.loads((first.directory / "manifest.json").read_text())
    assert manifest["fingerprint"] == first.fingerprint and manifest["sizes"]["test"] == first.test.nnz
    # staged in a mkdtemp folder (0700) and mkstemp files (0600), but saved with the usual modes
    from recsys_cli.atomic import UMASK

    assert first.directory.stat().st_mode & 0o777 == 0o777 & ~UMASK
    assert (first.directory / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~UMASK
    stamp = (first.directory / "train.npz").stat().st_mtime_ns
    second = get_split(dataset, cfg, seed=3)
    assert second.fingerprint == first.fingerprint and (first.directory / "train.npz").stat().st_mtime_ns == stamp
    # change one value in the saved test part
    tampered = first.test.copy()
    tampered.data[0] += 1
    sp.save_npz(first.directory / "test.npz", tampered)
    with pytest.raises(DataError, match="no longer matches its fingerprint"):
        get_split(dataset, cfg, seed=3)
    with pytest.raises(DataError, match="no longer matches its fingerprint"):
        load_split_dir(first.directory)


def test_fractions_outside_the_unit_interval_are_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: synthetic}\nmodel: {name: toppop}\n")
    for bad in ("data.split.test_fraction=1.5", "data.split.test_fraction=0", "data.split.val_fraction=-0.1"):
        result = runner.invoke(app, ["split", str(config), "--set", bad])
        assert result.exit_code == 2, bad
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_import_round_trip_and_bad_imports(dataset, data_dir, tmp_path):
    made, _ = make_split(dataset, SplitConfig(), 5)
    folder = tmp_path / "mine"
    folder.mkdir()
    for part in ("train", "val", "test"):
        sp.save_npz(folder / f"{part}.npz", getattr(made, part))
    imported = get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)
    assert imported.fingerprint == made.fingerprint and "-import-" in imported.directory.name
    assert load_split_dir(imported.directory).fingerprint == made.fingerprint

    sp.save_npz(folder / "val.npz", made.val[:, :-1])
    with pytest.raises(DataError, match=r"val.npz has shape 300×199, but the data set is 300×200"):
        get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)
    sp.save_npz(folder / "val.npz", made.test)
    with pytest.raises(DataError, match=r"overlap: val.npz and test.npz share \d+ \(user, item\) entries"):
        get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)
    sp.save_npz(folder / "val.npz", made.val)
    sp.save_npz(folder / "test.npz", sp.csr_matrix(made.test.shape))
    with pytest.raises(DataError, match=r"test.npz holds no interactions"):
        get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)
    (folder / "val.npz").unlink()
    (folder / "test.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="is not a scipy sparse .npz file"):
        get_split(dataset, synthetic_config(protocol="import", import_dir=folder), seed=0)


def test_import_of_a_file_that_is_not_a_sparse_npz_is_one_clear_line(tmp_path, data_dir):
    config = tmp_path / "c.yaml"
    config.write_text("data: {dataset: synthetic, synthetic: {n_users: 20, n_items: 10, n_interactions: 100}}\n"
                      "model: {name: toppop}\n")
    folder = tmp_path / "mine"
    folder.mkdir()
    sp.save_npz(folder / "train.npz", sp.eye(20, 10, format="csr"))
    whole = (folder / "train.npz").read_bytes()
    dense = tmp_path / "dense.npz"
    np.savez(dense, x=np.arange(3))
    not_sparse = {"junk": b"junk", "empty": b"", "truncated zip": whole[: len(whole) // 2],
                  "dense arrays": dense.read_bytes()}
    for what, content in not_sparse.items():
        (folder / "test.npz").write_bytes(content)
        result = runner.invoke(app, ["split", str(config), "--import", str(folder)])
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, what
        assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr, what
        assert f"{folder / 'test.npz'} is not a scipy sparse .npz file" in message, what
        assert "scipy.sparse.save_npz" in message and "pickle" not in message, what


def test_split_cli_prints_and_reuses(tmp_path, data_dir):
    config = tmp_path / "c.yaml"
    config.write_text("experiment: {seed: 4}\ndata: {dataset: synthetic, synthetic: {n_users: 200, n_items: 100, "
                      "n_interactions: 3000}}\nmodel: {name: toppop}\n")
    result = runner.invoke(app, ["split", str(config), "--json"])
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert sum(body["sizes"].values()) == 3000 and "fingerprint" in result.stderr
    again = runner.invoke(app, ["split", str(config)])
    assert "reusing split" in again.stderr and body["fingerprint"] in again.stderr
    bad = tmp_path / "nothing"
    result = runner.invoke(app, ["split", str(config), "--import", str(bad)])
    assert result.exit_code == 2 and "does not exist" in result.stderr


class _Run:
    def __init__(self, path):
        self.path = path


def test_load_split_for_run_checks_the_fingerprint(dataset, tmp_path):
    cfg = synthetic_config()
    split = get_split(dataset, cfg, seed=0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    class Config:
        data = cfg

        class experiment:  # noqa: N801
            seed = 0

    with pytest.raises(DataError, match="does not record which split"):
        load_split_for_run(_Run(run_dir), Config)
    (run_dir / "env.json").write_text(json.dumps({"split": {"fingerprint": split.fingerprint,
                                                            "directory": str(split.directory)}}))
    assert load_split_for_run(_Run(run_dir), Config).fingerprint == split.fingerprint
    # the folder is gone: it is made again and must match
    import shutil

    shutil.rmtree(split.directory)
    assert load_split_for_run(_Run(run_dir), Config).fingerprint == split.fingerprint
    (run_dir / "env.json").write_text(json.dumps({"split": {"fingerprint": "0" * 64, "directory": str(split.directory)}}))
    with pytest.raises(DataError, match="is not the one run was trained on"):
        load_split_for_run(_Run(run_dir), Config)


def test_a_temporal_split_has_no_seed_in_its_folder_and_serves_every_seed(dataset, data_dir):
    cfg = synthetic_config(protocol="temporal")
    first = get_split(dataset, cfg, seed=1)
    assert first.directory.name.endswith("-temporal-test0.2-val0.2")  # no -seed<N>: the cut ignores the seed
    stamp = (first.directory / "train.npz").stat().st_mtime_ns
    second = get_split(dataset, cfg, seed=2)
    assert second.directory == first.directory and second.fingerprint == first.fingerprint
    assert (second.directory / "train.npz").stat().st_mtime_ns == stamp  # reused, not written again
    assert sorted(p.name for p in (data_dir / "splits").iterdir()) == [first.directory.name]
