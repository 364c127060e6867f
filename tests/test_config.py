"""Config loading: defaults, overrides, environment, and every kind of config error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config import config_hash, load_config, to_yaml
from recsys_cli.errors import ConfigError

from .conftest import CONFIGS, REPO_ROOT

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_filled_in(tmp_path):
    cfg = load_config(write(tmp_path, "model: {name: mlp-iris}\n"), env={})
    assert cfg.experiment.seed == 42
    assert cfg.data.dataset == "movielens-10m"
    assert cfg.data.split.test_fraction == 0.2 and cfg.data.split.val_fraction == 0.2
    assert cfg.evaluation.cutoffs == [10]
    assert cfg.device.accelerator == "auto" and cfg.device.dtype == "float32"
    assert cfg.model.hidden == [16, 32]  # the model's own default


def test_set_overrides_are_typed_by_the_schema(tmp_path):
    path = write(tmp_path, "model: {name: mlp-iris}\n")
    cfg = load_config(
        path,
        ["training.epochs=7", "training.learning_rate=0.5", "evaluation.cutoffs=[20,5]", "model.hidden=[8]",
         "device.dtype=float64", "experiment.name=abc"],
        env={},
    )
    assert cfg.training.epochs == 7 and isinstance(cfg.training.epochs, int)
    assert cfg.training.learning_rate == 0.5
    assert cfg.evaluation.cutoffs == [5, 20]  # sorted, de-duplicated
    assert cfg.model.hidden == [8]
    assert cfg.device.dtype == "float64"
    assert cfg.experiment.name == "abc"


def test_environment_overrides_directories_and_set_wins(tmp_path):
    path = write(tmp_path, "model: {name: mlp-iris}\ndata: {data_dir: here}\n")
    env = {"RECSYS_DATA_DIR": "/tmp/d", "RECSYS_RUNS_DIR": "/tmp/r"}
    cfg = load_config(path, env=env)
    assert str(cfg.data.data_dir) == "/tmp/d" and str(cfg.experiment.runs_dir) == "/tmp/r"
    cfg = load_config(path, ["data.data_dir=/x"], env=env)
    assert str(cfg.data.data_dir) == "/x"


def test_hash_ignores_directories_but_not_hyperparameters(tmp_path):
    path = write(tmp_path, "model: {name: mlp-iris}\n")
    base = config_hash(load_config(path, env={}))
    assert config_hash(load_config(path, ["experiment.runs_dir=/elsewhere"], env={})) == base
    assert config_hash(load_config(path, ["training.epochs=3"], env={})) != base


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(CONFIGS / "mlp-iris.yaml", env={})
    again = load_config(write(tmp_path, to_yaml(cfg), "resolved.yaml"), env={})
    assert again == cfg


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        # unknown key at the top level, with a did-you-mean
        ("model: {name: mlp-iris}\ntrainng: {epochs: 3}\n", [], ["unknown key 'trainng'", "did you mean 'training'"]),
        # unknown key nested in a section
        ("model: {name: mlp-iris}\ntraining: {epoch: 3}\n", [], ["'training.epoch'", "did you mean 'epochs'"]),
        # unknown key two levels down
        ("model: {name: mlp-iris}\ndata: {split: {tset_fraction: 0.1}}\n", [], ["'data.split.tset_fraction'",
                                                                                "did you mean 'test_fraction'"]),
        # unknown key in the model's own section
        ("model: {name: mlp-iris, hiden: [3]}\n", [], ["'model.hiden'", "did you mean 'hidden'"]),
        # wrong type
        ("model: {name: mlp-iris}\ntraining: {epochs: many}\n", [], ["'training.epochs'", "integer", "'many'"]),
        # bad enum value: the allowed values are listed
        ("model: {name: mlp-iris}\ndevice: {dtype: float8}\n", [], ["'device.dtype'", "'float32'", "'bfloat16'"]),
        # out of range
        ("model: {name: mlp-iris}\ndata: {split: {test_fraction: 1.5}}\n", [], ["'data.split.test_fraction'"]),
        # unknown model name
        ("model: {name: mlp-irs}\n", [], ["unknown model 'mlp-irs'", "did you mean 'mlp-iris'"]),
        # missing model section
        ("experiment: {name: x}\n", [], ["missing required key 'model'"]),
        # a bad --set is reported the same way
        ("model: {name: mlp-iris}\n", ["training.epocs=3"], ["'training.epocs'", "did you mean 'epochs'"]),
        # a recommender's data set and early-stopping metric are checked when the config loads, not mid-run
        ("model: {name: ease}\ndata: {dataset: nope}\n", [], ["data.dataset: unknown data set 'nope'", "synthetic"]),
        ("model: {name: dae}\ntraining: {early_stopping: {metric: NCDG}}\n", [],
         ["bad value for 'training.early_stopping.metric': unknown metric 'NCDG'", "did you mean NDCG?"]),
        # a check across sections says what it needs, with no pydantic prefix
        ("model: {name: ease}\ndata: {split: {protocol: import}}\n", [],
         [": data.split.import_dir is required when data.split.protocol is 'import'"]),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, env={})
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message
    assert "\n" not in message
    # the CLI turns the same error into exit code 2 with the message on stderr
    result = runner.invoke(app, ["config", "validate", str(path), *sum((["--set", o] for o in overrides), [])])
    assert result.exit_code == 2
    assert expected[0] in result.stderr
    assert "Value error" not in message and "(top level)" not in message


def test_missing_file_and_invalid_yaml_exit_2(tmp_path):
    result = runner.invoke(app, ["config", "show", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    bad = write(tmp_path, "model: {name: mlp-iris\ntraining: [\n")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2 and "invalid YAML" in result.stderr and "line" in result.stderr
    scalar = write(tmp_path, "just a string\n", "scalar.yaml")
    result = runner.invoke(app, ["config", "validate", str(scalar)])
    assert result.exit_code == 2 and "top level must be a mapping" in result.stderr


def test_malformed_set_is_an_error(tmp_path):
    path = write(tmp_path, "model: {name: mlp-iris}\n")
    result = runner.invoke(app, ["config", "show", str(path), "--set", "training.epochs"])
    assert result.exit_code == 2 and "section.key=value" in result.stderr


def test_config_show_prints_resolved_config_with_overrides():
    result = runner.invoke(app, ["config", "show", str(CONFIGS / "mlp-iris.yaml"), "--set", "training.epochs=3"])
    assert result.exit_code == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["training"]["epochs"] == 3
    assert shown["training"]["optimizer"] == "sgd"
    assert "search" not in shown  # a plain config's search section is empty and never recorded
    search = yaml.safe_load(runner.invoke(app, ["config", "show", str(CONFIGS / "search" / "ease.yaml")]).stdout)
    assert search["search"]["space"]["model.l2_norm"]["high"] == 1e7
    assert shown["evaluation"]["cutoffs"] == [10]  # a default not written in the file
    assert shown["model"] == {"name": "mlp-iris", "hidden": [16, 32], "test_size": 0.2, "split_random_state": 42,
                              "standardize": False}


def test_every_shipped_config_is_valid():
    from recsys_cli.models.registry import available

    paths = sorted(CONFIGS.glob("*.yaml"))
    assert len(paths) >= 8  # mlp-iris, toppop, ease, gfcf, dae, two-tower-1/2, lightgcn
    shipped = {load_config(path, env={}).model.name for path in paths}  # raises ConfigError if one is invalid
    assert shipped == set(available())  # every registered model has a config


def test_readme_config_reference_matches_the_schema():
    from recsys_cli.config.reference import END, START, reference

    readme = (REPO_ROOT / "README.md").read_text()
    assert START in readme and END in readme, "README lacks the config reference markers"
    embedded = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert embedded == reference().strip(), "README config reference is stale: regenerate it with " \
        "python -m recsys_cli.config.reference"


def test_readme_cli_reference_matches_the_commands():
    from recsys_cli.cli.reference import END, START, reference

    readme = (REPO_ROOT / "README.md").read_text()
    assert START in readme and END in readme, "README lacks the CLI reference markers"
    embedded = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert embedded == reference().strip(), "README CLI reference is stale: run python -m recsys_cli.cli.reference --write"


def test_metric_names_are_canonical_and_the_iris_check_keeps_its_data_name(tmp_path):
    dae = load_config(write(tmp_path, "model: {name: dae}\ntraining: {early_stopping: {metric: ndcg}}\n"), env={})
    assert dae.training.early_stopping.metric == "NDCG"
    assert load_config(CONFIGS / "mlp-iris.yaml", env={}).data.dataset == "iris"


def test_set_values_take_the_type_of_their_key():
    dae = load_config(CONFIGS / "dae.yaml", ["evaluation.cutoffs=20", "run.plot_formats=pdf", "model.hidden=100",
                                             "experiment.name=2024", "data.md5=" + "1" * 32, "evaluation.ignore_items=3"],
                      env={})
    assert dae.evaluation.cutoffs == [20] and dae.run.plot_formats == ["pdf"] and dae.model.hidden == [100]
    assert dae.experiment.name == "2024" and dae.data.md5 == "1" * 32 and dae.evaluation.ignore_items == [3]
    assert load_config(CONFIGS / "dae.yaml", ["evaluation.cutoffs=5,10"], env={}).evaluation.cutoffs == [5, 10]
    assert load_config(CONFIGS / "ease.yaml", ["model.implicit=yes"], env={}).model.implicit is True
    for number in ("training.epochs=true", "model.l2_norm=false"):
        with pytest.raises(ConfigError, match=f"bad value for '{number.split('=')[0]}'"):
            load_config(CONFIGS / ("dae.yaml" if "epochs" in number else "ease.yaml"), [number], env={})
