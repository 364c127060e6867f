"""How fast can exact EASE scoring go on this CPU? The bound behind `recsys recommend`'s speed target.

    python benchmarks/bench_scoring_bound.py            # ML-10M scale: 69,878 users × 10,681 items
    python benchmarks/bench_scoring_bound.py --quick    # a tenth of the size, to check the script works

Issue 15 asks for >= 20,000 top-100 lists per second for EASE at ML-10M scale. Every list needs the
user's exact scores over all items (x_u · B, B dense), so the scores alone bound the lists' rate. This
script measures, on bench_evaluator.py's synthetic data of ML-10M's shape and a random dense B, the
scores alone through

- the shipped path (``ColumnTiles.matmul_csr``: PyTorch's embedding bag over column tiles), and
- a hand-written C kernel: B re-laid as column tiles of W columns, each user's tile row summed in
  four independent vector accumulators (so the adds do not wait on one another), tiles split between
  two threads. It is compiled here with the system C compiler (``cc -O3 -march=native``) and loaded
  through ctypes; it is not part of recsys, only a measure of what a compiled kernel can reach.

It prints users/s for each, the largest difference between the two scorings, and whether either
reaches 20,000 users/s before any masking, top-k or writing.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_evaluator import FULL, QUICK, synthetic_split  # noqa: E402

from recsys_cli.models._tiles import ColumnTiles  # noqa: E402

KERNEL = r"""
#include <stdint.h>
#include <string.h>
typedef float vec __attribute__((vector_size(64), aligned(4)));
#define V (W / 16)
/* tiles: T tiles of n rows x W floats each, contiguous; out: rows of stride m floats. A user's whole
   tile row (V vectors) in four independent accumulators: the loads of a row stay contiguous. */
void score(const float* tiles, int64_t n, int64_t t0, int64_t t1, const int64_t* indptr,
           const int32_t* items, const float* weights, int64_t n_users, float* out, int64_t m) {
  for (int64_t t = t0; t < t1; t++) {
    const float* tile = tiles + t * n * W;
    for (int64_t u = 0; u < n_users; u++) {
      vec a0[V], a1[V], a2[V], a3[V];
      for (int v = 0; v < V; v++) { vec z = {0}; a0[v] = z; a1[v] = z; a2[v] = z; a3[v] = z; }
      int64_t p = indptr[u], e = indptr[u + 1];
      for (; p + 4 <= e; p += 4) {
        const vec *r0 = (const vec*)(tile + (int64_t)items[p] * W), *r1 = (const vec*)(tile + (int64_t)items[p + 1] * W);
        const vec *r2 = (const vec*)(tile + (int64_t)items[p + 2] * W), *r3 = (const vec*)(tile + (int64_t)items[p + 3] * W);
        for (int v = 0; v < V; v++) {
          a0[v] += weights[p] * r0[v]; a1[v] += weights[p + 1] * r1[v];
          a2[v] += weights[p + 2] * r2[v]; a3[v] += weights[p + 3] * r3[v];
        }
      }
      for (; p < e; p++) {
        const vec* r0 = (const vec*)(tile + (int64_t)items[p] * W);
        for (int v = 0; v < V; v++) a0[v] += weights[p] * r0[v];
      }
      for (int v = 0; v < V; v++) {
        vec s = (a0[v] + a1[v]) + (a2[v] + a3[v]);
        memcpy(out + u * m + t * W + 16 * v, &s, sizeof s);
      }
    }
  }
}
"""


def compile_kernel(tmp: Path, width: int) -> ctypes.CDLL | None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    src, lib = tmp / "kernel.c", tmp / f"kernel{width}.so"
    src.write_text(KERNEL)
    subprocess.run([cc, "-O3", "-march=native", f"-DW={width}", "-shared", "-fPIC", str(src), "-o", str(lib)],
                   check=True)
    kernel = ctypes.CDLL(str(lib))
    kernel.score.restype = None
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    # tiles, n, t0, t1, indptr, items, weights, n_users, out, m
    kernel.score.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, i64, ptr, i64]
    return kernel


def kernel_scores(kernel, tiles: np.ndarray, rows, out: np.ndarray, threads: int) -> None:
    """rows @ B into out, the tiles split between ``threads`` Python threads (ctypes drops the GIL)."""
    n_tiles, n = tiles.shape[0], tiles.shape[1]
    indptr = np.ascontiguousarray(rows.indptr, dtype=np.int64)
    items = np.ascontiguousarray(rows.indices, dtype=np.int32)
    weights = np.ascontiguousarray(rows.data, dtype=np.float32)
    ptr = lambda a: a.ctypes.data  # noqa: E731

    def part(i: int) -> None:
        kernel.score(ptr(tiles), n, i * n_tiles // threads, (i + 1) * n_tiles // threads, ptr(indptr),
                     ptr(items), ptr(weights), rows.shape[0], ptr(out), out.shape[1])

    workers = [threading.Thread(target=part, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size, to check the script works")
    parser.add_argument("--users", type=int, default=16_000, help="users scored per measurement")
    parser.add_argument("--block", type=int, default=4000, help="users per block")
    parser.add_argument("--widths", default="64,128", help="the C kernel's tile widths (multiples of 16)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    threads = torch.get_num_threads()

    train, _ = synthetic_split(size["users"], size["items"], size["train"], size["test"])
    train = train.astype(np.float32)
    rng = np.random.default_rng(2)
    users = np.sort(rng.choice(train.shape[0], size=min(args.users, train.shape[0]), replace=False))
    X = train[users]
    n = train.shape[1]
    B = torch.randn(n, n, generator=torch.Generator().manual_seed(0)) / n**0.5
    print(f"{len(users):,} users × {n:,} items, {X.nnz / len(users):.1f} training items per user, "
          f"blocks of {args.block:,}, {threads} threads", file=sys.stderr)

    shipped = ColumnTiles.from_dense(B)
    reference = np.empty((len(users), n), dtype=np.float32)
    best = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for lo in range(0, len(users), args.block):
            reference[lo:lo + args.block] = shipped.matmul_csr(X[lo:lo + args.block]).numpy()
        best = min(best, time.perf_counter() - t0)
    shipped_rate = len(users) / best
    print(f"shipped tiles (embedding bag, {shipped.edges[1]} columns): {shipped_rate:,.0f} users/s")
    del shipped

    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for width in (int(w) for w in args.widths.split(",")):
            kernel = compile_kernel(Path(tmp), width)
            if kernel is None:
                print("no C compiler on PATH: the kernel's bound was not measured")
                return
            padded = -(-n // width) * width  # the kernel has no ragged last tile: pad B with zero columns
            Bp = torch.zeros(n, padded)
            Bp[:, :n] = B
            tiles = np.ascontiguousarray(Bp.numpy().reshape(n, padded // width, width).transpose(1, 0, 2))
            del Bp
            out = np.empty((len(users), padded), dtype=np.float32)
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for lo in range(0, len(users), args.block):
                    kernel_scores(kernel, tiles, X[lo:lo + args.block], out[lo:lo + args.block], threads)
                best = min(best, time.perf_counter() - t0)
            rates[width] = len(users) / best
            diff = float(np.abs(out[:, :n] - reference).max())
            print(f"C kernel, tiles of {width} columns: {rates[width]:,.0f} users/s = "
                  f"{rates[width] / shipped_rate:.2f}x the shipped tiles; max |difference| {diff:.1e}")
            del tiles, out
    top = max(rates.values())
    print(f"fastest exact scoring: {max(top, shipped_rate):,.0f} users/s, "
          f"{'above' if max(top, shipped_rate) >= 20_000 else 'below'} the 20,000 lists/s target before any "
          f"masking, top-k or writing" + (" (--quick: the target is for ML-10M scale)" if args.quick else ""))


if __name__ == "__main__":
    main()
