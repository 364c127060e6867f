"""The processed cache: ``<data_dir>/<name>/`` with the matrices as .npz and a checked manifest.

Written into a temporary sibling folder and swapped in only when complete, so a crash, a full disk or
Ctrl-C never leaves half a cache. Every load checks each file's sha256 against the manifest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_cli import atomic
from recsys_cli.data.dataset import Dataset
from recsys_cli.data.readers import PARSER_VERSION
from recsys_cli.errors import DataError

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


class CacheInvalid(Exception):
    """The cache exists but fails its check; the message says why."""


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(*matrices: sp.csr_matrix | None) -> str:
    """sha256 over the contents (shape, pattern, values) of CSR matrices, independent of file bytes."""
    h = hashlib.sha256(b"recsys-csr-v1")
    for m in matrices:
        if m is None:
            h.update(b"none")
            continue
        m = m.tocsr()
        if not m.has_canonical_format:
            m = m.copy()
            m.sum_duplicates()
        h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indices, dtype=np.int32).tobytes())
        h.update(np.ascontiguousarray(m.data, dtype=np.float64).tobytes())
    return h.hexdigest()


def write_failure(path: Path, exc: OSError) -> DataError:
    reason = exc.strerror or str(exc)
    hint = "free some disk space or choose another --data-dir" if exc.errno == errno.ENOSPC else \
        "check that the data folder is writable, or choose another --data-dir (or RECSYS_DATA_DIR)"
    return DataError(f"could not write {path}: {reason}", hint=hint)


STALE_UNOWNED_SECONDS = 86_400  # temporary folders without a pid in their name (older versions)


def remove_stale_temporaries(target: Path) -> None:
    """Delete ``.NAME.tmp-PID-*`` and ``.NAME.old-PID-*`` folders beside ``target`` left by a killed process."""
    from recsys_cli.processes import pid_alive

    for kind in ("tmp", "old"):
        for folder in Path(target).parent.glob(f".{glob.escape(Path(target).name)}.{kind}-*"):
            owner = folder.name.rsplit(f".{kind}-", 1)[1].split("-", 1)[0]
            try:
                stale = not pid_alive(int(owner)) if owner.isdigit() else \
                    time.time() - folder.stat().st_mtime > STALE_UNOWNED_SECONDS
            except OSError:
                continue
            if stale:
                shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(target: Path):
    """Yield an empty temporary folder beside ``target``; swap it into place if the block succeeds.

    Temporary folders left beside ``target`` by a process that was killed are removed first."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        # mkdtemp creates the folder 0700; the swapped-in cache or split should be as readable as mkdir's
        os.chmod(tmp, 0o777 & ~atomic.UMASK)
    except OSError as exc:
        raise write_failure(target, exc) from None
    try:
        yield tmp
        _swap_in(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failure(target, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


SWAP_ATTEMPTS = 5


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``, moving a folder already there aside first.

    Another process writing the same cache or split (two ``tune`` machines sharing a data folder, say)
    may put its folder in place between the move and the rename, which then fails with "Directory not
    empty": the swap is tried again, so the last writer's complete folder wins and neither fails."""
    old = target.parent / f".{target.name}.old-{os.getpid()}-{tmp.name[-8:]}"
    for attempt in range(SWAP_ATTEMPTS):
        try:
            with contextlib.suppress(FileNotFoundError):  # nothing there, or another writer moved it
                os.replace(target, old)
            os.replace(tmp, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == SWAP_ATTEMPTS - 1:
                raise
        finally:
            shutil.rmtree(old, ignore_errors=True)


def _save_npz_matrix(path: Path, matrix: sp.csr_matrix) -> None:
    sp.save_npz(path, matrix.tocsr(), compressed=False)


def write_cache(directory: Path, dataset: Dataset, *, source: dict[str, Any]) -> dict[str, Any]:
    """Write ``dataset`` as the processed cache at ``directory``; return the manifest."""
    with staged_directory(directory) as tmp:
        files: dict[str, str] = {}

        def save(name: str, writer) -> None:
            path = tmp / name
            writer(path)
            files[name] = sha256_bytes(path.read_bytes())

        save("URM_all.npz", lambda p: _save_npz_matrix(p, dataset.urm))
        if dataset.urm_timestamp is not None:
            save("URM_timestamp.npz", lambda p: _save_npz_matrix(p, dataset.urm_timestamp))
        for name, icm in dataset.icms.items():
            save(f"{name}.npz", lambda p, icm=icm: _save_npz_matrix(p, icm))
        ids = {"user_ids": dataset.user_ids, "item_ids": dataset.item_ids}
        ids.update({f"features__{k}": v for k, v in dataset.feature_ids.items()})
        save("ids.npz", lambda p: np.savez(p, **{k: np.asarray(v, dtype=str) for k, v in ids.items()}))
        manifest = {
            "format": CACHE_FORMAT,
            "parser_version": PARSER_VERSION,
            "dataset": dataset.name,
            "course_name": dataset.manifest.get("course_name", dataset.name),
            "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": source,
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_interactions": int(dataset.urm.nnz),
            "content_sha256": content_hash(dataset.urm),
            "icms": list(dataset.icms),
            "warnings": list(dataset.manifest.get("warnings", [])),
            "files": files,
        }
        atomic.write_json(tmp / MANIFEST, manifest)
    dataset.manifest = {**manifest, "cache_dir": str(directory)}
    return manifest


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise CacheInvalid(f"{path} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CacheInvalid(f"{path} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CacheInvalid(f"{path} is not a cache manifest")
    if manifest.get("format") != CACHE_FORMAT or manifest.get("parser_version") != PARSER_VERSION:
        raise CacheInvalid(f"it was made by another version of the parser ({manifest.get('parser_version')}, "
                           f"now {PARSER_VERSION})")
    return manifest


def load_cache(directory: Path) -> Dataset:
    """Load and check a processed cache; raise CacheInvalid (with the reason) if it fails its check."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    blobs: dict[str, bytes] = {}
    for name, digest in manifest["files"].items():
        path = directory / name
        try:
            blob = path.read_bytes()
        except OSError:
            raise CacheInvalid(f"{name} is missing") from None
        if sha256_bytes(blob) != digest:
            raise CacheInvalid(f"{name} does not match its checksum")
        blobs[name] = blob
    for required in ("URM_all.npz", "ids.npz"):
        if required not in blobs:
            raise CacheInvalid(f"the manifest lists no {required}")
    try:
        def matrix(name: str) -> sp.csr_matrix:
            m = sp.load_npz(io.BytesIO(blobs[name])).tocsr()
            return m

        urm = matrix("URM_all.npz")
        urm_ts = matrix("URM_timestamp.npz") if "URM_timestamp.npz" in blobs else None
        icms = {name: matrix(f"{name}.npz") for name in manifest.get("icms", [])}
        with np.load(io.BytesIO(blobs["ids.npz"]), allow_pickle=False) as ids:
            user_ids, item_ids = ids["user_ids"], ids["item_ids"]
            features = {k.split("__", 1)[1]: ids[k] for k in ids.files if k.startswith("features__")}
    except (ValueError, KeyError, OSError) as exc:
        raise CacheInvalid(f"a cached file cannot be read ({exc})") from None
    if urm.shape != (manifest.get("n_users"), manifest.get("n_items")):
        raise CacheInvalid("URM_all's shape differs from the manifest's")
    return Dataset(name=manifest["dataset"], urm=urm, urm_timestamp=urm_ts, icms=icms, user_ids=user_ids,
                   item_ids=item_ids, feature_ids=features, manifest={**manifest, "cache_dir": str(directory)})

