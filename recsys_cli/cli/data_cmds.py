"""`recsys download` and `recsys split`."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli import console
from recsys_cli.cli.common import ConfigArgument, JsonOption, SetOption, handle_errors, load, print_json
from recsys_cli.data.registry import KNOWN_NAMES

_NAMES = ", ".join(KNOWN_NAMES)


@handle_errors
def download(
    name: str = typer.Argument("movielens-10m", help=f"Data set: {_NAMES}.", metavar="NAME"),
    source: str | None = typer.Option(
        None, "--source", metavar="PATH_OR_URL",
        help="Use this local zip or mirror URL instead of GroupLens (offline machines, CI caches).",
    ),
    md5: str | None = typer.Option(
        None, "--md5", metavar="HEX", help="Expected MD5 of the zip, replacing GroupLens's pinned checksum.",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip the checksum check (recorded as a warning in the data set's manifest).",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", metavar="DIR", help="Where downloads, caches and splits live (default: RECSYS_DATA_DIR or ./data).",
    ),
    force: bool = typer.Option(False, "--force", help="Download and parse again even if a checked cache exists."),
    as_json: bool = JsonOption,
) -> None:
    """Download a data set, verify its checksum, parse it into the processed cache and print its statistics.

    The zip goes to DATA_DIR/downloads/ (an interrupted download resumes from DATA_DIR/downloads/*.part);
    the parsed matrices go to DATA_DIR/NAME/ with a manifest.json of sha256 checksums. The mirror base
    URL can be changed with RECSYS_MOVIELENS_BASE_URL; retries with RECSYS_DOWNLOAD_RETRIES and
    RECSYS_DOWNLOAD_BACKOFF (seconds).

    Example: recsys download movielens-100k --source ~/Downloads/ml-100k.zip
    """
    import os

    from recsys_cli.data import prepare_dataset

    directory = data_dir or Path(os.environ.get("RECSYS_DATA_DIR") or "data")
    dataset = prepare_dataset(name, directory, source=source, md5=md5, verify=not no_verify, force=force)
    manifest = dataset.manifest
    console.success(f"{name}: {dataset.n_users} users, {dataset.n_items} items, {dataset.urm.nnz} interactions "
                    f"cached in {manifest.get('cache_dir')}")
    if as_json:
        print_json({
            "dataset": name, "cache_dir": manifest.get("cache_dir"), "n_users": dataset.n_users,
            "n_items": dataset.n_items, "n_interactions": int(dataset.urm.nnz),
            "icms": {k: {"n_features": int(v.shape[1]), "nnz": int(v.nnz)} for k, v in dataset.icms.items()},
            "source": manifest.get("source"), "warnings": manifest.get("warnings", []),
        })


@handle_errors
def split(
    config: Path = ConfigArgument,
    overrides: list[str] = SetOption,
    import_dir: Path | None = typer.Option(
        None, "--import", metavar="DIR",
        help="Adopt the split in DIR (train.npz, test.npz, optional val.npz; scipy sparse, the data set's shape).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Make (or reuse) the split the config asks for, and print its sizes, warnings, fingerprint and folder.

    Protocols (data.split.protocol): holdout (global random sample of interactions: test, then validation
    from the rest; with data.split.course_compatible=true exactly the reference implementation's split,
    legacy NumPy RNG and permutation applied twice), leave-k-out (k per user, random or latest),
    temporal (global time cut), import. Splits are saved under
    DATA_DIR/splits/<dataset>-<protocol>-<params>[-seed<seed>]/ (no seed for temporal and import,
    which do not use it) and reused when identical.

    Example: recsys split configs/ease.yaml --set data.split.protocol=leave-k-out
    """
    from recsys_cli.data import get_split, load_dataset, split_seed

    extra = list(overrides)
    if import_dir is not None:
        extra += ["data.split.protocol=import", f"data.split.import_dir={import_dir}"]
    cfg = load(config, extra)
    dataset = load_dataset(cfg.data, seed=split_seed(cfg))
    result = get_split(dataset, cfg.data, seed=split_seed(cfg))
    sizes = result.manifest.get("sizes", {})
    console.success(
        f"split {result.manifest.get('params', {}).get('protocol')}: train {sizes.get('train')}, "
        f"validation {sizes.get('val') if result.val is not None else 'none'}, test {sizes.get('test')} interactions"
    )
    console.info(f"fingerprint {result.fingerprint}")
    console.info(f"directory {result.directory}")
    if as_json:
        print_json({**result.manifest, "directory": str(result.directory)})
