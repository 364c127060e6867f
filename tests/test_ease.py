"""EASE^R: exact closed form, top-k, persistence, memory guard, GPU→CPU fallback, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys_cli import console
from recsys_cli.cli.app import app
from recsys_cli.errors import ResourceError, RunFailed
from recsys_cli.models import _linalg, _memory
from recsys_cli.models._linalg import gram, mirror_upper_
from recsys_cli.models._tiles import ColumnTiles
from recsys_cli.models.base import FitContext
from recsys_cli.models.ease import EASE, EASEConfig

from .conftest import CONFIGS

CPU = torch.device("cpu")
runner = CliRunner()


def ratings(n_users=200, n_items=60, density=0.12, seed=0) -> sp.csr_matrix:
    """Half-star ratings, a few heavy users (so both XᵀX paths run), every item rated at least once."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[:3] |= rng.random((3, n_items)) < 0.6  # heavy users: dense-GEMM path of gram()
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    values = rng.integers(1, 11, (n_users, n_items)) / 2
    return sp.csr_matrix(np.where(mask, values, 0.0))


def direct_B(X: np.ndarray, lam: float) -> np.ndarray:
    """Steck's closed form in float64, straight from the formula."""
    P = np.linalg.inv(X.T @ X + lam * np.eye(X.shape[1]))
    B = np.eye(X.shape[1]) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def fit(config: EASEConfig, X: sp.csr_matrix, *, dtype=torch.float32, **ctx) -> EASE:
    model = EASE(config, device=CPU, dtype=dtype)
    model.fit(X, FitContext(device=ctx.pop("device", CPU), dtype=dtype, seed=0, **ctx))
    return model


@pytest.mark.parametrize(
    "options",
    [dict(l2_norm=1000.0), dict(l2_norm=10.0), dict(l2_norm=5.0, implicit=True), dict(l2_norm=0.5, normalize_matrix=True)],
)
def test_B_equals_float64_closed_form(options):
    X = ratings()
    model = fit(EASEConfig(**options), X)
    x = X.toarray()
    if options.get("implicit"):
        x = (x > 0).astype(float)
    if options.get("normalize_matrix"):  # L2 per row, then per column (the reference implementation's order)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=0, keepdims=True)
    expected = direct_B(x, options["l2_norm"])
    B = model.dense_W().numpy()
    assert B.dtype == np.float32
    assert np.abs(B - expected).max() <= 1e-5
    assert np.all(np.diag(B) == 0)
    # scores are the (possibly normalised) train rows times B
    users = torch.tensor([0, 5, 17, 199])
    np.testing.assert_allclose(model.score(users).numpy(), x[[0, 5, 17, 199]] @ expected, atol=1e-5)


def test_float64_on_request_is_exact_to_rounding():
    X = ratings(seed=3)
    model = fit(EASEConfig(l2_norm=2.0), X, dtype=torch.float64)
    assert model.W.dtype == torch.float64
    assert np.abs(model.dense_W().numpy() - direct_B(X.toarray(), 2.0)).max() <= 1e-12


@pytest.mark.parametrize("heavy_share", [0.0, 0.2, np.inf])
def test_gram_paths_agree_with_scipy(heavy_share):
    # 0: every user through dense GEMM (the accelerator path), inf: every user through sparse products
    X = ratings(seed=1)
    expected = (X.T @ X).toarray()
    full = gram(X, device=CPU, dtype=torch.float64, full=True, heavy_share=heavy_share).numpy()
    upper = gram(X, device=CPU, dtype=torch.float64, full=False, heavy_share=heavy_share).numpy()
    np.testing.assert_array_equal(full, expected)
    np.testing.assert_array_equal(np.triu(upper), np.triu(expected))


def test_many_items_span_several_column_tiles():
    X = ratings(n_users=400, n_items=600, density=0.05, seed=7)  # 600 items: three tiles of 256 columns
    model = fit(EASEConfig(l2_norm=30.0), X)
    assert isinstance(model.W, ColumnTiles) and len(model.W.edges) == 4
    expected = direct_B(X.toarray(), 30.0)
    assert np.abs(model.dense_W().numpy() - expected).max() <= 1e-5
    users = torch.tensor([0, 1, 2, 399])
    np.testing.assert_allclose(model.score(users).numpy(), X[[0, 1, 2, 399]].toarray() @ expected, atol=1e-5)


@pytest.mark.parametrize("width", [1, 7, 64, 1000])
def test_column_tiles_from_upper_triangle_in_place(width):
    rng = np.random.default_rng(width)
    full = rng.standard_normal((150, 150))
    full = full + full.T
    M = torch.from_numpy(np.triu(full) + np.tril(rng.standard_normal((150, 150)), -1))  # junk below
    storage = M.data_ptr()
    tiles = ColumnTiles.from_upper_(M, width=width)
    assert tiles.flat.data_ptr() == storage  # no second matrix
    np.testing.assert_array_equal(tiles.to_dense().numpy(), full)
    rows = sp.random(9, 150, density=0.2, random_state=width, format="csr")
    np.testing.assert_allclose(tiles.matmul_csr(rows).numpy(), rows @ full, rtol=1e-12, atol=1e-12)
    again = ColumnTiles.from_dense(torch.from_numpy(full), width=width)
    np.testing.assert_array_equal(again.to_dense().numpy(), full)


@pytest.mark.parametrize("width", [1, 7, 64, 1000])
def test_column_tiles_float32_product_equals_dense(width):
    # float32 tiles multiply through embedding bags: weighted ratings, empty rows and one-tile W included
    rng = np.random.default_rng(width)
    full = rng.standard_normal((150, 120)).astype(np.float32)
    tiles = ColumnTiles.from_dense(torch.from_numpy(full), width=width)
    rows = sp.random(9, 150, density=0.2, random_state=width, format="csr", dtype=np.float32)
    rows.data *= 3.0
    rows = sp.vstack([rows, sp.csr_matrix((2, 150), dtype=np.float32)]).tocsr()  # two users without items
    product = tiles.matmul_csr(rows)
    assert product.dtype == torch.float32 and product.shape == (11, 120)
    np.testing.assert_allclose(product.numpy(), rows.toarray().astype(np.float64) @ full, rtol=1e-5, atol=1e-5)
    assert not product[9:].any()


def test_mirror_upper_copies_triangle():
    M = torch.arange(1300 * 1300, dtype=torch.float64).reshape(1300, 1300)  # spans several blocks
    upper = torch.triu(M)
    mirrored = mirror_upper_(M.clone())
    assert torch.equal(mirrored, upper + torch.triu(M, 1).T)


def test_topk_keeps_exactly_k_largest_magnitudes_per_column():
    X = ratings(seed=2)
    dense = fit(EASEConfig(l2_norm=10.0), X).dense_W().numpy()
    k = 7
    model = fit(EASEConfig(l2_norm=10.0, topk=k), X)
    assert model.W.layout == torch.sparse_csr
    kept = model.dense_W().numpy()
    per_column = (kept != 0).sum(axis=0)
    assert np.all(per_column == k)
    for j in range(dense.shape[1]):
        rows = np.flatnonzero(kept[:, j])
        threshold = np.sort(np.abs(dense[:, j]))[-k]
        assert np.all(np.abs(dense[rows, j]) >= threshold)  # the k largest |B_ij|, negatives included
        np.testing.assert_array_equal(kept[rows, j], dense[rows, j])
    assert (dense < 0).any() and (kept < 0).any()
    users = torch.arange(10)
    np.testing.assert_allclose(model.score(users).numpy(), model.X[:10].toarray() @ kept, atol=1e-6)


def test_dense_accelerator_path_on_the_cpu(monkeypatch):
    # Off the CPU, the inverse comes from torch's Cholesky and B stays one dense tensor; run that code
    # here (as a GPU would) and check it gives the same B, then tiles for CPU scoring.
    from recsys_cli.models import ease as ease_module

    def torch_inverse(G, *, ridge, what, hint):
        G = mirror_upper_(G)
        G.diagonal().add_(ridge)
        return _linalg._torch_spd_inverse(G, what=what, hint=hint)

    monkeypatch.setattr(ease_module, "spd_inverse_", torch_inverse)
    monkeypatch.setattr(ease_module, "symmetric_matrix", lambda M: M)
    X = ratings(n_users=300, n_items=300, density=0.05, seed=8)
    model = fit(EASEConfig(l2_norm=15.0), X)
    assert isinstance(model.W, ColumnTiles)
    assert np.abs(model.dense_W().numpy() - direct_B(X.toarray(), 15.0)).max() <= 1e-5


def test_memory_guard_refuses_with_the_estimate():
    X = ratings()
    budget = 1024  # bytes: far below one 60 × 60 float32 matrix plus buffers
    with pytest.raises(ResourceError) as err:
        fit(EASEConfig(), X, memory_budget_bytes=budget)
    need, formula = EASE(EASEConfig(), device=CPU, dtype=torch.float32).memory_estimate(
        sp.csr_matrix(X, dtype=np.float32), torch.float32, CPU)
    message = str(err.value)
    assert _memory.format_bytes(need) in message and formula in message
    assert "60² items × 4 B × 1 matrix" in message
    assert "memory_budget_gb" in message and "\n" not in message


def test_memory_estimate_counts_items_squared():
    model = EASE(EASEConfig(), device=CPU, dtype=torch.float32)
    X = sp.csr_matrix((10, 1000), dtype=np.float32)
    cpu_need, _ = model.memory_estimate(X, torch.float32, CPU)
    gpu_need, _ = model.memory_estimate(X, torch.float32, torch.device("cuda"))
    assert cpu_need >= 1000**2 * 4 and gpu_need >= 2 * 1000**2 * 4  # the GPU keeps factor and inverse apart
    assert model.memory_estimate(X, torch.float64, CPU)[0] >= 1000**2 * 8


def test_gpu_short_of_memory_falls_back_to_cpu(monkeypatch):
    # Pretend a CUDA device with 1 KiB free: nothing may be allocated on it, the fit must move to the CPU.
    def fake_free(device):
        return 1024 if device.type == "cuda" else 64 * 2**30

    monkeypatch.setattr(_memory, "available_memory_bytes", fake_free)
    X = ratings(seed=5)
    model = EASE(EASEConfig(l2_norm=10.0), device=torch.device("cuda"), dtype=torch.float32)
    with console.capture() as log:
        model.fit(X, FitContext(device=torch.device("cuda"), dtype=torch.float32, seed=0, memory_budget_bytes=1024))
    text = log.getvalue()
    assert "fitting on the CPU instead" in text and "scoring on the CPU" in text
    assert model.device == CPU and model.W.device == CPU and isinstance(model.W, ColumnTiles)
    assert model.fit_info["fit_device"] == "cpu"
    assert np.abs(model.dense_W().numpy() - direct_B(X.toarray(), 10.0)).max() <= 1e-5
    assert model.score(torch.arange(3)).device == CPU


def test_gpu_and_cpu_both_short_refuses(monkeypatch):
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda device: 1024)
    model = EASE(EASEConfig(), device=torch.device("cuda"), dtype=torch.float32)
    with pytest.raises(ResourceError, match="needs about .* on cuda"):
        model.fit(ratings(), FitContext(device=torch.device("cuda"), dtype=torch.float32, seed=0,
                                        memory_budget_bytes=1024))


def test_singular_matrix_without_ridge_fails_with_a_fix():
    x = ratings().toarray()
    x[:, -1] = 0  # an item nobody rated: XᵀX has a zero row and column
    with pytest.raises(RunFailed, match="not positive definite.*model.l2_norm"):
        fit(EASEConfig(l2_norm=0.0), sp.csr_matrix(x))


@pytest.mark.slow
def test_run_and_evaluate_end_to_end_on_synthetic(runs_dir):
    config = str(CONFIGS / "ease.yaml")
    small = ["--set", "data.dataset=synthetic", "--set", "data.synthetic.n_users=600",
             "--set", "data.synthetic.n_items=300", "--set", "data.synthetic.n_interactions=20000",
             "--set", "device.accelerator=cpu"]
    result = runner.invoke(app, ["run", config, *small, "--json"])
    assert result.exit_code == 0, result.stderr
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    for name in ("metrics.json", "metrics.csv", "timing.json", "model/model.pt", "model/model.json"):
        assert (run_dir / name).is_file(), name
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["seconds"]["fit"] > 0 and timing["ease_fit"]["stored"] == "dense"
    first = json.loads((run_dir / "metrics.json").read_text())
    again = runner.invoke(app, ["evaluate", str(run_dir)])
    assert again.exit_code == 0, again.stderr
    second = json.loads((run_dir / "metrics.json").read_text())
    assert second == first
    ndcg = next(r["value"] for r in first if r["metric"] == "NDCG" and r["cutoff"] == 10)
    assert 0 < ndcg <= 1


def test_tiny_memory_budget_refuses_from_the_cli(runs_dir):
    config = str(CONFIGS / "ease.yaml")
    result = runner.invoke(app, ["run", config, "--set", "data.dataset=synthetic",
                                 "--set", "data.synthetic.n_users=200", "--set", "data.synthetic.n_items=100",
                                 "--set", "data.synthetic.n_interactions=3000", "--set", "device.accelerator=cpu",
                                 "--set", "device.memory_budget_gb=0.00001"])
    assert result.exit_code == 2
    assert "EASE needs about" in result.stderr and "100² items" in result.stderr


def test_scoring_placement_rules():
    from recsys_cli.models._memory import place_for_scoring, same_device

    dense = torch.eye(4)
    tiles = place_for_scoring("EASE", dense, CPU)
    assert isinstance(tiles, ColumnTiles) and torch.equal(tiles.to_dense(), dense)  # CPU scoring uses tiles
    with console.capture() as log:
        kept = place_for_scoring("EASE", tiles, torch.device("mps"))  # never touches the MPS device
    assert kept is tiles and "scoring on the CPU" in log.getvalue()
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda:1"), torch.device("cuda:0"))
    assert not same_device(CPU, torch.device("cuda"))


def test_item_item_models_ask_for_the_course_block_on_the_cpu(monkeypatch):
    import scipy.sparse as sp_

    from recsys_cli.evaluation import evaluate, evaluator
    from recsys_cli.models.base import FitContext
    from recsys_cli.models.ease import EASE, EASEConfig

    cpu = torch.device("cpu")
    train = sp_.random(300, 50, density=0.2, format="csr", random_state=1)
    model = EASE(EASEConfig(l2_norm=10.0), device=cpu, dtype=torch.float32)
    model.fit(train, FitContext(device=cpu, dtype=torch.float32, seed=0))
    assert model.preferred_block_size() == 1000  # min(1000, 5e8 / 50)
    test = sp_.random(300, 50, density=0.05, format="csr", random_state=2)
    # shrink the evaluator's CPU cap to 10 users' scores so its default differs from the model's wish
    monkeypatch.setattr(evaluator, "CPU_SCORE_BLOCK_BYTES", 4 * 50 * 10)
    res = evaluate(model, train, test, [5], progress=False)
    assert res.block_size == res.n_users_evaluated > 10  # the reference evaluator's block, capped at the users evaluated
    assert evaluate(lambda u: model.score(u), train, test, [5], progress=False).block_size == 10  # plain scorer
    assert evaluate(model, train, test, [5], progress=False, block_size=7).block_size == 7  # the config wins
