"""Closed-form models at MovieLens-10M scale: EASE^R fit against a plain NumPy recipe, evaluation speed, GF-CF.

    python benchmarks/bench_closed_form.py              # 69,878 users × 10,681 items, ~6.4M train ratings
    python benchmarks/bench_closed_form.py --quick      # a small size, to check the script works
    python benchmarks/bench_closed_form.py --device cuda --json out.json

Figures (targets from issue 5, on the project's 2-core CPU):
- EASE fit (model ``ease``, float32, λ = 1000): median of ``--repeats`` runs, and the peak memory of
  the fit above the loaded data (target ≤ 15 s and ≤ 2.5 GB);
- a plain NumPy recipe measured in the same run — sparse XᵀX with SciPy, ``toarray``, ``numpy.linalg.inv``,
  B = P / −diag(P), all float32 — its median, peak memory and the ratio to ours (target ≥ 4×); the
  two B matrices are compared (max |difference|);
- the full evaluation of the fitted EASE at cutoff 10 with the project evaluator (scoring + all 27
  columns, every user with test items): users/s (target ≥ 7,000);
- GF-CF fit (α = 1, K = 50, dense W): median seconds and peak memory (target ≤ 30 s).

Method: every fit runs in a fresh subprocess that loads the matrix from a .npz file, records its
resident set size (VmRSS) once the data are loaded and the libraries imported, fits, and reports
its peak RSS (VmHWM, the high-water mark of its own image); "peak above data" is the difference. On CUDA the figure is
torch's peak allocated device memory. Fresh processes also keep one fit's allocations and thread
pools from affecting the next.

The data are synthetic with ML-10M's shape: heavy-tailed user activity (Pareto, at least 13 train
ratings a user, as 20 ratings × the 64 % train share), Zipf-like item popularity, half-star ratings,
then a random 20 % of the interactions held out as test. The fit time depends on the shape and on the
spread of user activity (the cost of XᵀX grows with Σ_u n_u²), not on the rating values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zipf import ml10m_like_split as synthetic_split  # noqa: E402  (benchmarks/zipf.py, beside this script)

from recsys_cli.devices import current_rss_bytes, peak_rss_bytes  # noqa: E402  (VmRSS / VmHWM on Linux)

FULL = dict(users=69_878, items=10_681, interactions=8_000_000)
QUICK = dict(users=8_000, items=2_000, interactions=500_000)
LAMBDA = 1000.0


# ---------------------------------------------------------------------------------------------
# worker: one fit in a fresh process
# ---------------------------------------------------------------------------------------------
def course_recipe(X: sp.csr_matrix) -> np.ndarray:
    """EASE^R fitted the plain way: SciPy XᵀX made dense (float32), np.linalg.inv, B = P / −diag(P)."""
    G = (X.T @ X).toarray()  # X is float32, so G is float32
    diag = np.diag_indices(G.shape[0])
    G[diag] += LAMBDA
    P = np.linalg.inv(G)
    B = P / (-np.diag(P))
    B[diag] = 0.0
    return B


def worker(args) -> None:
    import torch

    from recsys_cli.devices import available_memory_bytes
    from recsys_cli.models.base import FitContext

    X = sp.load_npz(args.data).tocsr().astype(np.float32)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the context outside the timed fit
        torch.cuda.reset_peak_memory_stats(device)
    loaded = current_rss_bytes()
    ctx = FitContext(device=device, dtype=torch.float32, seed=0, memory_budget_bytes=available_memory_bytes(device))
    start = time.perf_counter()
    if args.worker == "course":
        B = course_recipe(X)
        seconds = time.perf_counter() - start
    else:
        if args.worker == "ease":
            from recsys_cli.models.ease import EASE, EASEConfig

            model = EASE(EASEConfig(l2_norm=LAMBDA), device=device, dtype=torch.float32)
        else:
            from recsys_cli.models.gfcf import GFCF, GFCFConfig

            model = GFCF(GFCFConfig(), device=device, dtype=torch.float32)
        model.fit(X, ctx)
        seconds = time.perf_counter() - start
        B = model.dense_W().cpu().numpy() if args.save_matrix else None
    out = {"seconds": seconds, "rss_loaded": loaded, "peak_rss": peak_rss_bytes()}
    if device.type == "cuda":
        out["cuda_peak"] = int(torch.cuda.max_memory_allocated(device))
    if args.save_matrix and B is not None:
        np.save(args.save_matrix, B)
    print(json.dumps(out))


def run_worker(kind: str, data: Path, device: str, save: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(data), "--device", device]
    if save is not None:
        cmd += ["--save-matrix", str(save)]
    env = {**os.environ, "RECSYS_NO_PROGRESS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], device: str) -> dict:
    seconds = [r["seconds"] for r in runs]
    above = [r["peak_rss"] - r["rss_loaded"] for r in runs]
    out = {"median_s": statistics.median(seconds), "runs_s": [round(s, 3) for s in seconds],
           "peak_above_data_gb": max(above) / 1e9}
    if device == "cuda":
        out["cuda_peak_gb"] = max(r.get("cuda_peak", 0) for r in runs) / 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small size, one repeat: checks that the script works")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the NumPy recipe always runs on the CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="fits per method (default 3, 1 with --quick)")
    parser.add_argument("--skip-course", action="store_true", help="do not run the NumPy recipe (slow)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--worker", choices=["ease", "course", "gfcf"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--save-matrix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    size = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"closed-form benchmark on {args.device} ({torch.get_num_threads()} torch threads), "
          f"{'quick' if args.quick else 'full'} size, {repeats} repeat(s)", flush=True)
    start = time.perf_counter()
    train, test = synthetic_split(size["users"], size["items"], size["interactions"])
    counts = np.diff(train.indptr).astype(np.float64)
    print(f"data: {train.shape[0]:,} users × {train.shape[1]:,} items, {train.nnz:,} train / {test.nnz:,} test "
          f"ratings, Σ n_u² = {np.sum(counts**2):.3g} (made in {time.perf_counter() - start:.1f} s)", flush=True)
    figures: dict = {"device": args.device, "size": size, "train_nnz": int(train.nnz), "test_nnz": int(test.nnz),
                     "repeats": repeats}

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        sp.save_npz(data, train, compressed=False)
        ours_B, course_B = Path(tmp) / "ours.npy", Path(tmp) / "course.npy"

        ease_runs = [run_worker("ease", data, args.device, ours_B if i == 0 else None) for i in range(repeats)]
        figures["ease_fit"] = summarise(ease_runs, args.device)
        e = figures["ease_fit"]
        print(f"EASE fit ({args.device}, float32): median {e['median_s']:.2f} s {e['runs_s']}, "
              f"peak {e['peak_above_data_gb']:.2f} GB RSS above the loaded data"
              + (f", {e['cuda_peak_gb']:.2f} GB CUDA peak" if "cuda_peak_gb" in e else ""), flush=True)

        if not args.skip_course:
            course_runs = [run_worker("course", data, "cpu", course_B if i == 0 else None) for i in range(repeats)]
            figures["course_fit"] = summarise(course_runs, "cpu")
            c = figures["course_fit"]
            diff = float(np.abs(np.load(ours_B) - np.load(course_B)).max())
            figures["speedup_vs_course"] = c["median_s"] / e["median_s"]
            figures["max_abs_diff_vs_course"] = diff
            print(f"NumPy recipe (cpu, float32, np.linalg.inv): median {c['median_s']:.2f} s {c['runs_s']}, "
                  f"peak {c['peak_above_data_gb']:.2f} GB above the loaded data", flush=True)
            print(f"EASE speed-up vs the NumPy recipe: {figures['speedup_vs_course']:.1f}× "
                  f"(max |B_ours − B_numpy| = {diff:.2e})", flush=True)

        gfcf_runs = [run_worker("gfcf", data, args.device) for _ in range(repeats)]
        figures["gfcf_fit"] = summarise(gfcf_runs, args.device)
        g = figures["gfcf_fit"]
        print(f"GF-CF fit ({args.device}, float32, K = 50): median {g['median_s']:.2f} s {g['runs_s']}, "
              f"peak {g['peak_above_data_gb']:.2f} GB RSS above the loaded data"
              + (f", {g['cuda_peak_gb']:.2f} GB CUDA peak" if "cuda_peak_gb" in g else ""), flush=True)

    try:
        from recsys_cli.evaluation import evaluate
    except ImportError:
        evaluate = None
    if evaluate is None:
        print("evaluation: skipped (the project evaluator is not built yet)")
    else:
        from recsys_cli.models.base import FitContext
        from recsys_cli.models.ease import EASE, EASEConfig

        device = torch.device(args.device)
        model = EASE(EASEConfig(l2_norm=LAMBDA), device=device, dtype=torch.float32)
        model.fit(train, FitContext(device=device, dtype=torch.float32, seed=0))
        result = evaluate(model, train, test, [10], device=device, progress=False)
        figures["ease_evaluation"] = {"users_per_second": result.users_per_second, "seconds": result.seconds,
                                      "users": result.n_users_evaluated, "NDCG@10": result.value("NDCG", 10)}
        print(f"EASE evaluation at cutoff 10 (all 27 columns): {result.n_users_evaluated:,} users in "
              f"{result.seconds:.2f} s = {result.users_per_second:,.0f} users/s (NDCG@10 {result.value('NDCG', 10):.4f})")

    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
