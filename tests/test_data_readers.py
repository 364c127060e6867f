"""Readers, statistics and the processed cache, on hand-built zips of each layout and on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config.schema import DataConfig
from recsys_cli.data import load_dataset, prepare_dataset, print_cached_statistics
from recsys_cli.data.cache import load_cache
from recsys_cli.data.readers import read_zip
from recsys_cli.data.registry import get_spec
from recsys_cli.data.stats import gini_index, icm_line, statistics_text
from recsys_cli.data.tags import STOPWORDS, stem, tokens
from recsys_cli.errors import DataError

from .conftest import shared_or_skip
from .test_data_zips import RATINGS, csv_members, generated_ratings, make_zip, ml10m_members, ml100k_members

runner = CliRunner()


def write(tmp_path, members, name="x.zip"):
    path = tmp_path / name
    path.write_bytes(make_zip(members))
    return path


def test_ml10m_layout_matrices_follow_the_course_rules(tmp_path):
    ds = read_zip(write(tmp_path, ml10m_members()), get_spec("movielens-10m"))
    # users by first appearance (10, 7, 30); items by first appearance in ratings (2, 1, 3) then movies.dat (4)
    assert ds.user_ids.tolist() == ["10", "7", "30"]
    assert ds.item_ids.tolist() == ["2", "1", "3", "4"]
    np.testing.assert_array_equal(ds.urm.toarray(), [[4.0, 3.5, 0, 0], [0, 5.0, 1.0, 0], [2.5, 0, 0, 0]])
    np.testing.assert_array_equal(ds.urm_timestamp.toarray(), [[100, 101, 0, 0], [0, 102, 103, 0], [104, 0, 0, 0]])
    assert ds.urm.dtype == np.float64 and ds.urm.has_canonical_format
    assert ds.feature_ids["ICM_genres"].tolist() == ["Adventure", "Animation", "Children", "Comedy", "Fantasy",
                                                    "Romance", "Drama"]
    assert ds.icms["ICM_genres"][1].nnz == 5 and ds.icms["ICM_genres"].nnz == 13
    np.testing.assert_array_equal(ds.icms["ICM_year"].toarray().ravel(), [1995] * 4)
    # line 1 of tags.dat is skipped (a quirk of the reference reader); capitalised irregular forms are stemmed plainly
    assert ds.feature_ids["ICM_tags"].tolist() == ["pixar", "anim", "dy", "ski", "thi", "wa", "best"]
    tags = ds.icms["ICM_tags"].toarray()
    np.testing.assert_array_equal(tags[1], [2, 1, 0, 0, 1, 1, 1])  # movie 1: pixar twice
    np.testing.assert_array_equal(tags[2], [0, 0, 1, 1, 0, 0, 0])
    assert ds.icms["ICM_all"].shape == (4, 14) and ds.icms["ICM_all"].nnz == 20
    assert ds.feature_ids["ICM_all"].tolist()[:7] == ds.feature_ids["ICM_genres"].tolist()


def test_statistics_block_format_on_known_data(tmp_path):
    ds = read_zip(write(tmp_path, ml10m_members()), get_spec("movielens-10m"))
    lines = statistics_text(ds).split("\n")
    assert lines[:15] == [
        "DataReader: current dataset is: Movielens10M",
        "\tNumber of items: 4", "\tNumber of users: 3", "\tNumber of interactions in URM_all: 5",
        "\tValue range in URM_all: 1.00-5.00", "\tInteraction density: 4.17E-01",
        "\tInteractions per user:", "\t\t Min: 1.00E+00", "\t\t Avg: 1.67E+00", "\t\t Max: 2.00E+00",
        "\tInteractions per item:", "\t\t Min: 0.00E+00", "\t\t Avg: 1.25E+00", "\t\t Max: 2.00E+00",
        "\tGini Index: 0.13",
    ]
    assert lines[15] == "" and lines[16].startswith("\tICM name: ICM_tags, Value range: 1.00 / 2.00, Num features: 7")
    assert lines[-3].startswith("\tICM name: ICM_year, Value range: 2.00E+03 / 2.00E+03") and lines[-2:] == ["", ""]


def test_gini_index_known_values():
    assert gini_index(np.array([5, 5, 5, 5])) == pytest.approx(0.0, abs=1e-6)
    assert gini_index(np.array([0, 0, 10])) == pytest.approx(2 / 3, abs=1e-6)
    assert gini_index(np.array([1, 2, 2])) == pytest.approx(2 / 15, abs=1e-6)


def test_icm_line_switches_to_exponent_above_100():
    import scipy.sparse as sp

    icm = sp.csr_matrix(np.array([[1995.0], [1920.0]]))
    assert icm_line("ICM_year", icm) == ("\tICM name: ICM_year, Value range: 1.92E+03 / 2.00E+03, Num features: 1, "
                                         "feature occurrences: 2, density 1.00E+00")


def test_tag_tokenising_and_stemming():
    assert tokens("Excellent!  sci-fi, was THE best") == ["excel", "sci", "fi", "wa", "best"]
    assert stem("dying") == "die" and stem("Dying") == "dy" and stem("Sky") == "ski"
    assert "the" in STOPWORDS and "wa" not in STOPWORDS and len(STOPWORDS) == 198


def test_ml100k_and_csv_layouts(tmp_path):
    ds = read_zip(write(tmp_path, ml100k_members()), get_spec("movielens-100k"))
    np.testing.assert_array_equal(ds.urm.toarray()[:, :3], [[4, 3, 0], [0, 5, 1], [2, 0, 0]])
    assert ds.feature_ids["ICM_genres"].tolist() == ["Animation", "Children's", "Comedy", "Action", "Adventure",
                                                    "Thriller", "unknown"]
    assert ds.icms["ICM_year"].nnz == 3  # "unknown" has no year
    ds = read_zip(write(tmp_path, csv_members()), get_spec("movielens-latest-small"))
    assert ds.n_users == 3 and ds.n_items == 3 and ds.urm.nnz == 5
    assert ds.feature_ids["ICM_tags"].tolist() == ["funni", "pixar"]
    np.testing.assert_array_equal(ds.icms["ICM_tags"].toarray(), [[1, 0], [1, 1], [0, 0]])  # items 2, 1, 3
    ds = read_zip(write(tmp_path, ml10m_members(tags=None, folder="ml-1m")), get_spec("movielens-1m"))
    assert set(ds.icms) == {"ICM_genres", "ICM_year", "ICM_all"}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (ml10m_members(ratings=RATINGS[:2]) | {"ml-10M100K/ratings.dat": "1::2::3.0::4\n5::6::oops::7\n"},
         "ratings.dat line 2: malformed line '5::6::oops::7'"),
        ({"ml-10M100K/ratings.dat": "1::2::3.0::4\n1::2::3\n", "ml-10M100K/movies.dat": "1::A (1990)::Drama\n"},
         "ratings.dat line 2"),
        ({"ml-10M100K/ratings.dat": "1::2::3.0::4\n", "ml-10M100K/movies.dat": "1::A (1990)::Drama\nx::B::Drama\n"},
         "movies.dat line 2: movie id 'x' is not an integer id"),
        ({"ml-10M100K/movies.dat": "1::A (1990)::Drama\n"}, "lacks ml-10M100K/ratings.dat"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, members, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_zip(write(tmp_path, members), get_spec("movielens-10m"))


def test_not_a_zip(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="is not a zip archive"):
        read_zip(path, get_spec("movielens-10m"))


def test_cache_round_trip_and_repair(tmp_path, data_dir):
    zip_path = write(tmp_path, ml10m_members())
    first = prepare_dataset("movielens-10m", data_dir, source=str(zip_path), verify=False)
    cached = load_cache(data_dir / "movielens-10m")
    assert (cached.urm != first.urm).nnz == 0 and cached.item_ids.tolist() == first.item_ids.tolist()
    assert cached.manifest["source"]["verified"] is False and cached.manifest["warnings"]
    assert statistics_text(cached) == statistics_text(first)
    # tamper with a cached file: the next load rebuilds the cache from the zip
    victim = data_dir / "movielens-10m" / "URM_all.npz"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    again = prepare_dataset("movielens-10m", data_dir, source=str(zip_path), verify=False, statistics=False)
    assert (again.urm != first.urm).nnz == 0
    load_cache(data_dir / "movielens-10m")  # passes its check again
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_unknown_name_lists_known_ones(data_dir):
    with pytest.raises(DataError, match="did you mean movielens-10m.*known data sets: movielens-10m, movielens-100k"):
        prepare_dataset("movielens-10n", data_dir)
    result = runner.invoke(app, ["download", "movielens-7m"])
    assert result.exit_code == 2 and "unknown data set 'movielens-7m'" in result.stderr


def test_info_prints_cached_statistics(tmp_path, data_dir, capsys):
    with pytest.raises(DataError, match="movielens-10m is not cached"):
        print_cached_statistics("movielens-10m", data_dir)
    prepare_dataset("movielens-10m", data_dir, source=str(write(tmp_path, ml10m_members())), verify=False,
                    statistics=False)
    result = runner.invoke(app, ["info", "--dataset", "movielens-10m"])
    assert result.exit_code == 0, result.stderr
    assert "DataReader: current dataset is: Movielens10M" in result.stdout  # info's results go to stdout
    as_json = runner.invoke(app, ["info", "--dataset", "movielens-10m", "--json"])
    assert "Number of items" in json.loads(as_json.stdout)["statistics"][0]
    unknown = runner.invoke(app, ["info", "--dataset", "nope"])
    assert unknown.exit_code == 2 and unknown.stdout == "" and "unknown data set 'nope'" in unknown.stderr


@pytest.fixture(scope="module")
def real_ml10m_zip(tmp_path_factory):
    folder = shared_or_skip("ml-10m-metadata")
    movies = (folder / "movies.dat").read_bytes()
    movie_ids = [line.split(b"::")[0].decode() for line in movies.splitlines()]
    members = ml10m_members(ratings=generated_ratings(200, movie_ids[:3000], 20))
    members["ml-10M100K/movies.dat"] = movies
    members["ml-10M100K/tags.dat"] = (folder / "tags.dat").read_bytes()
    path = tmp_path_factory.mktemp("ml10m") / "ml-10m.zip"
    path.write_bytes(make_zip(members))
    return path


def test_real_ml10m_metadata_icm_lines_match_the_course(real_ml10m_zip):
    result = runner.invoke(app, ["download", "movielens-10m", "--source", str(real_ml10m_zip), "--no-verify"])
    assert result.exit_code == 0, result.stderr
    lines = [line.strip() for line in result.stderr.splitlines() if "ICM name:" in line]
    assert lines == [
        "ICM name: ICM_tags, Value range: 1.00 / 69.00, Num features: 10106, feature occurrences: 106820, density 9.90E-04",
        "ICM name: ICM_genres, Value range: 1.00 / 1.00, Num features: 20, feature occurrences: 21564, density 1.01E-01",
        "ICM name: ICM_all, Value range: 1.00 / 69.00, Num features: 10126, feature occurrences: 128384, density 1.19E-03",
        "ICM name: ICM_year, Value range: 1.92E+03 / 2.01E+03, Num features: 1, feature occurrences: 10681, density 1.00E+00",
    ]
    assert "Number of items: 10681" in result.stderr and "Number of users: 200" in result.stderr


def test_real_ml100k_zip_loads(data_dir):
    zip_path = shared_or_skip("ml-100k", "ml-100k.zip")
    with pytest.raises(DataError, match="checksum mismatch"):
        prepare_dataset("movielens-100k", data_dir, source=str(zip_path))
    assert not (data_dir / "movielens-100k").exists()
    cfg = DataConfig(dataset="movielens-100k", source=str(zip_path), verify=False, data_dir=data_dir)
    ds = load_dataset(cfg)
    assert (ds.n_users, ds.n_items, ds.urm.nnz) == (943, 1682, 100000)
    assert ds.urm.data.min() == 1.0 and ds.urm.data.max() == 5.0
