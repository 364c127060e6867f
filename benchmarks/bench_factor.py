"""PureSVD, iALS and SLIM at MovieLens-10M scale, each against a peer measured in the same run.

    python benchmarks/bench_factor.py              # 69,878 users × 10,681 items, ~6.4M train ratings
    python benchmarks/bench_factor.py --quick      # a small size, to check the script works
    python benchmarks/bench_factor.py --json out.json

Figures (targets from issue 12, on the project's 2-core CPU):
- PureSVD fit (100 factors, float32): seconds and peak memory (target ≤ 15 s);
- iALS (64 factors, reg 0.01, linear confidence 1 + r): seconds per epoch of ours (solver ``cg``, 3
  steps, and ``cholesky``) against one iteration of ``implicit.cpu.als.AlternatingLeastSquares`` with
  the same factors, regularisation, confidences and CG steps on both cores (target: ours ≤ 1.5×
  implicit's), and NDCG@10 on the test split after the same number of epochs (target: within 0.005);
- SLIM (course defaults: alpha 1, l1_ratio 0.1, positive, topk 100): items per second on a random
  sample of target items with one thread and with all of them, the speed-up (target ≥ 1.7×) and
  the projected full fit time.

Every fit runs in a fresh subprocess that loads the matrix from a .npz file and reports its peak
resident set size (VmHWM) above what it held once the data were loaded. The data come from
``benchmarks/zipf.py``'s ML-10M-shaped generator (the same as the item-item benchmarks).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from zipf import ml10m_like_split

from recsys_cli.devices import current_rss_bytes, peak_rss_bytes

FULL = {"users": 69_878, "items": 10_681, "interactions": 8_000_000}
QUICK = {"users": 8_000, "items": 2_000, "interactions": 500_000}
IALS_SETTINGS = {"factors": 64, "reg": 0.01, "cg_steps": 3}


def ndcg_at_10(score, train: sp.csr_matrix, test: sp.csr_matrix) -> float:
    from recsys_cli.evaluation import evaluate

    return float(evaluate(score, train, test, [10], progress=False).value("NDCG", 10))


def confidences(train: sp.csr_matrix) -> sp.csr_matrix:
    from recsys_cli.models.ials import confidence

    C = sp.csr_matrix(train, dtype=np.float32, copy=True)
    C.data = confidence(C.data, "linear", 1.0, 1.0)
    return C


def worker(args) -> dict:
    import torch

    train = sp.load_npz(args.data).tocsr().astype(np.float32)
    test = sp.load_npz(args.test).tocsr() if args.test else None
    loaded = current_rss_bytes()
    out: dict = {}
    if args.worker == "puresvd":
        from recsys_cli.models.base import FitContext
        from recsys_cli.models.puresvd import PureSVD, PureSVDConfig

        model = PureSVD(PureSVDConfig(num_factors=100), device=torch.device("cpu"), dtype=torch.float32)
        start = time.perf_counter()
        model.fit(train, FitContext(device=torch.device("cpu"), dtype=torch.float32, seed=42))
        out["seconds"] = time.perf_counter() - start
    elif args.worker.startswith("ials-"):
        from recsys_cli.models.ials import IALS, IALSConfig

        config = IALSConfig(num_factors=IALS_SETTINGS["factors"], reg=IALS_SETTINGS["reg"], solver=args.worker.split("-")[1],
                            cg_steps=IALS_SETTINGS["cg_steps"])
        model = IALS(config, device=torch.device(args.device), dtype=torch.float32, seed=42)
        model.build_for(train)
        epochs = []
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            model.train_epoch(None, train, epoch, model.rng)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            epochs.append(time.perf_counter() - start)
        out["epoch_seconds"] = epochs
        out["peak_rss"] = peak_rss_bytes()
        out["ndcg10"] = ndcg_at_10(model, train, test)
    elif args.worker == "implicit":
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        C = confidences(train)
        epochs: list[float] = []
        with threadpool_limits(limits=1, user_api="blas"):  # what implicit asks for
            model = AlternatingLeastSquares(factors=IALS_SETTINGS["factors"], regularization=IALS_SETTINGS["reg"],
                                            alpha=1.0, iterations=args.epochs, use_cg=True,
                                            calculate_training_loss=False, num_threads=args.threads,
                                            random_state=42)
            # implicit's own per-iteration time (both half-steps, not its set-up); it takes 3 CG steps
            model.fit(C, show_progress=False, callback=lambda iteration, seconds, loss: epochs.append(seconds))
        out["epoch_seconds"] = epochs
        out["peak_rss"] = peak_rss_bytes()
        U, V = torch.from_numpy(model.user_factors), torch.from_numpy(model.item_factors)
        out["ndcg10"] = ndcg_at_10(lambda users: U[users] @ V.T, train, test)
    elif args.worker == "slim":
        from recsys_cli.models.slim import slim_matrix

        targets = np.random.default_rng(0).choice(train.shape[1], size=min(args.items, train.shape[1]),
                                                  replace=False)
        start = time.perf_counter()
        W = slim_matrix(train, alpha=1.0, l1_ratio=0.1, positive=True, topk=100, seed=42, n_jobs=args.threads,
                        targets=targets)
        out["seconds"] = time.perf_counter() - start
        out["items"] = int(targets.size)
        out["nnz"] = int(W.nnz)
    out.setdefault("peak_rss", peak_rss_bytes())
    out["rss_loaded"] = loaded
    return out


def run_worker(kind: str, paths: tuple[Path, Path], args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--data", str(paths[0]), "--test", str(paths[1]),
           "--device", args.device, "--epochs", str(args.epochs), "--items", str(args.items)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "RECSYS_NO_PROGRESS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["peak_above_data_gb"] = (result["peak_rss"] - result["rss_loaded"]) / 1e9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small size: checks that the script works")
    parser.add_argument("--device", default="cpu", help="device of our iALS (cpu or cuda); peers run on the CPU")
    parser.add_argument("--epochs", type=int, default=5, help="iALS epochs of ours and of implicit (default 5)")
    parser.add_argument("--items", type=int, default=256, help="SLIM target items sampled (default 256)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: puresvd,ials,slim")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--test", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        args.threads = args.threads or torch.get_num_threads()
        print(json.dumps(worker(args)))
        return

    import torch

    skip = set(filter(None, args.skip.split(",")))
    size = QUICK if args.quick else FULL
    cores = torch.get_num_threads()
    print(f"factor-model benchmark, {'quick' if args.quick else 'full'} size, {cores} torch threads, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    start = time.perf_counter()
    train, test = ml10m_like_split(size["users"], size["items"], size["interactions"])
    print(f"data: {train.shape[0]:,} users × {train.shape[1]:,} items, {train.nnz:,} train / {test.nnz:,} test "
          f"ratings (made in {time.perf_counter() - start:.1f} s)", flush=True)
    figures: dict = {"size": size, "train_nnz": int(train.nnz), "threads": cores}
    with tempfile.TemporaryDirectory() as tmp:
        paths = (Path(tmp) / "train.npz", Path(tmp) / "test.npz")
        sp.save_npz(paths[0], train, compressed=False)
        sp.save_npz(paths[1], test, compressed=False)

        if "puresvd" not in skip:
            r = figures["puresvd"] = run_worker("puresvd", paths, args)
            print(f"PureSVD fit (100 factors, float32): {r['seconds']:.2f} s, peak {r['peak_above_data_gb']:.2f} GB "
                  f"above the loaded data (target ≤ 15 s)", flush=True)

        if "ials" not in skip:
            peer = figures["ials_implicit"] = run_worker("implicit", paths, args, threads=cores)
            peer_s = statistics.median(peer["epoch_seconds"])
            print(f"implicit ALS ({IALS_SETTINGS['factors']} factors, CG {IALS_SETTINGS['cg_steps']} steps, {cores} threads): "
                  f"median {peer_s:.2f} s/iteration {[round(s, 2) for s in peer['epoch_seconds']]}, "
                  f"NDCG@10 {peer['ndcg10']:.4f} after {args.epochs}, peak {peer['peak_above_data_gb']:.2f} GB",
                  flush=True)
            for solver in ("cg", "cholesky"):
                r = figures[f"ials_{solver}"] = run_worker(f"ials-{solver}", paths, args)
                ours = statistics.median(r["epoch_seconds"])
                r["ratio_to_implicit"] = ours / peer_s
                r["ndcg10_minus_implicit"] = r["ndcg10"] - peer["ndcg10"]
                print(f"iALS {solver} ({args.device}): median {ours:.2f} s/epoch "
                      f"{[round(s, 2) for s in r['epoch_seconds']]} = {ours / peer_s:.2f}× implicit's "
                      f"(target ≤ 1.5×), NDCG@10 {r['ndcg10']:.4f} ({r['ndcg10'] - peer['ndcg10']:+.4f} vs "
                      f"implicit, target within 0.005), peak {r['peak_above_data_gb']:.2f} GB", flush=True)

        if "slim" not in skip:
            rates = {}
            for threads in sorted({1, cores}):
                r = figures[f"slim_{threads}_threads"] = run_worker("slim", paths, args, threads=threads)
                rates[threads] = r["items"] / r["seconds"]
                print(f"SLIM, {threads} thread(s): {r['items']} items in {r['seconds']:.2f} s = "
                      f"{rates[threads]:.2f} items/s, projected full fit {train.shape[1] / rates[threads] / 60:.1f} "
                      f"min, peak {r['peak_above_data_gb']:.2f} GB", flush=True)
            if cores > 1:
                figures["slim_speedup"] = rates[cores] / rates[1]
                print(f"SLIM speed-up {cores} threads vs 1: {figures['slim_speedup']:.2f}× (target ≥ 1.7×)",
                      flush=True)
    figures["load_average_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
