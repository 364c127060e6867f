"""Throughput of the neural models at MovieLens-10M scale, against straightforward Python and dense baselines.

    python benchmarks/bench_neural.py            # full size: 69,878 users × 10,677 items
    python benchmarks/bench_neural.py --quick    # a tenth of the users, to check the script works

Figures (targets from issue 6, on the project's 2-core CPU):
- DAE: seconds for one epoch over all users with the default architecture (≤ 30 s);
- Mult-VAE: seconds for one epoch over all users with configs/multvae.yaml (≤ 30 s), against the
  reference implementation's dense input rows (normalise, dropout, Linear; log_softmax) on a sample;
- two-tower (variants 1 and 2, configs/two-tower-{1,2}.yaml): training samples/s (≥ 500,000; also
  with each loss, bce, bpr and softmax, and softmax with a pool of 256 in-batch candidates, on a
  500,000-interaction sample) and
  evaluation users/s (≥ 20,000; scoring all items and taking the top 10 per user, in the evaluator's
  blocks), and the whole evaluator's users/s (27 columns, seen items masked);
- straightforward baselines measured in the same run on a small sample (the JSON keys starting with
  ``seed_``): a per-item Python scoring loop (users/s), per-interaction rejection sampling in Python
  (samples/s), the DAE with dense input rows (users/s), and the ratios.

The data is a synthetic interaction matrix with the shape and density of ML-10M's training part
(Zipf-like user activity and item popularity); throughput does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zipf import keys_to_csr, zipf_keys  # noqa: E402  (benchmarks/zipf.py, beside this script)

from recsys_cli.config.schema import TrainingConfig  # noqa: E402
from recsys_cli.evaluation import evaluate  # noqa: E402
from recsys_cli.evaluation.evaluator import block_size_for  # noqa: E402
from recsys_cli.models.base import FitContext  # noqa: E402
from recsys_cli.models.dae import DAE, DAEConfig  # noqa: E402
from recsys_cli.models.multvae import MultVAE, MultVAEConfig  # noqa: E402
from recsys_cli.models.two_tower import TwoTower, TwoTowerConfig  # noqa: E402
from recsys_cli.training import Trainer  # noqa: E402
from recsys_cli.training.sampling import NegativeSampler  # noqa: E402

DEVICE = torch.device("cpu")  # --device replaces it


def synthetic(n_users: int, n_items: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
    """A binary training matrix with Zipf-like activity (exponent 0.6) and popularity (0.9)."""
    rng = np.random.default_rng(seed)
    keys = zipf_keys(n_users, n_items, nnz, user_exponent=0.6, item_exponent=0.9, rng=rng)
    return keys_to_csr(keys, (n_users, n_items))


def config_section(name: str) -> tuple[dict, dict]:
    cfg = yaml.safe_load((ROOT / "configs" / name).read_text())
    return cfg["model"], cfg.get("training", {})


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def eval_users_per_second(model, n_users: int, users: int) -> float:
    """Score all items for `users` users in the evaluator's blocks and take each user's top 10."""
    model.eval()
    block = block_size_for(model, model.n_items, users, DEVICE)
    ids = torch.arange(users) % n_users
    synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, users, block):
            torch.topk(model.score(ids[start : start + block]), 10, dim=1)
    synchronize()
    return users / (time.perf_counter() - t0)


def bench_dae(train: sp.csr_matrix, seed_users: int) -> dict:
    model_cfg, training = config_section("dae.yaml")
    model_cfg.pop("name", None)
    tc = TrainingConfig(**{**training, "epochs": 1})
    model = DAE(DAEConfig(**model_cfg), device=DEVICE, dtype=torch.float32, seed=0)
    ctx = FitContext(device=DEVICE, dtype=torch.float32, seed=0, training=tc)
    trainer = Trainer(model, ctx)
    _, seconds = timed(lambda: trainer.fit(train))
    epoch_seconds = trainer.history[0]["seconds"]
    users = int((np.diff(train.indptr) > 0).sum())
    # Baseline DAE: dense raw rows through a dense first Linear, batches of 256 users in index order.
    dense_first = torch.nn.Linear(train.shape[1], model_cfg.get("hidden", [420, 69])[0]).to(DEVICE)
    opt = torch.optim.Adam([*dense_first.parameters(), *model.parameters()], lr=1e-3)
    sample = np.arange(min(seed_users, train.shape[0]))
    t0 = time.perf_counter()
    for start in range(0, len(sample), 256):
        rows = torch.from_numpy(train[sample[start : start + 256]].toarray().astype(np.float32)).to(DEVICE)
        h = torch.relu(dense_first(rows))
        for i, layer in enumerate(model.layers, start=1):
            h = layer(h)
            if model._act_after[i]:
                h = model._act(h)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(h, (rows > 0).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    synchronize()
    seed_rate = len(sample) / (time.perf_counter() - t0)
    ours = users / epoch_seconds
    return {"dae_epoch_seconds": round(epoch_seconds, 2), "dae_users": users,
            "dae_users_per_second": round(ours, 1), "seed_dense_dae_users_per_second": round(seed_rate, 1),
            "dae_ratio": round(ours / seed_rate, 2), "dae_eval_users_per_second":
            round(eval_users_per_second(model, train.shape[0], min(20_000, train.shape[0])), 1)}


def bench_multvae(train: sp.csr_matrix, sample_users: int) -> dict:
    model_cfg, training = config_section("multvae.yaml")
    model_cfg.pop("name", None)
    tc = TrainingConfig(**{**training, "epochs": 1})
    model = MultVAE(MultVAEConfig(**model_cfg), device=DEVICE, dtype=torch.float32, seed=0)
    trainer = Trainer(model, FitContext(device=DEVICE, dtype=torch.float32, seed=0, training=tc))
    trainer.fit(train)
    epoch_seconds = trainer.history[0]["seconds"]
    users = int((np.diff(train.indptr) > 0).sum())
    # The reference implementation (Liang et al.'s): dense rows, F.normalize, dropout, dense Linear layers.
    first = torch.nn.Linear(train.shape[1], model_cfg["hidden"][0]).to(DEVICE)
    opt = torch.optim.Adam([*first.parameters(), *model.parameters()], lr=1e-3)
    sample = np.arange(min(sample_users, train.shape[0]))
    nn_f = torch.nn.functional
    synchronize()
    t0 = time.perf_counter()
    for start in range(0, len(sample), tc.batch_size):
        x = torch.from_numpy(train[sample[start : start + tc.batch_size]].toarray().astype(np.float32)).to(DEVICE)
        h = torch.tanh(first(nn_f.dropout(nn_f.normalize(x), 0.5)))
        mean, log_var = model.layers[0](h).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        logits = model.layers[2](torch.tanh(model.layers[1](z)))
        kl = 0.5 * (log_var.exp() + mean**2 - 1 - log_var).sum(1).mean()
        loss = -(nn_f.log_softmax(logits, 1) * x).sum(1).mean() + 0.2 * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
    synchronize()
    dense_rate = len(sample) / (time.perf_counter() - t0)
    ours = users / epoch_seconds
    return {"multvae_epoch_seconds": round(epoch_seconds, 2), "multvae_users_per_second": round(ours, 1),
            "multvae_users_per_batch": model.users_per_batch(), "dense_multvae_users_per_second": round(dense_rate, 1),
            "multvae_ratio": round(ours / dense_rate, 2)}


def pair_flops(layers: list[int]) -> int:
    """FLOPs per (user, item) pair of variant-1 scoring once the first Linear is split: the add of
    the two halves and a ReLU (2·L1), then each later Linear + ReLU (2·in·out + 2·out), then the
    output Linear (2·Ln)."""
    flops = 2 * layers[1] if len(layers) > 1 else 0
    for a, b in zip(layers[1:-1], layers[2:]):
        flops += 2 * a * b + 2 * b
    return flops + 2 * layers[-1]


def seed_rejection_rate(train: sp.csr_matrix, n_positives: int, k: int = 3) -> float:
    """Baseline sampler: for each interaction, k negatives by Python rejection against a set."""
    coo = train.tocoo()
    profiles = {}
    t0 = time.perf_counter()
    out = []
    rows, cols = coo.row[:n_positives], coo.col[:n_positives]
    for u, i in zip(rows.tolist(), cols.tolist()):
        seen = profiles.get(u)
        if seen is None:
            seen = profiles[u] = set(train.indices[train.indptr[u] : train.indptr[u + 1]].tolist())
        out.append((u, i, 1.0))
        for _ in range(k):
            j = random.randrange(train.shape[1])
            while j in seen:
                j = random.randrange(train.shape[1])
            out.append((u, j, 0.0))
    return len(out) / (time.perf_counter() - t0)


def two_tower_setup(train: sp.csr_matrix, config: str, train_nnz: int, *, sample_seed: int):
    """(model section without its name, variant, one-epoch training section, a seeded sample of train)."""
    model_cfg, training = config_section(config)
    model_cfg.pop("name", None)
    coo = train.tocoo()
    keep = np.random.default_rng(sample_seed).permutation(coo.nnz)[:train_nnz]
    sub = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=train.shape)
    return model_cfg, model_cfg.get("variant", 1), TrainingConfig(**{**training, "epochs": 1}), sub


def bench_two_tower(train: sp.csr_matrix, config: str, train_nnz: int, seed_users: int) -> dict:
    # One epoch over a sample of the interactions (all users and items kept) gives samples/s.
    model_cfg, variant, tc, sub = two_tower_setup(train, config, train_nnz, sample_seed=1)
    model = TwoTower(TwoTowerConfig(**model_cfg), device=DEVICE, dtype=torch.float32, seed=0)
    trainer = Trainer(model, FitContext(device=DEVICE, dtype=torch.float32, seed=0, training=tc))
    trainer.fit(sub)
    samples_per_second = trainer.history[0]["samples_per_second"]
    eval_rate = eval_users_per_second(model, train.shape[0], min(20_000, train.shape[0]))
    # The whole evaluator (seen items masked, all 27 columns at cutoff 10) on held-out interactions
    # drawn like the training ones: every user with a held-out item is evaluated.
    truth = synthetic(train.shape[0], train.shape[1], train.nnz // 4, seed=1)
    evaluator_rate = evaluate(model, train, truth, [10], progress=False).users_per_second
    figures = {f"two_tower_{variant}_evaluator_users_per_second": round(evaluator_rate, 1)}
    if variant == 1:
        # Variant 1 runs the layers after the merge on each (user, item) pair: their FLOPs per user
        # set its evaluation cost (docs/training.md, "Variant 1's evaluation cost").
        flops_per_pair = pair_flops(model_cfg.get("layers", [64, 32, 16]))
        figures["two_tower_1_eval_mflop_per_user"] = round(flops_per_pair * train.shape[1] / 1e6, 2)
        figures["two_tower_1_eval_gflop_per_second"] = round(flops_per_pair * train.shape[1] * eval_rate / 1e9, 1)
        figures["two_tower_1_gflop_per_second_for_20k_users_per_second"] = round(
            flops_per_pair * train.shape[1] * 20_000 / 1e9, 1)
        # Tiny layers [10, 5, 2, 2] with init=seed, untrained (the scoring cost does not depend on the weights).
        tiny = TwoTower(TwoTowerConfig(variant=1, layers=[10, 5, 2, 2], init="seed"), device=DEVICE,
                        dtype=torch.float32, seed=0)
        tiny.build_for(train)
        tiny.finish_training()
        figures["two_tower_1_seed_layers_eval_users_per_second"] = round(
            eval_users_per_second(tiny, train.shape[0], min(20_000, train.shape[0])), 1)
        figures["two_tower_1_seed_layers_eval_mflop_per_user"] = round(
            pair_flops([10, 5, 2, 2]) * train.shape[1] / 1e6, 3)
    # Baseline scoring: forward(users, item) once per item, in a Python loop.
    users = torch.arange(seed_users, device=DEVICE)
    t0 = time.perf_counter()
    with torch.no_grad():
        scores = torch.stack([model(users, torch.full_like(users, j)) for j in range(train.shape[1])], dim=1)
        torch.topk(scores, 10, dim=1)
    synchronize()
    seed_eval = seed_users / (time.perf_counter() - t0)
    # Sampling alone: vectorised sampler vs per-interaction rejection in Python.
    sampler = NegativeSampler(train)
    g = torch.Generator().manual_seed(0)
    pos_users = torch.from_numpy(train.tocoo().row[:1_000_000].astype(np.int64))
    _, s = timed(lambda: sampler.sample(pos_users.repeat(3), g))
    vec_sampling = 4 * len(pos_users) / s
    seed_sampling = seed_rejection_rate(train, 20_000)
    return {**figures, f"two_tower_{variant}_train_samples_per_second": samples_per_second,
            f"two_tower_{variant}_eval_users_per_second": round(eval_rate, 1),
            f"seed_loop_{variant}_eval_users_per_second": round(seed_eval, 2),
            f"two_tower_{variant}_eval_ratio": round(eval_rate / seed_eval, 1),
            "vectorised_sampling_samples_per_second": round(vec_sampling, 1),
            "seed_rejection_sampling_samples_per_second": round(seed_sampling, 1),
            "sampling_ratio": round(vec_sampling / seed_sampling, 1)}


def bench_losses(train: sp.csr_matrix, config: str, train_nnz: int) -> dict:
    """Training throughput of one epoch with each loss, the config's other settings unchanged.

    Samples are what the engine counts (positives plus their uniform negatives); for softmax each
    positive is also scored against every candidate of its batch, so positives/s and logits/s are
    given too. A loss other than the config's gets 3 negatives per positive and 4,096 samples per
    batch for bce/bpr, and no extra negatives and 1,024 positives per batch for softmax; ``softmax-pool``
    is that softmax run with ``in_batch_candidates: 256``."""
    model_cfg, variant, tc, sub = two_tower_setup(train, config, train_nnz, sample_seed=2)
    figures = {}
    for loss in ("bce", "bpr", "softmax", "softmax-pool"):
        cfg = {**model_cfg, "loss": loss}
        if loss == "softmax-pool":  # the softmax run again with a pool of 256 in-batch candidates
            cfg = {**cfg, "loss": "softmax", "in_batch_candidates": 256}
        loss_tc = tc
        softmax = cfg["loss"] == "softmax"
        if cfg["loss"] != model_cfg.get("loss", "bce"):
            cfg["num_negatives"] = 0 if softmax else 3
            if not softmax:
                cfg.pop("normalize", None)
            loss_tc = tc.model_copy(update={"batch_size": 1024 if softmax else 4096})
        model = TwoTower(TwoTowerConfig(**cfg), device=DEVICE, dtype=torch.float32, seed=0)
        trainer = Trainer(model, FitContext(device=DEVICE, dtype=torch.float32, seed=0, training=loss_tc))
        trainer.fit(sub)
        row = trainer.history[0]
        positives = len(model._pos_users)
        figures[f"two_tower_{variant}_{loss}_train_samples_per_second"] = row["samples_per_second"]
        figures[f"two_tower_{variant}_{loss}_train_positives_per_second"] = round(positives / row["seconds"], 1)
        if softmax:
            pool = min(model._positives_per_batch(), model.config.in_batch_candidates or len(model._pos_users))
            candidates = pool * (1 + model.config.num_negatives)
            figures[f"two_tower_{variant}_{loss}_train_logits_per_second"] = round(
                positives * candidates / row["seconds"], 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the users and interactions")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--only", choices=["dae", "multvae", "two-tower"], default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the rejection-sampling baseline always runs on the CPU)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 0.1 if args.quick else 1.0
    n_users, n_items, nnz = int(69_878 * scale), 10_677, int(6_400_000 * scale)
    import os

    os.environ.setdefault("RECSYS_NO_PROGRESS", "1")
    train, gen_s = timed(lambda: synthetic(n_users, n_items, nnz))
    print(f"synthetic training matrix: {n_users:,} users × {n_items:,} items, {train.nnz:,} interactions "
          f"({gen_s:.1f} s to make); torch threads {torch.get_num_threads()}", file=sys.stderr)
    figures: dict = {"device": str(DEVICE), "n_users": n_users, "n_items": n_items, "train_nnz": int(train.nnz),
                     "torch_threads": torch.get_num_threads()}
    if args.only in (None, "dae"):
        figures.update(bench_dae(train, seed_users=2048 if not args.quick else 512))
    if args.only in (None, "multvae"):
        figures.update(bench_multvae(train, sample_users=4096 if not args.quick else 1024))
    if args.only in (None, "two-tower"):
        for config in ("two-tower-1.yaml", "two-tower-2.yaml"):
            figures.update(bench_two_tower(train, config, train_nnz=int(1_500_000 * scale), seed_users=5))
            figures.update(bench_losses(train, config, train_nnz=int(500_000 * scale)))
    print(json.dumps(figures, indent=2))
    print("\ntargets: DAE and Mult-VAE epoch ≤ 30 s; two-tower ≥ 500,000 training samples/s and ≥ 20,000 eval users/s",
          file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
