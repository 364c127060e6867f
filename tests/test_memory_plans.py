"""Memory plans before allocating: huge layers, negatives or synthetic sizes exit 2 with the estimate
and the budget, never a raw RuntimeError (issue 17)."""

from __future__ import annotations

import json

import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config.schema import SyntheticConfig
from recsys_cli.data import synthetic
from recsys_cli.errors import ResourceError
from recsys_cli.memory import trainable_plan
from recsys_cli.models.dae import DAE, DAEConfig

from .conftest import CONFIGS
from .test_lifecycle import SMALL, run_dirs

runner = CliRunner()


def test_the_plan_of_a_dae_is_its_parameters_activations_and_negatives():
    train = sp.random(50, 80, density=0.1, format="csr", random_state=0)
    model = DAE(DAEConfig(hidden=[8, 4]), device=torch.device("cpu"), dtype=torch.float32)
    need, detail = trainable_plan(model, train, batch_size=16)
    # items→8 (80·8 + 8), 8→4 (8·4 + 4), 4→8 (4·8 + 8), 8→items (8·80 + 80) = 1,444 parameters;
    # outputs per sample 8 + 4 + 8 + 80 = 100; one negative per interaction by default
    assert need == 4 * 1444 * 4 + 3 * 16 * 100 * 4 + 24 * train.nnz
    assert "1,444 parameters" in detail
    assert not hasattr(model, "layers")  # the probe was built, not the model


@pytest.mark.parametrize("config, overrides", [
    ("two-tower-1.yaml", ["model.num_negatives=1000000000"]),
    ("dae.yaml", ["model.hidden=[1000000000,4]"]),
    ("lightgcn.yaml", ["model.dim=1000000000"]),
    ("dae.yaml", ["device.memory_budget_gb=0.000001", "model.hidden=[8,4]"]),
    ("ials.yaml", ["device.memory_budget_gb=0.0000001"]),
])
def test_a_model_too_large_for_the_budget_exits_2_with_the_estimate(runs_dir, config, overrides):
    import re

    args = ["train", str(CONFIGS / config), *SMALL]
    for override in overrides:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert re.search(r"needs about [\d.]+ [GMK]iB", line) and "bug" not in line, line
    assert " 0.00 " not in line  # a tiny budget is shown in KiB, and the suggested budget is never 0
    if "memory_budget_gb" in overrides[0]:
        assert re.search(r"set device.memory_budget_gb to at least 0\.0[1-9]", line), line
    if config == "ials.yaml":  # its factors are buffers, and its size is num_factors, not layers
        assert "of factors" in line and "model.num_factors" in line and "model.hidden" not in line, line
    (run,) = run_dirs(runs_dir)
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


def test_layers_too_large_to_even_plan_are_refused(runs_dir):
    result = runner.invoke(app, ["train", str(CONFIGS / "dae.yaml"), *SMALL, "--set", f"model.hidden=[{10**30}]"])
    assert result.exit_code == 2 and "cannot be built with these sizes" in result.stderr


def test_the_synthetic_generator_checks_its_memory_first():
    with pytest.raises(ResourceError, match=r"the synthetic data set needs about .* GiB .* memory budget of"):
        synthetic.generate(SyntheticConfig(n_users=10**7, n_items=10**7, n_interactions=10**12))
    small = SyntheticConfig(n_users=100, n_items=50, n_interactions=1000)
    assert synthetic.planned_bytes(small) == 6 * 8 * 100 * 50 + 8 * 150 * (8 + 4) + 12 * 8 * 1000


def test_mlp_iris_with_huge_layers_exits_2_with_the_estimate(runs_dir):
    result = runner.invoke(app, ["train", str(CONFIGS / "mlp-iris.yaml"), "--set", "model.hidden=[1000000000,1000000000]"])
    assert result.exit_code == 2, result.stderr
    assert "mlp-iris needs about" in result.stderr and "memory budget" in result.stderr
