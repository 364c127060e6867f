"""The processed cache is reused only when it holds what is asked for; a zip of another release is refused;
split folders and original ids never mix two data sets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from recsys_cli.config.schema import DataConfig, SplitConfig
from recsys_cli.data import get_split, original_ids, prepare_dataset
from recsys_cli.data.ids import cached_ids
from recsys_cli.data.splits import directory_name
from recsys_cli.errors import DataError

from .test_data_zips import RATINGS, csv_members, make_zip, md5, ml10m_members


def write_zip(path, members) -> str:
    data = make_zip(members)
    path.write_bytes(data)
    return md5(data)


def test_a_replaced_local_zip_is_parsed_again(tmp_path, data_dir):
    local = tmp_path / "ml-10m.zip"
    write_zip(local, ml10m_members())
    first = prepare_dataset("movielens-10m", data_dir, source=str(local), verify=False, statistics=False)
    assert first.urm.nnz == len(RATINGS)
    write_zip(local, ml10m_members(ratings=RATINGS[:3]))  # same path, other bytes
    again = prepare_dataset("movielens-10m", data_dir, source=str(local), verify=False, statistics=False)
    assert again.urm.nnz == 3
    # unchanged bytes: the cache is used as it is
    assert prepare_dataset("movielens-10m", data_dir, source=str(local), verify=False, statistics=False).urm.nnz == 3


def test_a_cache_of_other_bytes_than_the_checksum_asked_for_is_not_used(tmp_path, data_dir):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    write_zip(a, ml10m_members())
    b_md5 = write_zip(b, ml10m_members(ratings=RATINGS[:2]))
    prepare_dataset("movielens-10m", data_dir, source=str(a), verify=False, statistics=False)
    # the cache came from an unverified zip; with verification on, GroupLens's checksum is asked
    # for: the cache is not served as MovieLens-10M, the zip is checked again and fails
    with pytest.raises(DataError, match="MD5|checksum"):
        prepare_dataset("movielens-10m", data_dir, source=str(a), verify=True, statistics=False)
    # an explicit --md5 of another zip: that zip is read, not the cache
    built = prepare_dataset("movielens-10m", data_dir, source=str(b), md5=b_md5, verify=True, statistics=False)
    assert built.urm.nnz == 2
    assert built.manifest["source"]["verified"] is True
    # verification off: whatever was cached is what the user accepts
    assert prepare_dataset("movielens-10m", data_dir, verify=False, statistics=False).urm.nnz == 2


@pytest.mark.parametrize("name,members,other", [
    ("movielens-32m", csv_members(folder="ml-25m"), "movielens-25m"),
    ("movielens-10m", ml10m_members(folder="ml-1m"), "movielens-1m"),
])
def test_a_zip_of_another_release_is_refused(tmp_path, data_dir, name, members, other):
    local = tmp_path / "wrong.zip"
    write_zip(local, members)
    with pytest.raises(DataError, match=f"is {other}'s folder, not {name}'s") as caught:
        prepare_dataset(name, data_dir, source=str(local), verify=False, statistics=False)
    assert other in caught.value.hint
    assert not (data_dir / name).exists()


def test_a_repacked_zip_with_an_unknown_folder_is_still_read(tmp_path, data_dir):
    local = tmp_path / "repacked.zip"
    write_zip(local, ml10m_members(folder="my-copy"))
    assert prepare_dataset("movielens-10m", data_dir, source=str(local), verify=False, statistics=False).urm.nnz == 5


def test_split_folders_of_different_fractions_differ():
    params = {"protocol": "holdout", "test_fraction": 0.2, "val_fraction": 0.0}
    assert directory_name("d", params, 1) == "d-holdout-test0.2-val0-seed1"  # the usual names do not change
    close = {**params, "test_fraction": 0.2000004}
    assert directory_name("d", close, 1) != directory_name("d", params, 1)
    assert directory_name("d", {**params, "test_fraction": 1 / 3}, 1) == f"d-holdout-test{1 / 3!r}-val0-seed1"


def test_original_ids_are_not_taken_from_a_cache_rebuilt_from_other_ratings(tmp_path, data_dir):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    write_zip(a, ml10m_members())
    # the same users and movies, first seen in another order: same shape, other ids per row
    write_zip(b, ml10m_members(ratings=[RATINGS[4], *RATINGS[2:4], *RATINGS[:2]]))
    config_a = DataConfig(dataset="movielens-10m", source=str(a), verify=False, data_dir=data_dir,
                          split=SplitConfig(test_fraction=0.4, val_fraction=0))
    first = prepare_dataset("movielens-10m", data_dir, source=str(a), verify=False, statistics=False)
    split = get_split(first, config_a, seed=0)
    users_a, items_a = np.asarray(first.user_ids), np.asarray(first.item_ids)
    assert cached_ids(config_a, split) is not None
    other = prepare_dataset("movielens-10m", data_dir, source=str(b), verify=False, statistics=False)
    assert other.urm.shape == first.urm.shape and list(other.user_ids) != list(users_a)
    assert cached_ids(config_a, split) is None
    users, items = original_ids(SimpleNamespace(data=config_a, experiment=SimpleNamespace(seed=0)), split)
    assert list(users) == list(users_a) and list(items) == list(items_a)
