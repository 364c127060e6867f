"""The original user and item ids of a split's rows and columns, read from the data set's cache."""

from __future__ import annotations

import io

import numpy as np


def cached_ids(data_config, split) -> tuple[np.ndarray, np.ndarray] | None:
    """``(user_ids, item_ids)`` of the data set ``split`` was made from (strings, one per row / column),
    from ``ids.npz`` in its processed cache; None when the cache is gone, changed, rebuilt from other
    ratings than the split was made from, or of another shape.

    Reads only the id file (checked against the cache manifest's checksum), not the matrices.
    """
    from recsys_cli.data import resolve_data_dir
    from recsys_cli.data.cache import CacheInvalid, read_manifest, sha256_bytes

    split_manifest = getattr(split, "manifest", None) or {}
    key = split_manifest.get("dataset_key")
    if not key:
        return None
    directory = resolve_data_dir(data_config) / key
    try:
        manifest = read_manifest(directory)
        blob = (directory / "ids.npz").read_bytes()
    except (CacheInvalid, OSError):
        return None
    content = split_manifest.get("dataset_content_sha256")
    if content and manifest.get("content_sha256") != content:
        return None  # rebuilt from other ratings since the split: ids in another order (original_ids checks)
    if sha256_bytes(blob) != manifest["files"].get("ids.npz"):
        return None
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as ids:
            users, items = ids["user_ids"], ids["item_ids"]
    except (ValueError, KeyError, OSError):
        return None
    if users.ndim != 1 or items.ndim != 1 or (users.size, items.size) != tuple(split.train.shape):
        return None
    return users, items


def user_ids_or_none(data_config, split, dataset=None) -> np.ndarray | None:
    """The dataset's own ids when it is at hand (and fits the split), else the cached ones."""
    if dataset is not None and dataset.user_ids is not None and len(dataset.user_ids) == split.train.shape[0]:
        return np.asarray(dataset.user_ids)
    found = cached_ids(data_config, split)
    return None if found is None else found[0]
