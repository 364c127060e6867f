"""Data sets, caches and splits.

Public API (used by the pipelines and the CLI):

- :func:`load_dataset` (config.data → :class:`Dataset`, downloading and caching as needed)
- :func:`get_split` (dataset + config.data + seed → :class:`Split`, reusing an identical saved split)
- :func:`load_split_for_run` (a run directory → the split it was trained on, fingerprint checked)
- :func:`cached_statistics` / :func:`print_cached_statistics` (``recsys info --dataset NAME``)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys_cli import console
from recsys_cli.data.registry import DATASETS, KNOWN_NAMES, SYNTHETIC, check_name, get_spec
from recsys_cli.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from recsys_cli.data.dataset import Dataset, Split

__all__ = ["Dataset", "Split", "KNOWN_NAMES", "load_dataset", "get_split", "load_split_for_run",
           "print_cached_statistics", "cached_statistics", "resolve_data_dir", "prepare_dataset", "split_seed", "original_ids"]


def split_seed(config) -> int:
    """The seed of the split (and of a synthetic data set): data.split.seed, else experiment.seed."""
    seed = config.data.split.seed
    return config.experiment.seed if seed is None else seed


def __getattr__(name: str) -> Any:
    # Dataset and Split import NumPy and SciPy: loaded on first use, so that the CLI's help and the
    # data set names (recsys_cli.data.registry) stay light
    if name in ("Dataset", "Split"):
        from recsys_cli.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_data_dir(data_config) -> Path:
    """data.data_dir; when the config left it at its default, RECSYS_DATA_DIR wins over ./data."""
    explicit = "data_dir" in getattr(data_config, "model_fields_set", set())
    if not explicit and os.environ.get("RECSYS_DATA_DIR"):
        return Path(os.environ["RECSYS_DATA_DIR"]).expanduser()
    return Path(data_config.data_dir).expanduser()


def _load_cached(directory: Path, *, source_wanted: str | None, local_zip: Path | None = None,
                 expected_md5: str | None = None) -> tuple[Dataset | None, str | None]:
    """The cache in ``directory`` if it holds what is asked for, else (None, why not).

    Asked for: the same source (when one is given); the same bytes when that source is a local zip
    (it may have been replaced since); a zip of ``expected_md5`` when verification is on (a cache built
    with --no-verify from another zip is not the verified data set)."""
    from recsys_cli.data.cache import CacheInvalid, load_cache
    from recsys_cli.data.download import file_md5

    if not directory.exists():
        return None, None
    try:
        dataset = load_cache(directory)
    except CacheInvalid as exc:
        return None, str(exc)
    source = dataset.manifest.get("source", {})
    if source_wanted is not None and source.get("location") != source_wanted:
        return None, f"it was built from {source.get('location')}, not {source_wanted}"
    built_from = source.get("md5")
    if built_from and local_zip is not None and local_zip.is_file():
        now = file_md5(local_zip)
        if now != built_from:
            return None, f"{local_zip} changed since it was built (MD5 {now}, then {built_from})"
    if built_from and expected_md5 is not None and built_from != expected_md5:
        return None, (f"it was built from a zip with MD5 {built_from}"
                      f"{'' if source.get('verified') else ' (not verified)'}, not the expected {expected_md5}")
    return dataset, None


def prepare_dataset(name: str, data_dir: Path, *, source: str | None = None, md5: str | None = None,
                    verify: bool = True, force: bool = False, synthetic_config=None, seed: int | None = None,
                    statistics: bool = True) -> Dataset:
    """Load a data set from its processed cache, or obtain its zip, parse it and cache it."""
    from recsys_cli.data import cache, download, readers, stats, synthetic

    check_name(name)
    if md5 is not None:  # a bad --md5 is an error even when a checked cache makes it unused
        download.check_md5(md5)
    data_dir = Path(data_dir)
    if name == SYNTHETIC:
        if synthetic_config is None:
            from recsys_cli.config.schema import SyntheticConfig

            synthetic_config = SyntheticConfig()
        directory = data_dir / synthetic.cache_name(synthetic_config, seed)
        dataset, problem = (None, None) if force else _load_cached(directory, source_wanted=None)
        if dataset is None:
            if problem:
                console.warn(f"processed cache {directory} failed its check ({problem}); building it again")
            with console.spinner("generating the synthetic data set"):
                dataset = synthetic.generate(synthetic_config, seed)
            cache.write_cache(directory, dataset, source={
                "kind": "synthetic", "location": "synthetic", "params": synthetic.params_of(synthetic_config, seed)})
            console.debug(f"Saving complete! ({directory})")
    else:
        spec = get_spec(name)
        directory = data_dir / name
        wanted = local_zip = None
        if source is not None:
            local_zip = None if download.is_url(source) else Path(source).expanduser().resolve()
            wanted = source if local_zip is None else str(local_zip)
        expected = (download.check_md5(md5) if md5 is not None else spec.md5) if verify else None
        with console.spinner(f"checking the processed cache {directory}"):
            dataset, problem = (None, None) if force else _load_cached(
                directory, source_wanted=wanted, local_zip=local_zip, expected_md5=expected)
        if dataset is None:
            if problem:
                console.warn(f"processed cache {directory} cannot be used ({problem}); rebuilding it from the zip")
            fetched = download.obtain(spec, data_dir, source=source, md5=md5, verify=verify, force=force)
            with console.spinner(f"parsing {fetched.path.name}"):
                dataset = readers.read_zip(fetched.path, spec, local_source=not download.is_url(fetched.source))
            source_info: dict[str, Any] = {
                "kind": "zip", "location": fetched.source, "zip": str(fetched.path), "md5": fetched.md5,
                "expected_md5": fetched.expected_md5, "verified": fetched.verified, "verification": fetched.note,
            }
            if not fetched.verified:
                dataset.manifest.setdefault("warnings", []).append(f"source zip {fetched.note}")
            cache.write_cache(directory, dataset, source=source_info)
            console.debug(f"Saving complete! ({directory})")
        else:
            console.info(f"{spec.course_name}: loaded the processed cache {directory} (checked)")
    # the statistics are what `recsys download` is for; inside a run they are a detail (-v)
    stats.print_statistics(dataset, detail=not statistics)
    return dataset


def load_dataset(data_config, *, seed: int | None = None) -> Dataset:
    """The data set ``data_config`` names, from the cache or freshly obtained (statistics at -v)."""
    from recsys_cli.data.download import options_from_config

    with options_from_config():
        return prepare_dataset(
            data_config.dataset, resolve_data_dir(data_config), source=data_config.source, md5=data_config.md5,
            verify=data_config.verify, synthetic_config=data_config.synthetic, seed=seed, statistics=False,
        )


def get_split(dataset: Dataset, data_config, *, seed: int) -> Split:
    """The configured split of ``dataset``: reused from data/splits/ when identical, else made and saved."""
    from recsys_cli.data import splits

    return splits.get_split(dataset, data_config, seed=seed, data_dir=resolve_data_dir(data_config))


def load_split_for_run(run, config) -> Split:
    """The split a run was trained on, checked against the fingerprint its env.json recorded."""
    import json

    from recsys_cli.data import splits

    env_path = Path(run.path) / "env.json"
    try:
        env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.exists() else {}
    except (OSError, ValueError):
        env = {}
    record = env.get("split") if isinstance(env, dict) else None
    if not isinstance(record, dict) or not record.get("fingerprint"):
        raise DataError(f"{run.path} does not record which split it was trained on (env.json has no split fingerprint)",
                        hint="train the model again with recsys train")
    expected = record["fingerprint"]
    directory = Path(record.get("directory") or "")
    if record.get("directory") and directory.is_dir():
        split = splits.load_split_dir(directory)
        if split.fingerprint != expected:
            raise DataError(f"the split at {directory} is not the one {run.path.name} was trained on "
                            f"(fingerprint {split.fingerprint[:12]}, the run recorded {expected[:12]})",
                            hint="restore that split, or train again")
        return split
    console.warn(f"the run's split folder {directory} is gone; making it again from the run's config")
    dataset = load_dataset(config.data, seed=split_seed(config))
    split = get_split(dataset, config.data, seed=split_seed(config))
    if split.fingerprint != expected:
        raise DataError(f"the split made again from the config differs from the one {run.path.name} was trained on "
                        f"(fingerprint {split.fingerprint[:12]}, the run recorded {expected[:12]})",
                        hint="the data set changed since training; train again")
    return split


def original_ids(config, split: Split, dataset: Dataset | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The original (user ids, item ids) of the rows and columns of ``split``'s matrices: the data
    set's own when at hand, else the cache's id file (:func:`recsys_cli.data.ids.cached_ids`), else
    from the data set loaded again and checked against the ratings the split was made from."""
    import numpy as np

    from recsys_cli.data.ids import cached_ids

    if dataset is not None and dataset.user_ids is not None and dataset.urm.shape == split.train.shape:
        return np.asarray(dataset.user_ids), np.asarray(dataset.item_ids)
    found = cached_ids(config.data, split)
    if found is not None:
        return found
    dataset = load_dataset(config.data, seed=split_seed(config))
    content = split.manifest.get("dataset_content_sha256")
    if content and dataset.manifest.get("content_sha256") != content:
        raise DataError(f"the cached {dataset.name} holds other ratings than the split at {split.directory} was made from",
                        hint="restore that data set, or train again")
    return np.asarray(dataset.user_ids), np.asarray(dataset.item_ids)


def print_cached_statistics(name: str, data_dir: Path) -> None:
    """Print the statistics block of a cached data set on stdout (``recsys info --dataset NAME``)."""
    import sys

    for text in cached_statistics(name, data_dir):
        sys.stdout.write(text + "\n")


def cached_statistics(name: str, data_dir: Path) -> list[str]:
    """The statistics block of each cache of data set ``name`` (every synthetic one for ``synthetic``);
    a one-line DataError when there is none or it fails its check."""
    from recsys_cli.data import stats
    from recsys_cli.data.cache import CacheInvalid, load_cache

    data_dir = Path(data_dir)
    if name == SYNTHETIC:
        directories = sorted(p for p in data_dir.glob("synthetic-*") if (p / "manifest.json").exists())
    elif name.startswith("synthetic-"):
        directories = [data_dir / name]
    else:
        check_name(name)
        directories = [data_dir / name]
    directories = [d for d in directories if (d / "manifest.json").exists()]
    if not directories:
        raise DataError(f"{name} is not cached in {data_dir}",
                        hint=f"run recsys download {name if name in DATASETS else 'NAME'} first (or pass --data-dir)")
    texts = []
    for directory in directories:
        try:
            dataset = load_cache(directory)
        except CacheInvalid as exc:
            raise DataError(f"the cache at {directory} fails its check ({exc})",
                            hint=f"run recsys download {name} --force to rebuild it") from None
        texts.append(stats.statistics_text(dataset))
    return texts
