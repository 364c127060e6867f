"""LightGCN training speed: our implementation against a straightforward one, and ML-10M-scale figures.

    python benchmarks/bench_lightgcn.py            # full (minutes on a CPU)
    python benchmarks/bench_lightgcn.py --quick    # reduced sizes, to check the script works
    python benchmarks/bench_lightgcn.py --device cuda --json out.json

Part 1, ML-1M scale (6,040 users × 3,706 items, 640,000 training interactions, synthetic with
heavy-tailed popularity and activity): one real epoch of ``lightgcn`` with the default config
(dim 64, K=3, Adam lr 1e-3, batch 1024) through the project's training engine, against a
straightforward implementation measured in the same run — COO adjacency with torch.sparse.mm and
autograd through every layer, negatives drawn per sample in a Python loop, full propagation per
batch. The baseline is timed on a few batches and extrapolated to an epoch (stated in the output).

Part 2, ML-10M scale (69,878 × 10,677, 6.4M training interactions): seconds per training step and
the projected epoch time for several batch sizes; on CUDA also real epochs at batch 2048 in float32
and bfloat16. Peak memory is reported for each part (RSS on the CPU, allocator peak on CUDA).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F
from zipf import keys_to_csr, zipf_keys  # benchmarks/zipf.py, beside this script

from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
from recsys_cli.devices import peak_rss_bytes, resolve_device
from recsys_cli.models.base import FitContext
from recsys_cli.models.lightgcn import LightGCN, LightGCNConfig
from recsys_cli.training import Trainer

ML1M = (6040, 3706, 640_000)
ML10M = (69_878, 10_677, 6_400_034)


def synthetic(n_users: int, n_items: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
    """Distinct (user, item) pairs with Zipf-like activity and popularity (exponents 0.7 and 0.9)."""
    rng = np.random.default_rng(seed)
    keys = zipf_keys(n_users, n_items, nnz, user_exponent=0.7, item_exponent=0.9, rng=rng, shuffle_ids=True)
    return keys_to_csr(keys, (n_users, n_items))


# -- the straightforward implementation -----------------------------------------------------------
class NaiveLightGCN(nn.Module):
    """LightGCN as commonly written: COO adjacency, autograd through every layer, stacked layer mean."""

    def __init__(self, train: sp.csr_matrix, dim: int, layers: int):
        super().__init__()
        n_users, n_items = train.shape
        self.n_users, self.layers = n_users, layers
        coo = train.tocoo()
        rows = torch.from_numpy(coo.row.astype(np.int64))
        cols = torch.from_numpy(coo.col.astype(np.int64)) + n_users
        index = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
        degree = torch.bincount(index[0], minlength=n_users + n_items).float()
        inv = degree.pow(-0.5)
        inv[torch.isinf(inv)] = 0
        values = inv[index[0]] * inv[index[1]]
        self.graph = torch.sparse_coo_tensor(index, values, (n_users + n_items,) * 2).coalesce()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def forward(self):
        x = torch.cat([self.user.weight, self.item.weight])
        layers = [x]
        for _ in range(self.layers):
            x = torch.sparse.mm(self.graph, x)
            layers.append(x)
        out = torch.stack(layers, dim=1).mean(dim=1)
        return out[: self.n_users], out[self.n_users :]


def naive_negatives(users, seen: list[set], n_items: int, rnd: random.Random) -> list[int]:
    out = []
    for u in users:
        while True:
            j = rnd.randrange(n_items)
            if j not in seen[u]:
                break
        out.append(j)
    return out


def time_naive(train: sp.csr_matrix, *, batch_size: int, steps: int, l2_reg: float = 1e-4) -> dict:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = NaiveLightGCN(train, 64, 3)
    seen = [set(train.indices[train.indptr[u]:train.indptr[u + 1]].tolist()) for u in range(train.shape[0])]
    setup = time.perf_counter() - t0
    coo = train.tocoo()
    order = np.random.default_rng(0).permutation(coo.nnz)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rnd = random.Random(0)
    times = []
    for step in range(steps + 1):  # the first step warms up and is not counted
        t = time.perf_counter()
        idx = order[step * batch_size:(step + 1) * batch_size]
        users = coo.row[idx].tolist()
        negatives = naive_negatives(users, seen, train.shape[1], rnd)
        u, i, j = torch.tensor(users), torch.tensor(coo.col[idx].tolist()), torch.tensor(negatives)
        user_emb, item_emb = model()
        x_ui = (user_emb[u] * item_emb[i]).sum(1)
        x_uj = (user_emb[u] * item_emb[j]).sum(1)
        reg = (model.user.weight[u].pow(2).sum() + model.item.weight[i].pow(2).sum()
               + model.item.weight[j].pow(2).sum()) / 2 / len(idx)
        loss = F.softplus(x_uj - x_ui).mean() + l2_reg * reg
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step:
            times.append(time.perf_counter() - t)
    per_step = float(np.mean(times))
    n_batches = math.ceil(train.nnz / batch_size)
    return {"setup_s": setup, "step_s": per_step, "steps_timed": steps, "batches_per_epoch": n_batches,
            "epoch_s_extrapolated": setup + per_step * n_batches}


# -- ours -----------------------------------------------------------------------------------------
def ctx_for(device, dtype, *, epochs=1, batch_size=1024) -> FitContext:
    training = TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=1e-3,
                              early_stopping=EarlyStoppingConfig(enabled=False))
    return FitContext(device=device, dtype=dtype, seed=0, training=training)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_bytes() / 2**30


def ours_epoch(train, device, dtype, batch_size=1024) -> dict:
    reset_peak(device)
    model = LightGCN(LightGCNConfig(), device=device, dtype=dtype, seed=0)
    t0 = time.perf_counter()
    trainer = Trainer(model, ctx_for(device, dtype, batch_size=batch_size))
    trainer.fit(train)
    sync(device)
    total = time.perf_counter() - t0
    row = trainer.history[0]
    return {"epoch_s": row["seconds"], "fit_s_incl_setup": total, "loss": row["loss"],
            "samples_per_s": row["samples_per_second"], "peak_gib": peak(device)}


def ours_steps(train, device, dtype, batch_size: int, steps: int) -> dict:
    """Seconds per training step (after one warm-up step) with the engine's own hooks."""
    from recsys_cli.training.engine import autocast_for, make_optimizer

    reset_peak(device)
    t0 = time.perf_counter()
    model = LightGCN(LightGCNConfig(), device=device, dtype=dtype, seed=0)
    model.batch_size = batch_size
    model.build_for(train)
    setup = time.perf_counter() - t0
    optimizer = make_optimizer(model.parameters(), TrainingConfig(learning_rate=1e-3))
    generator = torch.Generator().manual_seed(0)
    model.rng = generator
    t1 = time.perf_counter()
    batches = model.epoch_batches(train, generator)
    first = next(batches)
    epoch_setup = time.perf_counter() - t1  # shuffling and sampling the whole epoch's negatives
    times = []
    batch = first
    for step in range(steps + 1):
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device, dtype):
            loss = model.training_loss(batch)
        loss.backward()
        optimizer.step()
        float(loss.detach())  # the engine reads the loss every step, which synchronises
        if step:
            times.append(time.perf_counter() - t)
        batch = next(batches)
    per_step = float(np.mean(times))
    n_batches = math.ceil(train.nnz / batch_size)
    return {"batch_size": batch_size, "step_s": per_step, "batches_per_epoch": n_batches,
            "epoch_s_projected": epoch_setup + per_step * n_batches, "setup_s": setup,
            "peak_gib": peak(device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the script works")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--baseline-steps", type=int, default=5, help="batches the baseline is timed on")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per batch size at ML-10M scale")
    parser.add_argument("--skip-10m", action="store_true", help="only the ML-1M-scale comparison")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, log=False)
    scale = 0.1 if args.quick else 1.0
    out: dict = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "quick": args.quick}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)

    # Part 1: ML-1M scale, our real epoch vs the straightforward implementation (CPU, as the issue asks)
    n_users, n_items, nnz = (max(2, int(x * scale)) for x in ML1M)
    train = synthetic(n_users, n_items, nnz, seed=1)
    print(f"ML-1M scale: {n_users:,} users × {n_items:,} items, {train.nnz:,} training interactions", file=sys.stderr)
    cpu = torch.device("cpu")
    # the baseline is timed before and after our epoch, so a change in machine load hits both sides
    steps = max(1, args.baseline_steps)
    before = time_naive(train, batch_size=1024, steps=steps)
    ours = ours_epoch(train, cpu, torch.float32)
    after = time_naive(train, batch_size=1024, steps=steps)
    naive = {k: (before[k] + after[k]) / 2 if isinstance(before[k], float) else before[k] + after[k]
             for k in ("setup_s", "step_s", "epoch_s_extrapolated", "steps_timed")}
    naive["batches_per_epoch"] = before["batches_per_epoch"]
    naive["step_s_before_after"] = [before["step_s"], after["step_s"]]
    ratio = naive["epoch_s_extrapolated"] / ours["epoch_s"]
    out["ml1m"] = {"shape": [n_users, n_items], "nnz": int(train.nnz), "ours_cpu": ours, "naive_cpu": naive,
                   "speedup": ratio}
    print(f"  ours (CPU, float32, batch 1024, one real epoch): {ours['epoch_s']:.1f} s, "
          f"{ours['samples_per_s']:,.0f} samples/s, peak RSS {ours['peak_gib']:.2f} GiB")
    print(f"  ours per batch: {ours['epoch_s'] / naive['batches_per_epoch'] * 1000:.0f} ms")
    print(f"  straightforward (COO, Python sampling; {naive['steps_timed']} batches timed, extrapolated to "
          f"{naive['batches_per_epoch']} batches): {naive['epoch_s_extrapolated']:.1f} s "
          f"({naive['step_s'] * 1000:.0f} ms/batch; {before['step_s'] * 1000:.0f} before and "
          f"{after['step_s'] * 1000:.0f} after our epoch)")
    print(f"  speed-up: {ratio:.1f}x (target >= 5x)")
    if device.type == "cuda":
        out["ml1m"]["ours_cuda"] = ours_epoch(train, device, torch.float32)
        print(f"  ours (CUDA, float32, one real epoch): {out['ml1m']['ours_cuda']['epoch_s']:.2f} s")
    del train

    if not args.skip_10m:
        # Part 2: ML-10M scale
        n_users, n_items, nnz = (max(2, int(x * scale)) for x in ML10M)
        train = synthetic(n_users, n_items, nnz, seed=2)
        print(f"ML-10M scale: {n_users:,} users × {n_items:,} items, {train.nnz:,} training interactions",
              file=sys.stderr)
        rows = []
        for bs in (1024, 2048, 4096, 8192):
            row = ours_steps(train, device, torch.float32, bs, max(1, args.steps))
            rows.append(row)
            print(f"  {device.type} float32 batch {bs:>5}: {row['step_s'] * 1000:7.1f} ms/step, "
                  f"{row['batches_per_epoch']:>5} steps/epoch → projected epoch {row['epoch_s_projected']:8.1f} s, "
                  f"peak {row['peak_gib']:.2f} GiB")
        out["ml10m"] = {"shape": [n_users, n_items], "nnz": int(train.nnz), "steps": rows}
        if device.type == "cuda":
            epochs = {}
            for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                try:
                    epochs[name] = ours_epoch(train, device, dtype, batch_size=2048)
                    print(f"  CUDA {name} batch 2048, one real epoch: {epochs[name]['epoch_s']:.2f} s, "
                          f"peak {epochs[name]['peak_gib']:.2f} GiB (target < 30 s)")
                except Exception as exc:  # report, keep going: bf16 sparse kernels depend on the build
                    epochs[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    print(f"  CUDA {name}: failed: {exc}")
            out["ml10m"]["cuda_epochs_batch2048"] = epochs
    out["peak_rss_gib"] = peak_rss_bytes() / 2**30
    if args.json:
        from recsys_cli import atomic

        atomic.write_json(args.json, out)
    print(json.dumps(out, indent=1, default=str) if args.json is None and args.quick else "", end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
