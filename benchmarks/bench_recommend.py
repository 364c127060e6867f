"""`recsys recommend` speed at MovieLens-10M scale: EASE, k = 100, against a straightforward baseline.

    python benchmarks/bench_recommend.py            # 69,878 users × 10,681 items, 10M train interactions
    python benchmarks/bench_recommend.py --quick    # a tenth of the size, to check the script works

Figures (target from issue 15: at least 20,000 users/s for EASE on the CPU, "as fast as the
evaluator's scoring"), all measured in the same run on the same model and users:
- EASE's scores alone (score_block over every user, nothing ranked): users/s, the bound for the rest,
  and the same products through SciPy's sparse × dense product on the same tiles (the former path);
- top-K lists (recsys_cli.evaluation.recommend.top_k: the evaluator's block scoring, seen-item mask
  and top-K) for every user: users/s, and their share of the scoring rate;
- the evaluator itself at cutoff k (scoring, top-K and all 27 columns) on the users with test items:
  users/s, and recommend's rate as a share of it;
- the straightforward baseline on a sample of users: the same block scores, seen items set to −inf
  in NumPy, a full stable ``np.argsort`` of each row, the first k kept: users/s and the ratio; its
  lists are compared with ours (they must be identical: both break ties by the lower item index);
- turning the lists into the tidy table with original ids and writing it as Parquet and as CSV.

The model is EASE (``recsys_cli.models.ease``) loaded with a random dense B instead of a fitted one:
scoring costs the same (x_u · B over the user's training items, B dense float32), and a fit would add
a minute to every run. The interactions are bench_evaluator.py's: synthetic with ML-10M's shape.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_evaluator import FULL, QUICK, synthetic_split  # noqa: E402  (the evaluator benchmark's data, beside this script)

from recsys_cli.evaluation import evaluate  # noqa: E402
from recsys_cli.evaluation.evaluator import score_block  # noqa: E402
from recsys_cli.evaluation.recommend import to_table, top_k, write_table  # noqa: E402
from recsys_cli.models.ease import EASE, EASEConfig  # noqa: E402


def random_ease(train: sp.csr_matrix, seed: int = 0) -> EASE:
    gen = torch.Generator().manual_seed(seed)
    n = train.shape[1]
    B = torch.randn(n, n, generator=gen) / n**0.5
    B.fill_diagonal_(0.0)
    model = EASE(EASEConfig(), device=torch.device("cpu"), dtype=torch.float32)
    model.load_state({"B": B}, train)
    return model


def baseline(model: EASE, train: sp.csr_matrix, users: np.ndarray, k: int, block: int) -> np.ndarray:
    """Score a block, mask seen items in NumPy, sort every row fully (stable: ties to the lower index)."""
    out = np.empty((len(users), k), dtype=np.int64)
    for lo in range(0, len(users), block):
        chunk = users[lo:lo + block]
        scores = score_block(model.score, chunk, train.shape[1], model.device, None).numpy()
        sub = train[chunk]
        scores[np.repeat(np.arange(len(chunk)), np.diff(sub.indptr)), sub.indices] = -np.inf
        out[lo:lo + len(chunk)] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size, to check the script works")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--baseline-users", type=int, default=5000, help="sample size of the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL

    t0 = time.perf_counter()
    train, test = synthetic_split(size["users"], size["items"], size["train"], size["test"])
    model = random_ease(train)
    print(f"data: {train.shape[0]:,} users × {train.shape[1]:,} items, {train.nnz:,} train, {test.nnz:,} test; "
          f"EASE with a random dense B; built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    users = np.arange(train.shape[0])

    block = model.preferred_block_size() or 1000
    t0 = time.perf_counter()
    for lo in range(0, len(users), block):  # the scores alone: what ranking and writing add to
        score_block(model.score, users[lo:lo + block], train.shape[1], model.device, None)
    scoring = len(users) / (time.perf_counter() - t0)
    # the same products through SciPy's sparse × dense tile product, the CPU path before embedding bags
    t0 = time.perf_counter()
    for lo in range(0, len(users), block):
        model.W._matmul_scipy(model.X[users[lo:lo + block]])
    scipy_scoring = len(users) / (time.perf_counter() - t0)

    lists = top_k(model, train, users, args.k)
    ours = lists.users_per_second

    ev = evaluate(model, train, test, [args.k], progress=False)

    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(users, size=min(args.baseline_users, users.size), replace=False))
    t0 = time.perf_counter()
    slow_lists = baseline(model, train, sample, args.k, block)
    slow = len(sample) / (time.perf_counter() - t0)
    identical = bool(np.array_equal(slow_lists, lists.items[sample]))

    ids = np.arange(1, train.shape[0] + 1).astype(str), np.arange(1, train.shape[1] + 1).astype(str)
    t0 = time.perf_counter()
    table = to_table(lists, *ids)
    table_s = time.perf_counter() - t0
    writes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("r.parquet", "r.csv"):
            t0 = time.perf_counter()
            write_table(table, Path(tmp) / name)
            writes[name] = (time.perf_counter() - t0, (Path(tmp) / name).stat().st_size)
    total = lists.seconds + table_s + writes["r.parquet"][0]

    figures = {
        "users": train.shape[0], "items": train.shape[1], "train_nnz": train.nnz, "k": args.k,
        "torch_threads": torch.get_num_threads(), "scoring_users_per_second": round(scoring),
        "scipy_tile_scoring_users_per_second": round(scipy_scoring),
        "top_k_seconds": round(lists.seconds, 3),
        "top_k_users_per_second": round(ours), "evaluator_users": ev.n_users_evaluated,
        "evaluator_users_per_second": round(ev.users_per_second), "share_of_evaluator": round(ours / ev.users_per_second, 3),
        "baseline_users": len(sample), "baseline_users_per_second": round(slow), "ratio": round(ours / slow, 2),
        "baseline_lists_identical": identical, "table_seconds": round(table_s, 3),
        "parquet_seconds": round(writes["r.parquet"][0], 3), "parquet_bytes": writes["r.parquet"][1],
        "csv_seconds": round(writes["r.csv"][0], 3), "csv_bytes": writes["r.csv"][1],
        "with_parquet_users_per_second": round(train.shape[0] / total),
    }
    print(f"EASE scores alone (block {block}): {scoring:,.0f} users/s; through SciPy's tile product "
          f"{scipy_scoring:,.0f} users/s ({scoring / scipy_scoring:.2f}x)")
    print(f"top-{args.k} lists: {len(users):,} users in {lists.seconds:.2f} s = {ours:,.0f} users/s, "
          f"{ours / scoring:.2f}x the scoring rate ({torch.get_num_threads()} threads; target >= 20,000: "
          f"{'met' if ours >= 20_000 else 'NOT met'})")
    print(f"evaluator at cutoff {args.k}: {ev.n_users_evaluated:,} users, {ev.users_per_second:,.0f} users/s; "
          f"recommend runs at {ours / ev.users_per_second:.2f}x its rate")
    print(f"baseline (block scores, NumPy mask, full stable argsort): {slow:,.0f} users/s on {len(sample):,} users; "
          f"ratio {ours / slow:.1f}x; lists identical: {identical}")
    print(f"table with ids {table_s:.2f} s; Parquet {writes['r.parquet'][0]:.2f} s ({writes['r.parquet'][1] / 2**20:.0f} MiB), "
          f"CSV {writes['r.csv'][0]:.2f} s ({writes['r.csv'][1] / 2**20:.0f} MiB); "
          f"lists + table + Parquet: {figures['with_parquet_users_per_second']:,} users/s")
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
