"""Known data sets: name → GroupLens file, pinned checksum, layout inside the zip, statistics name."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass

from recsys_cli.errors import DataError

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
BASE_URL_ENV = "RECSYS_MOVIELENS_BASE_URL"


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # what users type: movielens-10m
    filename: str  # GroupLens's zip: ml-10m.zip
    md5: str | None  # pinned MD5 of GroupLens's zip (None: the file changes over time)
    layout: str  # "100k" (tab/pipe files), "dat" (:: files), "csv" (CSV with a header)
    folder: str  # folder inside the zip
    course_name: str  # the data set's name in the statistics block, e.g. Movielens10M

    @property
    def url(self) -> str:
        base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        return f"{base.rstrip('/')}/{self.filename}"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("movielens-10m", "ml-10m.zip", "ce571fd55effeba0271552578f2648bd", "dat", "ml-10M100K", "Movielens10M"),
        DatasetSpec("movielens-100k", "ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "100k", "ml-100k", "Movielens100K"),
        DatasetSpec("movielens-1m", "ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "dat", "ml-1m", "Movielens1M"),
        DatasetSpec("movielens-20m", "ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", "csv", "ml-20m", "Movielens20M"),
        DatasetSpec("movielens-25m", "ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada", "csv", "ml-25m", "Movielens25M"),
        DatasetSpec("movielens-32m", "ml-32m.zip", None, "csv", "ml-32m", "Movielens32M"),
        DatasetSpec("movielens-latest-small", "ml-latest-small.zip", None, "csv", "ml-latest-small",
                    "MovielensLatestSmall"),
    )
}

SYNTHETIC = "synthetic"
KNOWN_NAMES: tuple[str, ...] = (*DATASETS, SYNTHETIC)


def unknown_name_error(name: str) -> DataError:
    close = difflib.get_close_matches(name, KNOWN_NAMES, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    return DataError(f"unknown data set {name!r}", hint=f"{hint}known data sets: {', '.join(KNOWN_NAMES)}")


def get_spec(name: str) -> DatasetSpec:
    """The spec of a MovieLens data set; a DataError naming the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name_error(name) from None


def check_name(name: str) -> str:
    if name not in KNOWN_NAMES:
        raise unknown_name_error(name)
    return name
