"""Classic baselines at MovieLens-10M scale, each fit against `implicit`'s peer measured in the same run.

    python benchmarks/bench_baselines.py                    # 69,878 users × 10,681 items, ~6.3M train ratings
    python benchmarks/bench_baselines.py --scale 0.1        # a small matrix, to check the script in a minute
    python benchmarks/bench_baselines.py --only itemknn implicit-cosine --json out.json
    python benchmarks/bench_baselines.py --only implicit-als ials --device cuda   # iALS on a GPU vs implicit's CPU ALS

Figures per entry: fit seconds (median of ``--repeats`` fresh processes), the peak resident memory of the
fit above the loaded data (VmHWM − VmRSS before the fit), the memory still held after the fit above
the loaded data after glibc's malloc_trim (a dense items² W would show here: 0.46 GB at full scale), how W is stored, and for
models with ``evaluate`` the project evaluator's users/s at cutoff 10 (all 27 columns).

Targets (issue 12, on the project's 2-core CPU): ItemKNN (cosine, topK 50) fit ≤ implicit's
CosineRecommender(K=50) fit; RP3beta ≤ 15 s; UserKNN ≤ 60 s; evaluation ≥ 7,000 users/s; a topK-50
ItemKNN holds no dense items² matrix after fit; PureSVD (100 factors) ≤ 15 s; iALS (64 factors, CG,
ALS["epochs"] epochs) ≤ 1.5× implicit's AlternatingLeastSquares with the same factors,
regularisation, confidences and iterations on both cores, with NDCG@10 within 0.005 of implicit's;
SLIM: items/s on a sample of target items with all threads and with one (speed-up ≥ 1.7×), and
the projected full fit time. With ``--device cuda`` the project's models fit and score on the GPU
(the peers stay on the CPU): iALS's fit then has to be ≥ 10× faster than implicit's CPU ALS.

Adding a model: one function decorated with ``@entry(name, target=...)`` that fits on ``train`` and
returns the fitted Recommender (or None for a peer that the project evaluator cannot score); ratios
are listed in ``RATIOS``.

Data: benchmarks/zipf.py's ml10m_like_split, ML-10M's shape with heavy-tailed user activity (so the
item-item Gram is nearly dense). ``--scale s`` keeps the shape's spirit: users and ratings × s,
items × √s.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zipf import ml10m_like_split  # noqa: E402  (benchmarks/zipf.py, beside this script)

from recsys_cli.devices import current_rss_bytes, peak_rss_bytes  # noqa: E402  (VmRSS / VmHWM on Linux)

FULL = {"users": 69_878, "items": 10_681, "interactions": 8_250_000}


@dataclass
class Entry:
    name: str
    fit: Callable[[sp.csr_matrix], object]
    target: str
    evaluate: bool


ENTRIES: dict[str, Entry] = {}
# (numerator, denominator, what the ratio must be) printed when both were run
RATIOS = [("itemknn", "implicit-cosine", "≤ 1"), ("ials", "implicit-als", "≤ 1.5"),
          ("slim-sample-1-thread", "slim-sample", "≥ 1.7: the speed-up of all threads")]


def entry(name: str, *, target: str = "", evaluate: bool = True):
    def register(fn):
        ENTRIES[name] = Entry(name, fn, target, evaluate)
        return fn
    return register


def fit_model(name: str, train: sp.csr_matrix, **config):
    import torch

    from recsys_cli.models.base import FitContext
    from recsys_cli.models.registry import get_model_class

    cls = get_model_class(name)
    cpu = torch.device("cpu")
    model = cls(cls.Config(**config), device=cpu, dtype=torch.float32, seed=0)
    model.fit(train, FitContext(device=cpu, dtype=torch.float32, seed=0))
    return model


@entry("implicit-cosine", target="peer", evaluate=False)
def _implicit_cosine(train):
    from implicit.nearest_neighbours import CosineRecommender

    CosineRecommender(K=50).fit(train, show_progress=False)  # user × item in implicit ≥ 0.5


@entry("itemknn", target="≤ implicit-cosine")
def _itemknn(train):
    return fit_model("itemknn", train, topk=50)


@entry("rp3beta", target="≤ 15 s")
def _rp3beta(train):
    return fit_model("rp3beta", train)


@entry("p3alpha")
def _p3alpha(train):
    return fit_model("p3alpha", train)


@entry("userknn", target="≤ 60 s")
def _userknn(train):
    return fit_model("userknn", train, topk=50)


# Factor models and SLIM (issue 12). iALS and implicit's ALS: the same factors, regularisation,
# confidences (1 + r), CG steps (3) and epochs; the fit time includes each side's set-up.
ALS = {"factors": 64, "reg": 0.01, "epochs": 5}
SLIM_SAMPLE = 128  # target items fitted: SLIM's full fit at this scale takes hours


@entry("puresvd", target="≤ 15 s")
def _puresvd(train):
    return fit_model("puresvd", train, num_factors=100)


class _FactorScorer:
    """implicit's factors as something the project evaluator can score."""

    def __init__(self, user_factors, item_factors):
        import torch

        self.device = torch.device("cpu")
        self.U, self.V = torch.from_numpy(user_factors), torch.from_numpy(item_factors)

    def score(self, users):
        return self.U[users] @ self.V.T


@entry("implicit-als", target="peer")
def _implicit_als(train):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    from recsys_cli.models.ials import confidence

    C = sp.csr_matrix(train, dtype=np.float32, copy=True)
    C.data = confidence(C.data, "linear", 1.0, 1.0)
    with threadpool_limits(limits=1, user_api="blas"):  # what implicit asks for
        model = AlternatingLeastSquares(factors=ALS["factors"], regularization=ALS["reg"], alpha=1.0,
                                        iterations=ALS["epochs"], use_cg=True, random_state=0)
        model.fit(C, show_progress=False)
    return _FactorScorer(model.user_factors, model.item_factors)


@entry("ials", target="≤ 1.5 × implicit-als, NDCG@10 within 0.005")
def _ials(train):
    import torch

    from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
    from recsys_cli.models.base import FitContext
    from recsys_cli.models.ials import IALS, IALSConfig

    device = torch.device(os.environ.get("BENCH_DEVICE", "cpu"))
    model = IALS(IALSConfig(num_factors=ALS["factors"], reg=ALS["reg"], solver="cg", cg_steps=3), device=device,
                 dtype=torch.float32, seed=0)
    training = TrainingConfig(epochs=ALS["epochs"], early_stopping=EarlyStoppingConfig(enabled=False))
    model.fit(train, FitContext(device=device, dtype=torch.float32, seed=0, training=training))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return model


def _slim_sample(train, n_jobs):
    import torch

    from recsys_cli.models.slim import slim_matrix

    targets = np.random.default_rng(0).choice(train.shape[1], size=min(SLIM_SAMPLE, train.shape[1]), replace=False)
    slim_matrix(train, alpha=1.0, l1_ratio=0.1, positive=True, topk=100, seed=0,
                n_jobs=n_jobs or torch.get_num_threads(), targets=targets)


@entry("slim-sample", target=f"{SLIM_SAMPLE} items, all threads", evaluate=False)
def _slim_sample_all(train):
    _slim_sample(train, None)


@entry("slim-sample-1-thread", target=f"{SLIM_SAMPLE} items", evaluate=False)
def _slim_sample_one(train):
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1):  # one core: BLAS would otherwise spread the solver's vector operations
        _slim_sample(train, 1)


# ---------------------------------------------------------------------------------------------
# worker: one fit in a fresh process
# ---------------------------------------------------------------------------------------------
def worker(args) -> None:
    os.environ.setdefault("RECSYS_NO_PROGRESS", "1")
    import torch  # imported before the baseline RSS, as every entry needs it

    from recsys_cli.evaluation import evaluate

    train = sp.load_npz(Path(args.data) / "train.npz").tocsr().astype(np.float32)
    if args.worker == "implicit-cosine":
        import implicit  # noqa: F401  (its import is not part of the fit)
    if args.worker.startswith("slim"):
        # ~1 s once per process, not per item: left out of the per-item rate the full fit is projected from
        import sklearn.linear_model  # noqa: F401
    loaded = current_rss_bytes()
    start = time.perf_counter()
    model = ENTRIES[args.worker].fit(train)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes() - loaded
    with contextlib.suppress(OSError, AttributeError):  # hand freed heap pages back, so "held" is what is live
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    out = {"seconds": seconds, "peak_above_data": peak, "held_after_fit": current_rss_bytes() - loaded}
    W = getattr(model, "W", None)
    if W is not None:
        sparse = getattr(W, "layout", None) == torch.sparse_csr
        out["W"] = {"shape": list(W.shape), "stored": "sparse" if sparse else "dense",
                    "nnz": int(W.values().numel()) if sparse else int(np.prod(W.shape))}
    if model is not None and args.evaluate:
        test = sp.load_npz(Path(args.data) / "test.npz").tocsr().astype(np.float32)
        result = evaluate(model, train, test, [10], progress=False)
        out["evaluation"] = {"users_per_second": result.users_per_second, "seconds": result.seconds,
                             "users": result.n_users_evaluated, "NDCG@10": result.value("NDCG", 10)}
    print(json.dumps(out))


def run_worker(name: str, data: Path, evaluate: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--data", str(data)] + (["--evaluate"] if evaluate else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "RECSYS_NO_PROGRESS": "1"},
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="users and ratings × s, items × √s (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="fits per entry (fresh processes; median reported)")
    parser.add_argument("--only", nargs="+", choices=sorted(ENTRIES), help="run only these entries")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--device", default="cpu", help="where iALS fits: cpu (default) or cuda; peers stay on the CPU")
    parser.add_argument("--worker", choices=sorted(ENTRIES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    os.environ["BENCH_DEVICE"] = args.device  # read by the entries in their worker processes
    if args.device != "cpu" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here")
    size = {"users": round(FULL["users"] * args.scale), "items": round(FULL["items"] * args.scale**0.5),
            "interactions": round(FULL["interactions"] * args.scale)}
    names = args.only or list(ENTRIES)
    print(f"baselines benchmark, scale {args.scale:g} ({torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}), {args.repeats} repeat(s)", flush=True)
    start = time.perf_counter()
    train, test = ml10m_like_split(size["users"], size["items"], size["interactions"])
    counts = np.diff(train.indptr).astype(np.float64)
    print(f"data: {train.shape[0]:,} users × {train.shape[1]:,} items, {train.nnz:,} train / {test.nnz:,} test "
          f"ratings, Σ n_u² = {np.sum(counts**2):.3g} (made in {time.perf_counter() - start:.1f} s)", flush=True)
    figures: dict = {"scale": args.scale, "size": size, "train_nnz": int(train.nnz), "repeats": args.repeats,
                     "entries": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        sp.save_npz(data / "train.npz", train, compressed=False)
        sp.save_npz(data / "test.npz", test, compressed=False)
        for name in names:
            e = ENTRIES[name]
            runs = [run_worker(name, data, e.evaluate and i == 0) for i in range(args.repeats)]
            seconds = [r["seconds"] for r in runs]
            fig = {"median_s": statistics.median(seconds), "runs_s": [round(s, 3) for s in seconds],
                   "peak_above_data_gb": max(r["peak_above_data"] for r in runs) / 1e9,
                   "held_after_fit_gb": max(r["held_after_fit"] for r in runs) / 1e9, "target": e.target,
                   **{k: runs[0][k] for k in ("W", "evaluation") if k in runs[0]}}
            figures["entries"][name] = fig
            line = (f"{name}: fit median {fig['median_s']:.2f} s {fig['runs_s']}, peak {fig['peak_above_data_gb']:.2f}"
                    f" GB above the data, {fig['held_after_fit_gb']:.2f} GB held after fit")
            if "W" in fig:
                line += f", W {fig['W']['stored']} {fig['W']['shape'][0]:,}² with {fig['W']['nnz']:,} entries"
            if "evaluation" in fig:
                ev = fig["evaluation"]
                line += f"; evaluation {ev['users_per_second']:,.0f} users/s (NDCG@10 {ev['NDCG@10']:.4f})"
            print(line + (f"  [target {e.target}]" if e.target else ""), flush=True)
    entries = figures["entries"]
    if "ials" in entries and "implicit-als" in entries and "evaluation" in entries["implicit-als"]:
        diff = entries["ials"]["evaluation"]["NDCG@10"] - entries["implicit-als"]["evaluation"]["NDCG@10"]
        figures["ials_ndcg_minus_implicit"] = diff
        print(f"iALS NDCG@10 − implicit's after {ALS['epochs']} epochs = {diff:+.4f} (target within ±0.005)")
    for name in ("slim-sample", "slim-sample-1-thread"):
        if name in entries:
            rate = min(SLIM_SAMPLE, train.shape[1]) / entries[name]["median_s"]
            entries[name]["items_per_second"] = rate
            print(f"{name}: {rate:.2f} items/s, projected full SLIM fit {train.shape[1] / rate / 60:.1f} min")
    if args.device != "cpu" and "ials" in entries and "implicit-als" in entries:
        speedup = entries["implicit-als"]["median_s"] / entries["ials"]["median_s"]
        figures["implicit-als/ials"] = speedup
        print(f"implicit-als CPU fit / ials {args.device} fit = {speedup:.1f}× (target ≥ 10×)", flush=True)
    for num, den, target in RATIOS:
        if num in figures["entries"] and den in figures["entries"]:
            ratio = figures["entries"][num]["median_s"] / figures["entries"][den]["median_s"]
            figures[f"{num}/{den}"] = ratio
            print(f"{num} fit / {den} fit = {ratio:.2f} (target {target})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
