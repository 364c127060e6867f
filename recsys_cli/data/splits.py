"""Seeded splits saved as fingerprinted artifacts under ``<data_dir>/splits/``.

A split folder holds ``train.npz``, ``test.npz``, optional ``val.npz`` and ``manifest.json``
(parameters, sizes, warnings, and a fingerprint: sha256 of the three matrices' contents). The
same data, protocol, parameters and seed give the same folder name, so a later run reuses it; a folder
whose contents no longer match its fingerprint is refused. With ``course_compatible`` the holdout is
exactly the reference implementation's split for the same seed (../shared/spec/movielens.md, §4).
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_cli import atomic, console
from recsys_cli.data.cache import content_hash, staged_directory
from recsys_cli.data.dataset import Dataset, Split
from recsys_cli.errors import DataError

SPLIT_FORMAT = 1
PARTS = ("train", "val", "test")
# What scipy.sparse.load_npz raises for a file that is not a save_npz file: junk reads as a pickle
# (ValueError), an empty file as EOFError, a broken zip as BadZipFile/zlib.error, a dense np.savez as
# ValueError, a plain .npy as TypeError.
NOT_SPARSE_NPZ = (ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile, zlib.error)


# -- the protocols ------------------------------------------------------------------------------------

def _canonical(m: sp.spmatrix) -> sp.csr_matrix:
    m = m.tocsr()
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    return m


def _entries(urm: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-major (user, item, value) entries of a canonical CSR matrix: the COO order the reference split permutes."""
    urm = _canonical(urm)
    rows = np.repeat(np.arange(urm.shape[0], dtype=np.int64), np.diff(urm.indptr))
    return rows, urm.indices.astype(np.int64), urm.data.astype(np.float64)


def _subset(rows, cols, vals, mask, shape) -> sp.csr_matrix:
    """CSR of the masked entries; entries are row-major already, so no sort is needed."""
    counts = np.bincount(rows[mask], minlength=shape[0])
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    m = sp.csr_matrix((vals[mask], cols[mask].astype(np.int32), indptr), shape=shape)
    m.has_sorted_indices = True
    return m


def _n_keep(n: int, fraction_out: float) -> int:
    return round(n * (1.0 - fraction_out))  # Python's round (halves to even), as the reference split does


def _check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    ok = (0 <= value < 1) if allow_zero else (0 < value < 1)
    if not ok:
        bounds = "[0, 1)" if allow_zero else "(0, 1)"
        raise DataError(f"data.split.{name} = {value} is outside {bounds}", hint=f"set data.split.{name} to e.g. 0.2")


def holdout_masks(urm: sp.csr_matrix, test_fraction: float, val_fraction: float, seed: int,
                  course_compatible: bool) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (test, val) masks over the row-major entries of ``urm``."""
    n = urm.nnz
    test = np.zeros(n, dtype=bool)
    val = np.zeros(n, dtype=bool)
    n_train_val = _n_keep(n, test_fraction)
    if course_compatible:
        # NumPy's legacy generator (the stream of np.random.seed(seed)); the permutation indexes itself.
        rs = np.random.RandomState(seed % 2**32)
        perm = np.arange(n)
        rs.shuffle(perm)
        test[perm[perm[n_train_val:]]] = True
        tv_index = np.flatnonzero(~test)
        if val_fraction > 0:
            n_tv = len(tv_index)
            perm2 = np.arange(n_tv)
            rs.shuffle(perm2)
            val[tv_index[perm2[perm2[_n_keep(n_tv, val_fraction):]]]] = True
        return test, val
    rng = np.random.default_rng(seed % 2**63)
    test[rng.permutation(n)[n_train_val:]] = True
    if val_fraction > 0:
        tv_index = np.flatnonzero(~test)
        val[tv_index[rng.permutation(len(tv_index))[_n_keep(len(tv_index), val_fraction):]]] = True
    return test, val


def _rank_within_rows(rows: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry: its rank from the end within its row when ordered by key, and the row's length."""
    order = np.lexsort((keys, rows))
    counts = np.bincount(rows, minlength=int(rows.max()) + 1 if len(rows) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(len(rows), dtype=np.int64)
    position[order] = np.arange(len(rows)) - starts[rows[order]]
    length = counts[rows]
    return length - 1 - position, length  # 0 = last (largest key)


def _aligned_timestamps(urm: sp.csr_matrix, timestamps: sp.csr_matrix) -> np.ndarray:
    """The timestamp of each row-major entry of ``urm``, looked up by (user, item) rather than matched
    entry for entry: sparse storage drops zeros, so a timestamp of 0 has no entry (it reads back as 0)
    and a rating of 0 leaves a timestamp with no interaction (it is ignored)."""
    if timestamps.shape != urm.shape:
        raise DataError(f"the timestamps ({timestamps.shape[0]}×{timestamps.shape[1]}) do not have the ratings' shape "
                        f"({urm.shape[0]}×{urm.shape[1]})", hint="rebuild the data set cache with recsys download --force")
    urm, ts = (_canonical(m) for m in (urm, timestamps))
    if np.array_equal(urm.indptr, ts.indptr) and np.array_equal(urm.indices, ts.indices):
        return ts.data.astype(np.float64)  # the usual case, ten times faster than the lookup
    rows, cols, _ = _entries(urm)
    return np.asarray(ts[rows, cols], dtype=np.float64).ravel()


def leave_k_out_masks(urm: sp.csr_matrix, timestamps: sp.csr_matrix | None, k: int, order: str,
                      with_val: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols, _ = _entries(urm)
    rng = np.random.default_rng(seed % 2**63)
    tiebreak = rng.random(len(rows))
    if order == "latest":
        if timestamps is None:
            raise DataError("leave-k-out with order 'latest' needs timestamps, and this data set has none",
                            hint="use data.split.order=random")
        keys = _aligned_timestamps(urm, timestamps) + tiebreak * 0.5  # ties in time broken at random, seeded
    else:
        keys = tiebreak
    from_end, length = _rank_within_rows(rows, keys)
    test = (from_end < k) & (length > k)
    val = (from_end >= k) & (from_end < 2 * k) & (length > 2 * k) if with_val else np.zeros(len(rows), bool)
    return test, val


def temporal_masks(urm: sp.csr_matrix, timestamps: sp.csr_matrix | None, test_fraction: float,
                   val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    if timestamps is None:
        raise DataError("a temporal split needs timestamps, and this data set has none", hint="use the holdout protocol")
    ts = _aligned_timestamps(urm, timestamps)
    n = len(ts)
    order = np.argsort(ts, kind="stable")  # ties keep file order: the cut is exact and deterministic
    test = np.zeros(n, dtype=bool)
    n_tv = _n_keep(n, test_fraction)
    test[order[n_tv:]] = True
    val = np.zeros(n, dtype=bool)
    if val_fraction > 0:
        tv_order = order[:n_tv]
        val[tv_order[_n_keep(n_tv, val_fraction):]] = True
    return test, val


# -- warnings, naming, fingerprints -------------------------------------------------------------------

def _empty_users_warning(matrix: sp.csr_matrix, what: str) -> str | None:
    n_users = matrix.shape[0]
    empty = int(np.sum(np.diff(matrix.indptr) == 0))
    if empty == 0:
        return None
    return f"{empty} ({empty / n_users * 100:.2f} %) of {n_users} users have no {what} items"


def split_warnings(train: sp.csr_matrix, val: sp.csr_matrix | None, test: sp.csr_matrix) -> list[str]:
    checks = [(train, "train"), (test, "test")] + ([(val, "validation")] if val is not None else [])
    return [w for m, what in checks if (w := _empty_users_warning(m, what))]


def fingerprint(train: sp.csr_matrix, val: sp.csr_matrix | None, test: sp.csr_matrix) -> str:
    return content_hash(train, val, test)


def split_params(split_cfg, *, import_digest: str | None = None) -> dict[str, Any]:
    p = split_cfg.protocol
    if p == "holdout":
        return {"protocol": p, "test_fraction": split_cfg.test_fraction, "val_fraction": split_cfg.val_fraction,
                "course_compatible": split_cfg.course_compatible}
    if p == "leave-k-out":
        return {"protocol": p, "k": split_cfg.k, "order": split_cfg.order, "val": split_cfg.val_fraction > 0}
    if p == "temporal":
        return {"protocol": p, "test_fraction": split_cfg.test_fraction, "val_fraction": split_cfg.val_fraction}
    return {"protocol": p, "import_dir": str(Path(split_cfg.import_dir).resolve()), "content": import_digest}


def _fraction(x: float) -> str:
    """0.2 → "0.2", 0 → "0"; exact, so that two fractions never share a folder (0.2000004 is not 0.2)."""
    short = f"{x:g}"
    return short if float(short) == x else repr(float(x))


def directory_name(dataset_key: str, params: dict[str, Any], seed: int) -> str:
    p = params["protocol"]
    if p in ("holdout", "temporal"):
        tag = f"test{_fraction(params['test_fraction'])}-val{_fraction(params['val_fraction'])}"
        if params.get("course_compatible"):
            tag += "-course"
    elif p == "leave-k-out":
        tag = f"k{params['k']}-{params['order']}-{'val' if params['val'] else 'noval'}"
    else:
        tag = str(params["content"])[:12]
    if p in ("temporal", "import"):  # the seed plays no part: one folder serves every seed
        return f"{dataset_key}-{p}-{tag}"
    return f"{dataset_key}-{p}-{tag}-seed{seed}"


def dataset_key(dataset: Dataset) -> str:
    cache_dir = dataset.manifest.get("cache_dir")
    return Path(cache_dir).name if cache_dir else dataset.name


# -- saving and loading -------------------------------------------------------------------------------

def save_split(directory: Path, split: Split, manifest: dict[str, Any]) -> None:
    with staged_directory(directory) as tmp:
        for part in PARTS:
            matrix = getattr(split, part)
            if matrix is not None:
                sp.save_npz(tmp / f"{part}.npz", matrix, compressed=False)
        atomic.write_json(tmp / "manifest.json", manifest)


def load_split_dir(directory: Path) -> Split:
    """Load a saved split and check it against its own fingerprint (DataError if it changed)."""
    directory = Path(directory)
    delete_hint = f"delete {directory} to make the split again (runs trained on it can then no longer be evaluated)"
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        parts = {}
        for part in PARTS:
            if part == "val" and not manifest.get("has_val"):
                parts[part] = None
                continue
            parts[part] = sp.load_npz(directory / f"{part}.npz").tocsr().astype(np.float64)
    except FileNotFoundError as exc:
        raise DataError(f"the split at {directory} is incomplete: {Path(exc.filename).name} is missing",
                        hint=delete_hint) from None
    except (OSError, *NOT_SPARSE_NPZ) as exc:
        raise DataError(f"the split at {directory} cannot be read ({type(exc).__name__}: {exc})", hint=delete_hint) from None
    actual = fingerprint(parts["train"], parts["val"], parts["test"])
    if actual != manifest.get("fingerprint"):
        raise DataError(f"the split at {directory} no longer matches its fingerprint (its files changed after it was made)",
                        hint=delete_hint)
    return Split(train=parts["train"], test=parts["test"], val=parts["val"], fingerprint=actual,
                 directory=directory, manifest=manifest)


def _import_parts(split_cfg, shape: tuple[int, int]) -> tuple[dict[str, sp.csr_matrix | None], str]:
    folder = Path(split_cfg.import_dir)
    if not folder.is_dir():
        raise DataError(f"--import folder {folder} does not exist", hint="pass a folder holding train.npz and test.npz")
    parts: dict[str, sp.csr_matrix | None] = {}
    for part in PARTS:
        path = folder / f"{part}.npz"
        if not path.exists():
            if part == "val":
                parts[part] = None
                continue
            raise DataError(f"--import folder {folder} has no {part}.npz",
                            hint="save each part with scipy.sparse.save_npz as train.npz, test.npz (and val.npz)")
        try:
            m = sp.load_npz(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file and its permissions") from None
        except NOT_SPARSE_NPZ:
            # numpy's own message (about pickled data and allow_pickle) would send the user the wrong way
            raise DataError(f"{path} is not a scipy sparse .npz file",
                            hint=f"it must be a file written by scipy.sparse.save_npz (save_npz('{part}.npz', matrix))"
                            ) from None
        if m.shape != shape:
            raise DataError(f"{path} has shape {m.shape[0]}×{m.shape[1]}, but the data set is {shape[0]}×{shape[1]}",
                            hint="import parts of the full users × items shape of the configured data set")
        m = checked_import(m, path)
        m.eliminate_zeros()
        parts[part] = m
    for part in ("train", "test"):
        if parts[part].nnz == 0:
            raise DataError(f"--import part {folder / f'{part}.npz'} holds no interactions",
                            hint=f"a split needs a non-empty {part} part")
    names = [p for p in PARTS if parts[p] is not None]
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            shared = (parts[a] != 0).multiply(parts[b] != 0).nnz
            if shared:
                raise DataError(f"--import parts overlap: {a}.npz and {b}.npz share {shared} (user, item) entries",
                                hint="each interaction must be in exactly one part")
    return parts, fingerprint(parts["train"], parts["val"], parts["test"])


def checked_import(m: sp.spmatrix, path: Path) -> sp.csr_matrix:
    """A canonical float64 CSR copy of an imported matrix, after checking everything SciPy trusts blindly:
    index ranges and row pointers (out-of-range indices crash SciPy's C code), duplicate entries (SciPy
    would sum them) and non-finite values."""
    hint = "write each part with scipy.sparse.save_npz from a matrix built by SciPy's own constructors"
    n_rows, n_cols = m.shape
    if m.format in ("csr", "csc"):
        n_major, n_minor = (n_rows, n_cols) if m.format == "csr" else (n_cols, n_rows)
        indptr, minor = np.asarray(m.indptr, dtype=np.int64), np.asarray(m.indices, dtype=np.int64)
        if (len(indptr) != n_major + 1 or indptr[0] != 0 or indptr[-1] != len(minor) or len(m.data) != len(minor)
                or np.any(np.diff(indptr) < 0)):
            raise DataError(f"{path}: its row pointers (indptr) are not a valid CSR structure", hint=hint)
        major = np.repeat(np.arange(n_major, dtype=np.int64), np.diff(indptr))
        rows, cols = (major, minor) if m.format == "csr" else (minor, major)
    elif m.format == "coo":
        rows, cols = np.asarray(m.row, dtype=np.int64), np.asarray(m.col, dtype=np.int64)
        if not len(rows) == len(cols) == len(m.data):
            raise DataError(f"{path}: its row, column and value arrays differ in length", hint=hint)
    else:
        raise DataError(f"{path} is a {m.format.upper()} matrix", hint="save it as CSR, CSC or COO (matrix.tocsr())")
    for what, index, size in (("row", rows, n_rows), ("column", cols, n_cols)):
        outside = (index < 0) | (index >= size)
        if outside.any():
            raise DataError(f"{path}: {what} index {int(index[outside][0])} is outside 0..{size - 1} "
                            f"({int(outside.sum())} entries)", hint=hint)
    data = np.asarray(m.data, dtype=np.float64)
    bad = ~np.isfinite(data)
    if bad.any():
        raise DataError(f"{path} holds {int(bad.sum())} non-finite value(s) (NaN or ±inf)",
                        hint="replace them with ratings, or drop those entries")
    keys = rows * n_cols + cols
    n_duplicates = len(keys) - len(np.unique(keys))
    if n_duplicates:
        raise DataError(f"{path} holds {n_duplicates} duplicate (user, item) entr{'y' if n_duplicates == 1 else 'ies'}",
                        hint="keep one entry per interaction (SciPy would silently add them up)")
    out = sp.csr_matrix((data, (rows, cols)), shape=m.shape)
    out.sort_indices()
    return out


def make_split(dataset: Dataset, split_cfg, seed: int) -> tuple[Split, dict[str, Any]]:
    """Compute a split (not saved); returns it and its parameters."""
    urm = dataset.urm.tocsr()
    shape = urm.shape
    if not np.isfinite(urm.data).all():
        raise DataError(f"the data set {dataset.name} holds {int((~np.isfinite(urm.data)).sum())} non-finite ratings",
                        hint="fix the ratings file, or rebuild the cache with recsys download --force")
    protocol = split_cfg.protocol
    if protocol == "import":
        parts, digest = _import_parts(split_cfg, shape)
        params = split_params(split_cfg, import_digest=digest)
        train, val, test = parts["train"], parts["val"], parts["test"]
    else:
        _check_fraction("test_fraction", split_cfg.test_fraction, allow_zero=False)
        _check_fraction("val_fraction", split_cfg.val_fraction, allow_zero=True)
        params = split_params(split_cfg)
        if protocol == "holdout":
            test_m, val_m = holdout_masks(urm, split_cfg.test_fraction, split_cfg.val_fraction, seed,
                                          split_cfg.course_compatible)
        elif protocol == "leave-k-out":
            test_m, val_m = leave_k_out_masks(urm, dataset.urm_timestamp, split_cfg.k, split_cfg.order,
                                              split_cfg.val_fraction > 0, seed)
        elif protocol == "temporal":
            test_m, val_m = temporal_masks(urm, dataset.urm_timestamp, split_cfg.test_fraction, split_cfg.val_fraction)
        else:  # pragma: no cover - the schema allows nothing else
            raise DataError(f"unknown split protocol {protocol!r}", hint="use holdout, leave-k-out, temporal or import")
        rows, cols, vals = _entries(urm)
        train = _subset(rows, cols, vals, ~test_m & ~val_m, shape)
        test = _subset(rows, cols, vals, test_m, shape)
        with_val = split_cfg.val_fraction > 0
        val = _subset(rows, cols, vals, val_m, shape) if with_val else None
        if test.nnz == 0 or train.nnz == 0:
            raise DataError(f"the {protocol} split of {urm.nnz} interactions leaves an empty "
                            f"{'test' if test.nnz == 0 else 'train'} part",
                            hint="use a larger data set or other split fractions")
    split = Split(train=train, test=test, val=val, fingerprint=fingerprint(train, val, test))
    return split, params


def get_split(dataset: Dataset, data_config, *, seed: int, data_dir: Path) -> Split:
    split_cfg = data_config.split
    key = dataset_key(dataset)
    content = dataset.manifest.get("content_sha256") or content_hash(dataset.urm)
    if split_cfg.protocol == "import":
        fresh, params = make_split(dataset, split_cfg, seed)
    else:
        fresh, params = None, split_params(split_cfg)
    directory = Path(data_dir) / "splits" / directory_name(key, params, seed)
    if (directory / "manifest.json").exists():
        try:
            saved_manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved_manifest = {}
        if saved_manifest.get("dataset_content_sha256") == content and saved_manifest.get("params") == params:
            split = load_split_dir(directory)
            console.info(f"reusing split {directory} (fingerprint {split.fingerprint[:12]})")
            for warning in split.manifest.get("warnings", []):
                console.warn(warning)
            return split
        if saved_manifest:
            console.info(f"the split at {directory} was made from other data or parameters; making it again")
    if fresh is None:
        fresh, params = make_split(dataset, split_cfg, seed)
    warnings = split_warnings(fresh.train, fresh.val, fresh.test)
    for warning in warnings:
        console.warn(warning)
    manifest = {
        "format": SPLIT_FORMAT,
        "dataset": dataset.name,
        "dataset_key": key,
        "dataset_content_sha256": content,
        "shape": list(dataset.urm.shape),
        "params": params,
        "seed": seed,
        "sizes": {"train": int(fresh.train.nnz), "val": int(fresh.val.nnz) if fresh.val is not None else 0,
                  "test": int(fresh.test.nnz)},
        "has_val": fresh.val is not None,
        "warnings": warnings,
        "fingerprint": fresh.fingerprint,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    save_split(directory, fresh, manifest)
    fresh.directory = directory
    fresh.manifest = manifest
    console.info(f"split saved to {directory} (fingerprint {fresh.fingerprint[:12]})")
    return fresh
