"""The CUDA code paths against the CPU ones. Skipped without a CUDA device (CI has none); run them
on a GPU machine with ``python -m pytest tests/test_cuda.py`` (benchmarks/gpu_checks.sh does)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
from recsys_cli.evaluation import COLUMNS, evaluate
from recsys_cli.models._graph import NormalizedAdjacency, propagate
from recsys_cli.models.base import FitContext
from recsys_cli.models.dae import DAE, DAEConfig
from recsys_cli.models.ease import EASE, EASEConfig
from recsys_cli.models.gfcf import GFCF, GFCFConfig
from recsys_cli.models.lightgcn import LightGCN, LightGCNConfig
from recsys_cli.models.two_tower import TwoTower, TwoTowerConfig
from recsys_cli.training import Trainer

from .conftest import CONFIGS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
runner = CliRunner()


@pytest.fixture(autouse=True)
def exact_float32():
    # Other tests or a config may have allowed TF32; these comparisons are of plain float32.
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def interactions(n_users=300, n_items=120, density=0.08, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True  # every item seen once
    return sp.csr_matrix(np.where(mask, rng.integers(1, 11, mask.shape) / 2, 0.0))


def split(m: sp.csr_matrix, seed=1) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    coo = m.tocoo()
    held = np.random.default_rng(seed).random(coo.nnz) < 0.2
    part = lambda k: sp.csr_matrix((coo.data[k], (coo.row[k], coo.col[k])), shape=m.shape)  # noqa: E731
    return part(~held), part(held)


def test_evaluator_on_cuda_equals_the_cpu_table():
    train, test = split(interactions())
    scores = torch.from_numpy(np.random.default_rng(2).random(train.shape))  # no ties

    def scorer(users):
        return scores[users.cpu()].to(users.device)

    on = {d: evaluate(scorer, train, test, [1, 5, 10], device=d, progress=False).table for d in (CPU, CUDA)}
    assert list(on[CUDA].columns) == list(COLUMNS)
    np.testing.assert_allclose(on[CUDA].to_numpy(float), on[CPU].to_numpy(float), rtol=1e-9, atol=1e-12)


def _fit(cls, config, train, device, **ctx):
    model = cls(config, device=device, dtype=torch.float32, seed=0)
    model.fit(train, FitContext(device=device, dtype=torch.float32, seed=0, **ctx))
    return model


def test_ease_on_cuda_equals_the_cpu_fit():
    train = interactions()
    users = torch.arange(train.shape[0])
    cpu = _fit(EASE, EASEConfig(l2_norm=20.0), train, CPU).score(users)
    cuda = _fit(EASE, EASEConfig(l2_norm=20.0), train, CUDA).score(users.to(CUDA))
    assert cuda.device.type == "cuda"
    np.testing.assert_allclose(cuda.cpu().numpy(), cpu.numpy(), atol=2e-4)


def test_gfcf_on_cuda_equals_the_cpu_fit():
    train = interactions()
    users = torch.arange(train.shape[0])
    cfg = GFCFConfig(alpha=0.3, num_factors=8)
    cpu = _fit(GFCF, cfg, train, CPU).score(users)
    cuda = _fit(GFCF, cfg, train, CUDA).score(users.to(CUDA))
    # The randomized SVD draws on each device's generator: compare the scores' ranking quality, and
    # the linear part (which has no randomness) through a model with no ideal-filter term.
    linear = GFCFConfig(alpha=0.0, num_factors=8)
    np.testing.assert_allclose(_fit(GFCF, linear, train, CUDA).score(users.to(CUDA)).cpu().numpy(),
                               _fit(GFCF, linear, train, CPU).score(users).numpy(), atol=1e-4)
    top_cpu, top_cuda = cpu.topk(10).indices, cuda.cpu().topk(10).indices
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(top_cpu, top_cuda)])
    assert overlap > 0.9


def test_lightgcn_propagation_on_cuda_equals_cpu_with_its_gradient():
    train = interactions()
    x = torch.randn(sum(train.shape), 16, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    out = []
    for d in (CPU, CUDA):
        a = NormalizedAdjacency(train, "binary", device=d, dtype=torch.float32)
        leaf = x.to(d, copy=True).requires_grad_()  # a fresh leaf per device
        y = propagate(leaf, a.full, 3)
        (y * torch.arange(16, device=d)).sum().backward()
        out.append((y.detach().cpu(), leaf.grad.cpu()))
    for a, b in zip(*out):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def _trained(cls, config, dtype, epochs=4, batch_size=256, lr=1e-2, **ctx):
    train, val = split(interactions(n_users=400, n_items=150, density=0.1))
    model = cls(config, device=CUDA, dtype=dtype, seed=0)
    tc = TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr,
                        early_stopping=EarlyStoppingConfig(enabled=False))
    trainer = Trainer(model, FitContext(device=CUDA, dtype=dtype, seed=0, training=tc, validation=val, **ctx))
    trainer.fit(train)
    return model, trainer, train


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["dae", "two-tower-1", "two-tower-2", "lightgcn"])
def test_each_neural_model_trains_on_cuda_in_each_dtype(name, dtype):
    cls, config = {
        "dae": (DAE, DAEConfig(hidden=[32, 8])),
        "two-tower-1": (TwoTower, TwoTowerConfig(variant=1, layers=[16, 8])),
        "two-tower-2": (TwoTower, TwoTowerConfig(variant=2, layers=[16, 8])),
        "lightgcn": (LightGCN, LightGCNConfig(dim=16, layers=2)),
    }[name]
    model, trainer, train = _trained(cls, config, dtype, batch_size=64 if name == "dae" else 512)
    losses = [row["loss"] for row in trainer.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(np.isfinite(row["val_metric"]) for row in trainer.history)
    scores = model.score(torch.arange(train.shape[0], device=CUDA))
    assert scores.device.type == "cuda" and scores.shape == train.shape and torch.isfinite(scores).all()


@pytest.mark.parametrize("layers", [[16, 8, 4], [16, 8]])  # [2d, h]: variant 1's max/min kernel
@pytest.mark.parametrize("variant", [1, 2])
def test_two_tower_bulk_scores_on_cuda_equal_the_pairwise_forward_pass(variant, layers):
    model, _, train = _trained(TwoTower, TwoTowerConfig(variant=variant, layers=layers), torch.float32, epochs=1)
    users = torch.arange(20, device=CUDA)
    with torch.no_grad():
        pairwise = model(users.repeat_interleave(model.n_items), torch.arange(model.n_items, device=CUDA).repeat(20))
    torch.testing.assert_close(model.score(users), pairwise.view(20, -1), atol=1e-5, rtol=1e-5)


def test_a_model_trained_on_cuda_loads_on_the_cpu_with_the_same_scores(tmp_path):
    model, _, train = _trained(TwoTower, TwoTowerConfig(variant=2, layers=[16, 8]), torch.float32, epochs=2)
    path = tmp_path / "state.pt"
    torch.save({k: v.cpu() for k, v in model.state().items()}, path)
    again = TwoTower(TwoTowerConfig(variant=2, layers=[16, 8]), device=CPU, dtype=torch.float32, seed=0)
    again.load_state(torch.load(path, weights_only=True), train)
    users = torch.arange(train.shape[0])
    torch.testing.assert_close(again.score(users), model.score(users.to(CUDA)).cpu(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", ["ease.yaml", "lightgcn.yaml"])
def test_cli_run_on_cuda_end_to_end(config, runs_dir):
    result = runner.invoke(app, [
        "run", str(CONFIGS / config), "--json", "-q",
        "--set", "data.dataset=synthetic", "--set", "device.accelerator=cuda",
        "--set", "data.synthetic.n_users=600", "--set", "data.synthetic.n_items=300",
        "--set", "data.synthetic.n_interactions=20000",
        *(["--set", "training.epochs=3"] if config == "lightgcn.yaml" else []),
    ])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    run_dir = runs_dir / payload["run_dir"].split("/")[-1]
    env = json.loads((run_dir / "env.json").read_text())
    assert "cuda" in json.dumps(env["device"]).lower()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "succeeded"


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_ials_on_cuda_equals_the_cpu_fit(solver):
    from recsys_cli.models.ials import IALS, IALSConfig

    rng = np.random.default_rng(21)
    R = sp.csr_matrix(np.where(rng.random((200, 120)) < 0.1, rng.integers(1, 6, (200, 120)), 0).astype(np.float64))
    scores = {}
    for device in (CPU, CUDA):
        model = IALS(IALSConfig(num_factors=8, solver=solver), device=device, dtype=torch.float64, seed=5)
        training = TrainingConfig(epochs=4, early_stopping=EarlyStoppingConfig(enabled=False))
        model.fit(R, FitContext(device=device, dtype=torch.float64, seed=5, training=training))
        scores[device.type] = model.score(torch.arange(200)).cpu()
    torch.testing.assert_close(scores["cuda"], scores["cpu"], rtol=1e-7, atol=1e-9)
