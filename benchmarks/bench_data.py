"""Benchmark: parse an ML-10M-scale ratings file and load it back from the processed cache.

    python benchmarks/bench_data.py                 # 10,000,054 ratings, 69,878 users × 10,681 items
    python benchmarks/bench_data.py --ratings 200000  # quick check

Targets (issue 3, on a 2-core machine): parse ≤ 30 s, cache load ≤ 3 s. The baseline is the way the
reference reader parses (pandas' python engine with the '::' separator, ids as str), timed on the first
--baseline-lines lines in the same run; the ratio compares lines per second.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("RECSYS_NO_PROGRESS", "1")

from recsys_cli import console  # noqa: E402
from recsys_cli.data.cache import load_cache, write_cache  # noqa: E402
from recsys_cli.data.readers import read_zip  # noqa: E402
from recsys_cli.data.registry import get_spec  # noqa: E402

N_USERS, N_ITEMS, N_RATINGS = 69_878, 10_681, 10_000_054


def make_ratings(n: int, n_users: int, n_items: int, seed: int = 0) -> bytes:
    """n distinct (user, item) ratings, grouped by user as in ratings.dat, skewed item popularity."""
    rng = np.random.default_rng(seed)
    m = int(n * 1.3) + n_users
    users = rng.integers(1, n_users + 1, size=m)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(np.arange(1, n_items + 1), size=m, p=weights / weights.sum())
    frame = pd.DataFrame({"u": users, "i": items}).drop_duplicates().iloc[:n].sort_values("u", kind="stable")
    frame["r"] = rng.integers(1, 11, size=len(frame)) / 2
    frame["t"] = rng.integers(789_652_009, 1_231_131_736, size=len(frame))
    buffer = io.StringIO()
    frame.to_csv(buffer, sep="\t", header=False, index=False)
    return buffer.getvalue().encode().replace(b"\t", b"::")


def make_zip(path: Path, ratings: bytes, n_items: int) -> None:
    movies = "".join(f"{i}::Movie {i} ({1915 + i % 94})::Drama|Comedy\n" for i in range(1, n_items + 1))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("ml-10M100K/ratings.dat", ratings)
        zf.writestr("ml-10M100K/movies.dat", movies)
        zf.writestr("ml-10M100K/tags.dat", "1::1::first line is skipped::1\n15::1::funny::2\n")


def baseline_lines_per_second(ratings: bytes, lines: int) -> float:
    head = b"\n".join(ratings.split(b"\n", lines)[:lines]) + b"\n"
    start = time.perf_counter()
    pd.read_csv(io.BytesIO(head), sep="::", header=None, dtype={0: str, 1: str, 2: float, 3: int}, engine="python")
    return lines / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, default=N_RATINGS, help="number of rating lines (default: ML-10M's)")
    parser.add_argument("--baseline-lines", type=int, default=500_000, help="lines the slow baseline parses")
    args = parser.parse_args()
    console.set_quiet(True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        ratings = make_ratings(args.ratings, N_USERS, N_ITEMS)
        n_lines = ratings.count(b"\n")
        make_zip(tmp / "ml-10m.zip", ratings, N_ITEMS)
        print(f"generated {n_lines:,} ratings in {time.perf_counter() - t0:.1f} s "
              f"({len(ratings) / 2**20:.0f} MiB text, zip {(tmp / 'ml-10m.zip').stat().st_size / 2**20:.0f} MiB)")

        t0 = time.perf_counter()
        dataset = read_zip(tmp / "ml-10m.zip", get_spec("movielens-10m"))
        parse_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_cache(tmp / "cache", dataset, source={"kind": "benchmark"})
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load_cache(tmp / "cache")
        load_s = time.perf_counter() - t0
        assert loaded.urm.nnz == dataset.urm.nnz == n_lines

        base = baseline_lines_per_second(ratings, min(args.baseline_lines, n_lines))
        ours = n_lines / parse_s
        print(f"users {dataset.n_users:,}, items {dataset.n_items:,}, interactions {dataset.urm.nnz:,}")
        print(f"parse zip → Dataset     {parse_s:7.2f} s  ({ours / 1e6:.2f} M lines/s; target ≤ 30 s at 10M lines)")
        print(f"write processed cache   {write_s:7.2f} s")
        print(f"load cache (checked)    {load_s:7.2f} s  (target ≤ 3 s at 10M lines)")
        print(f"baseline (python engine, '::', str ids) {base / 1e6:.3f} M lines/s on {min(args.baseline_lines, n_lines):,} "
              f"lines → parse speed-up ×{ours / base:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
