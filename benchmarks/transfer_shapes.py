"""Write MovieLens-100K reshaped into other shapes, as splits `recsys run` imports (issue 13's transfer check).

    python benchmarks/transfer_shapes.py --source PATH/ml-100k.zip [--out data/transfer]

Each shape is a folder OUT/<shape>/ with train.npz, val.npz and test.npz of ML-100K's full shape
(943 × 1,682), split 0.2 test / 0.2 validation of the rest with the project's holdout masks (seed 42):

- ``third-users``: a seeded third of the users (314; the others keep no interaction): many items, few users;
- ``ratings-4plus``: only the ratings of 4 and 5 (55,375 of 100,000): sparser, positive feedback only.

Run any config on a shape with only the data set and the split changed:

    recsys run configs/ease.yaml --set data.dataset=movielens-100k --set data.source=SOURCE \\
        --set data.verify=false --set data.split.protocol=import --set data.split.import_dir=OUT/third-users

The `synthetic` shapes need no script: `--set data.dataset=synthetic --set data.synthetic.n_users=...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recsys_cli.config.schema import DataConfig  # noqa: E402
from recsys_cli.data import load_dataset  # noqa: E402
from recsys_cli.data.splits import _entries, _subset, holdout_masks  # noqa: E402

SEED = 42


def third_of_users(urm: sp.csr_matrix, seed: int = SEED) -> sp.csr_matrix:
    keep = np.zeros(urm.shape[0], dtype=bool)
    keep[np.random.default_rng(seed).choice(urm.shape[0], urm.shape[0] // 3, replace=False)] = True
    return sp.csr_matrix(sp.diags(keep.astype(np.float64)) @ urm)


def ratings_at_least(urm: sp.csr_matrix, threshold: float = 4.0) -> sp.csr_matrix:
    kept = urm.copy()
    kept.data[kept.data < threshold] = 0.0
    kept.eliminate_zeros()
    return kept


SHAPES = {"third-users": third_of_users, "ratings-4plus": ratings_at_least}


def write_split(urm: sp.csr_matrix, folder: Path, seed: int = SEED) -> dict[str, int]:
    urm = sp.csr_matrix(urm)
    urm.eliminate_zeros()
    test_m, val_m = holdout_masks(urm, 0.2, 0.2, seed, course_compatible=False)
    rows, cols, vals = _entries(urm)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for part, mask in (("train", ~test_m & ~val_m), ("val", val_m), ("test", test_m)):
        matrix = _subset(rows, cols, vals, mask, urm.shape)
        sp.save_npz(folder / f"{part}.npz", matrix)
        sizes[part] = int(matrix.nnz)
    sizes["users"] = int((np.diff(urm.indptr) > 0).sum())
    sizes["items"] = int((np.diff(urm.tocsc().indptr) > 0).sum())
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="the MovieLens-100K zip (ml-100k.zip)")
    parser.add_argument("--out", default=str(ROOT / "data" / "transfer"))
    args = parser.parse_args()
    dataset = load_dataset(DataConfig(dataset="movielens-100k", source=args.source, verify=False))
    for name, reshape in SHAPES.items():
        sizes = write_split(reshape(dataset.urm), Path(args.out) / name)
        print(f"{name}: {sizes['users']} users, {sizes['items']} items with interactions; "
              f"train {sizes['train']}, val {sizes['val']}, test {sizes['test']} → {Path(args.out) / name}")


if __name__ == "__main__":
    main()
