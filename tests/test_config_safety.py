"""Configs that must be refused: non-finite floats, huge seeds, unsafe names, hostile YAML (issue 17)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config import load_config, loader
from recsys_cli.errors import ConfigError

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("override", [
    "model.l2_norm=.inf", "model.l2_norm=-.inf", "model.l2_norm=.nan", "training.learning_rate=.inf",
    "data.synthetic.popularity_exponent=.inf", "device.memory_budget_gb=.inf", "training.grad_clip=.inf",
])
def test_non_finite_floats_are_refused_in_every_section(tmp_path, override):
    path = write(tmp_path, "model: {name: ease}\n")
    with pytest.raises(ConfigError, match=r"bad value for '.*': Input should be a finite number"):
        load_config(path, [override], env={})


def test_non_finite_model_floats_are_refused_in_every_model(tmp_path):
    # l2_reg of lightgcn, noise_p of dae: the rule lives on the base section, not on each field
    for model, key in (("lightgcn", "l2_reg"), ("dae", "noise_p"), ("gfcf", "alpha")):
        with pytest.raises(ConfigError, match="finite number"):
            load_config(write(tmp_path, f"model: {{name: {model}}}\n"), [f"model.{key}=.inf"], env={})


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(10**30)])
def test_seeds_outside_0_to_2_63_are_refused(tmp_path, seed):
    with pytest.raises(ConfigError, match=r"experiment.seed"):
        load_config(write(tmp_path, "model: {name: toppop}\n"), [f"experiment.seed={seed}"], env={})
    assert load_config(write(tmp_path, "model: {name: toppop}\n"), [f"experiment.seed={2**63 - 1}"],
                       env={}).experiment.seed == 2**63 - 1


@pytest.mark.parametrize("name", ["a" * 101, "tab\there", "bell\x07", "line\nbreak", "del\x7f"])
def test_over_long_or_control_character_names_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=r"experiment.name"):
        load_config(None, data={"model": {"name": "toppop"}, "experiment": {"name": name}}, env={})
    assert load_config(None, data={"model": {"name": "toppop"}, "experiment": {"name": "a" * 100}},
                       env={}).experiment.name == "a" * 100


def test_duplicate_keys_are_an_error_naming_the_key_and_line(tmp_path):
    path = write(tmp_path, "model:\n  name: ease\n  l2_norm: 10\n  l2_norm: 20\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 4, column 3: duplicate key 'l2_norm'"):
        load_config(path, env={})
    path = write(tmp_path, "model: {name: ease}\ntraining: {epochs: 1}\ntraining: {epochs: 2}\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line 3, column 1: duplicate key 'training'"):
        load_config(path, env={})


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + f"\nmodel: {{name: toppop}}\nexperiment: {{name: *a{levels - 1}}}\n"


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    path = write(tmp_path, alias_bomb())
    start = time.perf_counter()
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert time.perf_counter() - start < 5
    assert result.exit_code == 2
    assert f"more than {loader.MAX_YAML_NODES:,} nodes" in result.stderr and "alias" in result.stderr
    assert len(result.stderr) < 1000


def test_a_small_alias_is_still_allowed(tmp_path):
    path = write(tmp_path, "model: {name: toppop}\nexperiment: {seed: &s 7}\ndata: {synthetic: {n_factors: *s}}\n")
    assert load_config(path, env={}).data.synthetic.n_factors == 7


def test_oversized_and_over_deep_documents_are_refused(tmp_path):
    big = write(tmp_path, "model: {name: toppop}\n#" + "x" * loader.MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"larger than"):
        load_config(big, env={})
    deep = write(tmp_path, "model: {name: toppop}\nx: " + "[" * 200 + "]" * 200 + "\n")
    with pytest.raises(ConfigError, match=r"nested deeper than"):
        load_config(deep, env={})


def test_long_values_are_truncated_in_error_messages(tmp_path):
    path = write(tmp_path, "model: {name: toppop}\nexperiment: {seed: [" + ", ".join(["123456789"] * 2000) + "]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "experiment.seed" in message and "…" in message and len(message) < 400


def test_a_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path, "model: {name: toppop}\nevaluation: {cutoffs: &c [5, *c]}\n")
    with pytest.raises(ConfigError, match=r"the alias \*c is inside its own anchor"):
        load_config(path, env={})
