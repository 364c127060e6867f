"""Readers per zip layout, producing the same matrices as the reference implementation's readers.

Every layout ends in :func:`assemble`, which applies the reference rules (../shared/spec/movielens.md, §3):
users indexed by first appearance in the ratings, items by first appearance across ratings, then the
movie file, then tags (unrated movies become empty columns), features per ICM by first appearance,
float64 CSR, zeros gone.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_cli import console
from recsys_cli.data.dataset import Dataset
from recsys_cli.data.registry import DATASETS, DatasetSpec
from recsys_cli.data.tags import stem_series
from recsys_cli.errors import DataError

# Bump when parsing changes what ends up in the processed cache; older caches are then rebuilt.
PARSER_VERSION = 1

YEAR_PATTERN = r"\(([0-9]{4})\)$"
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass
class RawData:
    """Parsed columns before indexing. Ids are int64 (MovieLens ids are integers)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    movie_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # (item id, feature key, value) triples per ICM, in file order
    icm_entries: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- zip access -------------------------------------------------------------------------------------

class DamagedZip(DataError):
    """An unreadable zip or member. The hint says to fetch it again with --force, which only helps for a
    download: :func:`read_zip` rewrites it for a local ``--source`` file, which --force cannot repair."""

    def __init__(self, message: str, *, hint: str = "the file is damaged; download it again with --force"):
        super().__init__(message, hint=hint)


def open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DamagedZip(f"{path} is not a zip archive",
                        hint="pass the zip GroupLens publishes, or rerun with --force to download it again") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", hint="check the path and its permissions") from None


def find_member(zf: zipfile.ZipFile, spec: DatasetSpec, basename: str, *, required: bool = True) -> str | None:
    names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == basename and not n.startswith("__MACOSX")]
    preferred = f"{spec.folder}/{basename}"
    if preferred in names:
        return preferred
    # a repacked zip may use another folder, but never another release's: ml-25m/ratings.csv is not
    # MovieLens-32M's, and releases without a pinned checksum (32M, latest-small) have only this check
    releases = {s.folder: s.name for s in DATASETS.values() if s.folder != spec.folder}
    foreign = [n for n in names if any(part in releases for part in n.split("/")[:-1])]
    if names and len(foreign) == len(names):
        folder = next(part for part in foreign[0].split("/")[:-1] if part in releases)
        raise DataError(f"{zf.filename} holds {foreign[0]}: {folder}/ is {releases[folder]}'s folder, not {spec.name}'s "
                        f"({spec.folder}/)", hint=f"pass the {spec.name} zip, or ask for {releases[folder]} instead")
    names = [n for n in names if n not in foreign]
    if names:
        return min(names, key=lambda n: (n.count("/"), n))
    if required:
        shown = ", ".join(zf.namelist()[:8]) or "nothing"
        raise DataError(f"{zf.filename} lacks {preferred} (it holds {shown})",
                        hint=f"this is not the {spec.name} zip; pass the right file to --source")
    return None


def read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    try:
        return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError) as exc:
        raise DamagedZip(f"{zf.filename}: cannot read {member}: {exc}",
                        hint="the zip is damaged; download it again with --force") from None


# -- fast ratings parsing ---------------------------------------------------------------------------

def _bad_line(text_lines, member: str, expected: str, sep: str, n_fields: int, kinds: tuple[type, ...],
              first_line: int) -> DataError:
    """Find the first malformed line (only run once the fast parser has failed)."""
    for number, line in enumerate(text_lines, start=first_line):
        if not line.strip():
            continue
        parts = line.split(sep)
        ok = len(parts) == n_fields
        if ok:
            try:
                for kind, value in zip(kinds, parts):
                    v = kind(value)
                    if kind is float and not np.isfinite(v):
                        ok = False
            except ValueError:
                ok = False
        if not ok:
            shown = line if len(line) <= 80 else line[:77] + "..."
            return DamagedZip(f"{member} line {number}: malformed line {shown!r}, expected {expected}",
                             hint="the file is damaged or not MovieLens data; download it again with --force")
    return DamagedZip(f"{member}: could not be parsed")


def parse_ratings(raw: bytes, member: str, *, sep: str, header: bool, expected: str) -> tuple[np.ndarray, ...]:
    """user, item (int64), rating (float64), timestamp (int64) columns of a ratings file."""
    data = raw.replace(b"::", b"\t") if sep == "::" else raw
    c_sep = "\t" if sep == "::" else sep
    try:
        frame = pd.read_csv(
            io.BytesIO(data), sep=c_sep, header=0 if header else None, names=["u", "i", "r", "t"],
            dtype={"u": np.int64, "i": np.int64, "r": np.float64, "t": np.int64}, engine="c",
            skip_blank_lines=True, na_filter=True,
        )
        columns = tuple(frame[c].to_numpy() for c in "uirt")
        failed = not np.isfinite(columns[2]).all()
    except (ValueError, pd.errors.ParserError, OverflowError):
        failed, columns = True, ()
    if failed:
        lines = raw.decode("latin-1").splitlines()
        body = lines[1:] if header else lines
        raise _bad_line(body, member, expected, sep, 4, (int, int, float, int), 2 if header else 1)
    return columns


# -- layouts ----------------------------------------------------------------------------------------

def _split_text_lines(raw: bytes, encoding: str) -> pd.Series:
    text = raw.decode(encoding)
    lines = pd.Series(text.split("\n"), dtype=object)
    lines = lines.str.rstrip("\r")
    return lines


def _int_ids(values: pd.Series, member: str, line_numbers: np.ndarray, what: str) -> np.ndarray:
    parsed = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        k = int(np.argmax(bad))
        raise DamagedZip(f"{member} line {int(line_numbers[k])}: {what} {values.iloc[k]!r} is not an integer id",
                        hint="the file is damaged or not MovieLens data; download it again with --force")
    return parsed.to_numpy(dtype=np.int64)


def _genre_entries(ids: np.ndarray, genre_lists: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    exploded = genre_lists.str.split("|").explode()
    items = ids[exploded.index.to_numpy()]
    keys = exploded.to_numpy(dtype=object)
    keep = np.array([isinstance(k, str) and k != "" for k in keys], dtype=bool) if len(keys) else np.zeros(0, bool)
    return items[keep], keys[keep], np.ones(int(keep.sum()))


def _year_entries(ids: np.ndarray, titles: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    years = titles.str.extract(YEAR_PATTERN, expand=False)
    has = years.notna().to_numpy()
    return ids[has], np.full(int(has.sum()), "Year", dtype=object), years[has].astype(np.int64).to_numpy(np.float64)


def _tag_entries(item_ids: np.ndarray, texts: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    owners, stems = stem_series(texts.reset_index(drop=True), pd.Series(np.arange(len(texts))))
    return item_ids[owners], stems, np.ones(len(stems))


def _read_dat_movies(zf, spec, raw_movies: bytes, member: str, data: RawData) -> None:
    lines = _split_text_lines(raw_movies, "latin-1")
    numbers = np.arange(1, len(lines) + 1)
    nonblank = lines.str.strip() != ""
    lines, numbers = lines[nonblank].reset_index(drop=True), numbers[nonblank.to_numpy()]
    head = lines.str.split("::", n=1, expand=True)
    if head.shape[1] < 2 or head[1].isna().any():
        k = int(np.argmax(head[1].isna().to_numpy())) if head.shape[1] >= 2 else 0
        raise DamagedZip(f"{member} line {int(numbers[k])}: malformed line {lines.iloc[k][:80]!r}, "
                        "expected MovieID::Title::Genres")
    rest = head[1].str.rsplit("::", n=1, expand=True)
    if rest.shape[1] < 2 or rest[1].isna().any():
        k = int(np.argmax(rest[1].isna().to_numpy())) if rest.shape[1] >= 2 else 0
        raise DamagedZip(f"{member} line {int(numbers[k])}: malformed line {lines.iloc[k][:80]!r}, "
                        "expected MovieID::Title::Genres")
    ids = _int_ids(head[0], member, numbers, "movie id")
    data.movie_ids = ids
    data.icm_entries["ICM_genres"] = _genre_entries(ids, rest[1])
    data.icm_entries["ICM_year"] = _year_entries(ids, rest[0])


def _read_dat_tags(raw_tags: bytes, member: str, data: RawData) -> None:
    lines = _split_text_lines(raw_tags, "latin-1")
    numbers = np.arange(1, len(lines) + 1)
    # The reference reader opens tags.dat with header=False but tests `header is not None`, so it skips the first
    # line; its figures (and the ICM values) include that quirk.
    lines, numbers = lines.iloc[1:], numbers[1:]
    nonblank = (lines.str.len() > 0).to_numpy()
    lines, numbers = lines[nonblank].reset_index(drop=True), numbers[nonblank]
    fields = lines.str.split("::", n=3, expand=True)
    if len(lines) and (fields.shape[1] < 3 or fields[2].isna().any()):
        k = int(np.argmax(fields[fields.shape[1] - 1].isna().to_numpy())) if fields.shape[1] >= 3 else 0
        raise DamagedZip(f"{member} line {int(numbers[k])}: malformed line {lines.iloc[k][:80]!r}, "
                        "expected UserID::MovieID::Tag::Timestamp")
    if not len(lines):
        return
    items = _int_ids(fields[1], member, numbers, "movie id")
    data.icm_entries["ICM_tags"] = _tag_entries(items, fields[2])


def _read_interactions(zf: zipfile.ZipFile, spec: DatasetSpec, member: str, *, sep: str, header: bool,
                       expected: str) -> RawData:
    console.debug(f"{spec.course_name}: Loading Interactions")
    users, items, ratings, timestamps = parse_ratings(read_member(zf, member), member, sep=sep, header=header,
                                                      expected=expected)
    return RawData(users, items, ratings, timestamps)


def read_dat(zf: zipfile.ZipFile, spec: DatasetSpec) -> RawData:
    ratings_member = find_member(zf, spec, "ratings.dat")
    movies_member = find_member(zf, spec, "movies.dat")
    tags_member = find_member(zf, spec, "tags.dat", required=False)
    data = _read_interactions(zf, spec, ratings_member, sep="::", header=False,
                              expected="UserID::MovieID::Rating::Timestamp")
    console.debug(f"{spec.course_name}: Loading Item Features Genres")
    _read_dat_movies(zf, spec, read_member(zf, movies_member), movies_member, data)
    if tags_member is not None:
        console.debug(f"{spec.course_name}: Loading Item Features Tags")
        _read_dat_tags(read_member(zf, tags_member), tags_member, data)
    return data


def read_100k(zf: zipfile.ZipFile, spec: DatasetSpec) -> RawData:
    ratings_member = find_member(zf, spec, "u.data")
    items_member = find_member(zf, spec, "u.item")
    genre_member = find_member(zf, spec, "u.genre", required=False)
    data = _read_interactions(zf, spec, ratings_member, sep="\t", header=False,
                              expected="user<TAB>item<TAB>rating<TAB>timestamp")
    genres = list(ML100K_GENRES)
    if genre_member is not None:
        glines = [g for g in read_member(zf, genre_member).decode("latin-1").splitlines() if g.strip()]
        named = [g.split("|")[0] for g in glines]
        if len(named) == len(genres):
            genres = named
    console.debug(f"{spec.course_name}: Loading Item Features Genres")
    lines = _split_text_lines(read_member(zf, items_member), "latin-1")
    numbers = np.arange(1, len(lines) + 1)
    nonblank = (lines.str.strip() != "").to_numpy()
    lines, numbers = lines[nonblank].reset_index(drop=True), numbers[nonblank]
    fields = lines.str.split("|", expand=True)
    n_fields = 5 + len(genres)
    if fields.shape[1] != n_fields or fields.isna().any(axis=None):
        bad = fields.isna().any(axis=1).to_numpy() if fields.shape[1] == n_fields else np.ones(len(lines), bool)
        k = int(np.argmax(bad))
        raise DamagedZip(f"{items_member} line {int(numbers[k])}: malformed line {lines.iloc[k][:80]!r}, "
                        f"expected {n_fields} fields separated by '|'")
    ids = _int_ids(fields[0], items_member, numbers, "movie id")
    flags = fields.iloc[:, 5:].to_numpy(dtype=str) == "1"
    rows, cols = np.nonzero(flags)  # row-major: each movie's genres in u.genre order
    data.movie_ids = ids
    data.icm_entries["ICM_genres"] = (ids[rows], np.asarray(genres, dtype=object)[cols], np.ones(len(rows)))
    data.icm_entries["ICM_year"] = _year_entries(ids, fields[1].str.strip())
    return data


def read_csv_layout(zf: zipfile.ZipFile, spec: DatasetSpec) -> RawData:
    ratings_member = find_member(zf, spec, "ratings.csv")
    movies_member = find_member(zf, spec, "movies.csv")
    tags_member = find_member(zf, spec, "tags.csv", required=False)
    data = _read_interactions(zf, spec, ratings_member, sep=",", header=True,
                              expected="userId,movieId,rating,timestamp")
    console.debug(f"{spec.course_name}: Loading Item Features Genres")
    try:
        movies = pd.read_csv(io.BytesIO(read_member(zf, movies_member)), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DamagedZip(f"{movies_member}: {str(exc).splitlines()[0]}") from None
    if list(movies.columns[:3]) != ["movieId", "title", "genres"]:
        raise DataError(f"{movies_member}: header is {list(movies.columns)}, expected movieId,title,genres",
                        hint="this is not a MovieLens CSV release")
    ids = _int_ids(movies["movieId"], movies_member, np.arange(2, len(movies) + 2), "movie id")
    data.movie_ids = ids
    data.icm_entries["ICM_genres"] = _genre_entries(ids, movies["genres"])
    data.icm_entries["ICM_year"] = _year_entries(ids, movies["title"].str.strip())
    if tags_member is not None:
        console.debug(f"{spec.course_name}: Loading Item Features Tags")
        try:
            tags = pd.read_csv(io.BytesIO(read_member(zf, tags_member)), dtype=str, keep_default_na=False)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DamagedZip(f"{tags_member}: {str(exc).splitlines()[0]}") from None
        if {"movieId", "tag"} - set(tags.columns):
            raise DataError(f"{tags_member}: header is {list(tags.columns)}, expected userId,movieId,tag,timestamp",
                            hint="this is not a MovieLens CSV release")
        items = _int_ids(tags["movieId"], tags_member, np.arange(2, len(tags) + 2), "movie id")
        data.icm_entries["ICM_tags"] = _tag_entries(items, tags["tag"])
    return data


READERS = {"dat": read_dat, "100k": read_100k, "csv": read_csv_layout}


# -- assembling matrices ----------------------------------------------------------------------------

def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """float64 CSR, duplicates summed (as the reference implementation's builder does), zeros eliminated."""
    matrix = sp.csr_matrix((values.astype(np.float64, copy=False), (rows, cols)), shape=shape, dtype=np.float64)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def assemble(name: str, spec_course_name: str, data: RawData) -> Dataset:
    warnings = list(data.warnings)
    user_codes, user_uniques = pd.factorize(data.users)
    icm_names = list(data.icm_entries)
    item_keys = np.concatenate([data.items, data.movie_ids] + [data.icm_entries[n][0] for n in icm_names])
    item_codes, item_uniques = pd.factorize(item_keys)
    n_users, n_items = len(user_uniques), len(item_uniques)
    n = len(data.items)
    rows, cols = user_codes.astype(np.int64), item_codes[:n].astype(np.int64)

    # One sort gives both matrices the same pattern and finds duplicate (user, item) pairs.
    key = rows * n_items + cols
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_key[1:] != sorted_key[:-1]
    if not last.all():
        dupes = int(n - last.sum())
        warnings.append(f"{dupes} repeated (user, item) ratings; kept the last of each")
        console.warn(f"{name}: {dupes} repeated (user, item) ratings; kept the last one of each")
    order = order[last]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[order], minlength=n_users), out=indptr[1:])
    indices = cols[order].astype(np.int32)

    def build(values: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values[order].astype(np.float64), indices.copy(), indptr.copy()), shape=(n_users, n_items))
        m.has_sorted_indices = True
        m.eliminate_zeros()
        return m

    urm = build(data.ratings)
    urm_timestamp = build(data.timestamps)

    icms: dict[str, sp.csr_matrix] = {}
    feature_ids: dict[str, np.ndarray] = {}
    offset = n + len(data.movie_ids)
    for icm_name in icm_names:
        items, keys, values = data.icm_entries[icm_name]
        codes = item_codes[offset:offset + len(items)]
        offset += len(items)
        f_codes, f_uniques = pd.factorize(np.asarray(keys, dtype=object))
        icms[icm_name] = _csr(codes, f_codes, np.asarray(values), (n_items, len(f_uniques)))
        feature_ids[icm_name] = np.asarray(f_uniques, dtype=str)
    if "ICM_genres" in icms and "ICM_tags" in icms:
        parts = [data.icm_entries[n_] for n_ in ("ICM_genres", "ICM_tags")]
        start_g = n + len(data.movie_ids) + sum(len(data.icm_entries[x][0]) for x in icm_names[:icm_names.index("ICM_genres")])
        start_t = n + len(data.movie_ids) + sum(len(data.icm_entries[x][0]) for x in icm_names[:icm_names.index("ICM_tags")])
        codes = np.concatenate([item_codes[start_g:start_g + len(parts[0][0])], item_codes[start_t:start_t + len(parts[1][0])]])
        keys = np.concatenate([np.asarray(parts[0][1], dtype=object), np.asarray(parts[1][1], dtype=object)])
        values = np.concatenate([parts[0][2], parts[1][2]])
        f_codes, f_uniques = pd.factorize(keys)
        icms["ICM_all"] = _csr(codes, f_codes, values, (n_items, len(f_uniques)))
        feature_ids["ICM_all"] = np.asarray(f_uniques, dtype=str)
    elif "ICM_genres" in icms:
        icms["ICM_all"] = icms["ICM_genres"].copy()
        feature_ids["ICM_all"] = feature_ids["ICM_genres"].copy()

    return Dataset(
        name=name, urm=urm, urm_timestamp=urm_timestamp, icms=icms,
        user_ids=np.asarray(user_uniques).astype(str), item_ids=np.asarray(item_uniques).astype(str),
        feature_ids=feature_ids, manifest={"course_name": spec_course_name, "warnings": warnings},
    )


def read_zip(zip_path: Path, spec: DatasetSpec, *, local_source: bool = False) -> Dataset:
    """Parse a GroupLens zip of ``spec``'s layout into a Dataset. ``local_source``: the zip is the user's
    own ``--source`` file, so damage is theirs to fix rather than a reason to download again."""
    console.debug(f"{spec.course_name}: Loading original data")
    try:
        with open_zip(zip_path) as zf:
            data = READERS[spec.layout](zf, spec)
    except DamagedZip as exc:
        if not local_source:
            raise
        raise DataError(exc.message, hint=f"check {zip_path} or replace it with the {spec.name} zip GroupLens "
                                          f"publishes ({spec.url}), then rerun") from None
    return assemble(spec.name, spec.course_name, data)
