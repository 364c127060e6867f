"""The CLI as a shell user meets it: fast help, literal help texts, stdout for results, output levels,
config includes, list overrides, run names, and runs that do not keep their model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli.cli.app import app
from recsys_cli.config import load_config
from recsys_cli.errors import ConfigError

from .conftest import CONFIGS, REPO_ROOT

runner = CliRunner()
SYNTHETIC = ["--set", "data.dataset=synthetic", "--set", "data.synthetic.n_users=200",
             "--set", "data.synthetic.n_items=100", "--set", "data.synthetic.n_interactions=4000"]


def test_help_imports_no_heavy_library():
    # `recsys --help` and shell completion load the command modules only: torch, NumPy, SciPy and
    # pandas must wait until a command runs (torch alone takes over a second to import)
    code = ("import sys, recsys_cli.cli.app; "
            "print(','.join(m for m in ('torch', 'numpy', 'scipy', 'pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("args, message", [
    (["run", "--bogus"], "error: No such option: --bogus"),
    (["tune", "configs/search/ease.yaml", "--trials", "0"], "error: Invalid value for '--trials'"),
    (["nonexist"], "error: No such command 'nonexist'."),
])
def test_command_line_mistakes_are_one_line_with_exit_2(args, message):
    out = subprocess.run([sys.executable, "-m", "recsys_cli", *args], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1 and "--help" in out.stderr, out.stderr


def test_a_bare_command_prints_its_help():
    out = subprocess.run([sys.executable, "-m", "recsys_cli"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 2 and "Usage: " in out.stdout and "download" in out.stdout


def test_help_texts_keep_their_brackets():
    bench = runner.invoke(app, ["bench-dtype", "--help"], terminal_width=200)
    assert "median [min–max] fit" in bench.output
    split = runner.invoke(app, ["split", "--help"], terminal_width=200)
    assert "[-seed<seed>]" in split.output
    run = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert "quoted '[5,10]'" in run.output


@pytest.mark.parametrize("command", ["download", "split", "train", "evaluate", "run", "compare", "bench-dtype",
                                     "info", "models", "tune", "sweep"])
def test_every_command_help_shows_an_example(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert f"Example: recsys {command}" in result.output


def test_shell_completion_is_offered():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_models_prints_on_stdout_with_type_names():
    plain = runner.invoke(app, ["models"], terminal_width=80)
    assert plain.exit_code == 0
    assert "ease: l2_norm=1000.0" in plain.stdout and plain.stderr == ""
    # one line per model, however narrow the terminal: `recsys models | grep '^ials'` sees all of it
    ials = next(line for line in plain.stdout.splitlines() if line.startswith("ials:"))
    assert "reg=" in ials and "solver=" in ials
    listing = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert listing["ease"]["l2_norm"]["type"] == "float"
    assert listing["ease"]["topk"]["type"] == "int or null"
    assert listing["dae"]["hidden"]["type"] == "list of int"
    assert listing["dae"]["noise"]["type"].startswith("'dropout' | ")


def test_info_prints_on_stdout():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    assert "torch" in result.stdout and "runs dir" in result.stdout


def test_choices_are_enforced_by_the_parser(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path), "--split", "training"])
    assert result.exit_code == 2 and "'training' is not one of 'val'," in result.output
    result = runner.invoke(app, ["bench-dtype", str(CONFIGS / "toppop.yaml"), "--device", "tpu"])
    assert result.exit_code == 2 and "tpu" in result.output


def _run_toppop(*flags: str):
    return runner.invoke(app, ["run", str(CONFIGS / "toppop.yaml"), *SYNTHETIC, *flags])


def test_output_levels_and_the_log_keeps_every_detail(runs_dir):
    default = _run_toppop()
    assert default.exit_code == 0, default.output
    assert "Gini Index" not in default.stderr  # the statistics block is a detail of a run
    assert "EvaluatorHoldout: Processed" not in default.stderr
    assert "users/s" in default.stderr  # one throughput figure stays
    log = (runs_dir / "latest" / "log.txt").read_text()
    assert "Gini Index" in log and "EvaluatorHoldout: Processed" in log

    verbose = _run_toppop("-v")
    assert "Gini Index" in verbose.stderr and "EvaluatorHoldout: Processed" in verbose.stderr

    quiet = _run_toppop("-q")
    assert quiet.exit_code == 0
    assert "users/s" not in quiet.stderr and "run finished" not in quiet.stderr


def test_base_includes_merge_under_the_file_then_overrides(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "common.yaml").write_text(
        "data:\n  dataset: synthetic\n  split:\n    test_fraction: 0.3\n    val_fraction: 0.1\n"
        "evaluation:\n  cutoffs: [5, 10]\n"
    )
    (tmp_path / "protocol.yaml").write_text("base: data/common.yaml\ndata:\n  split:\n    val_fraction: 0.25\n")
    (tmp_path / "exp.yaml").write_text(
        "base: [protocol.yaml]\nmodel:\n  name: toppop\ndata:\n  split:\n    test_fraction: 0.2\n"
    )
    config = load_config(tmp_path / "exp.yaml", ["data.split.val_fraction=0.15"], env={})
    assert config.data.dataset == "synthetic"  # from the innermost base
    assert config.data.split.test_fraction == 0.2  # the file's own key beats its base
    assert config.data.split.val_fraction == 0.15  # --set beats everything
    assert config.evaluation.cutoffs == [5, 10]
    assert config.model.name == "toppop"


def test_base_cycles_and_missing_files_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nmodel: {name: toppop}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml", env={})
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\nmodel: {name: toppop}\n")
    with pytest.raises(ConfigError, match="base file nowhere.yaml does not exist"):
        load_config(tmp_path / "c.yaml", env={})
    (tmp_path / "d.yaml").write_text("base: 3\nmodel: {name: toppop}\n")
    with pytest.raises(ConfigError, match="'base' must name a YAML file"):
        load_config(tmp_path / "d.yaml", env={})


def test_shipped_configs_include_their_data_section():
    ease = load_config(CONFIGS / "ease.yaml", env={})
    assert ease.data.dataset == "movielens-10m" and ease.data.split.protocol == "holdout"
    assert ease.evaluation.cutoffs == [10]
    assert (CONFIGS / "data" / "movielens-10m.yaml").is_file()


def test_list_keys_take_comma_separated_values():
    config = load_config(CONFIGS / "toppop.yaml", ["evaluation.cutoffs=20,5,10", "evaluation.ignore_items=3,1"],
                         env={})
    assert config.evaluation.cutoffs == [5, 10, 20]
    assert config.evaluation.ignore_items == [3, 1]
    named = load_config(CONFIGS / "toppop.yaml", ["experiment.name=a,b"], env={})  # not a list key: kept as text
    assert named.experiment.name == "a,b"


def test_run_name_says_the_model_and_data_set_used(runs_dir):
    result = _run_toppop()
    assert result.exit_code == 0, result.output
    names = [p.name for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(names) == 1 and "-toppop-synthetic-" in names[0]


def test_save_model_false_keeps_no_weights_and_evaluate_says_why(runs_dir):
    result = _run_toppop("--set", "run.save_model=false")
    assert result.exit_code == 0, result.output
    run = Path(runs_dir / "latest").resolve()
    assert not (run / "model").exists() and (run / "metrics.csv").is_file()
    again = runner.invoke(app, ["evaluate", str(run)])
    assert again.exit_code == 2 and "run.save_model: false" in again.output


def _bench_result(run_dir: Path):
    from recsys_cli.bench.dtype import BenchResult, Variant
    from recsys_cli.bench.report import summarise

    variants = [Variant("float32", "float32"), Variant("float32+tf32", "float32", True),
                Variant("bfloat16", "bfloat16")]
    attempts = [{"variant": v.label, "dtype": v.dtype, "repeat": r, "status": "ok", "reason": None,
                 "fit_s": 12.345 + r, "eval_s": 3.21 * (r + 1), "total_s": 12.345 + r + 3.21 * (r + 1),
                 "peak_memory_bytes": (900 + 100 * i) * 2**20, "memory_kind": "rss",
                 "rss_after_import_bytes": 700 * 2**20, "metrics": {"NDCG@10": 0.25 - 0.01 * i}}
                for i, v in enumerate(variants) for r in (1, 2, 3)]
    rows = summarise(variants, attempts, {}, ["NDCG@10"], repeats=3, device="cuda")
    return BenchResult(run_dir, "cuda", variants, attempts, rows, ["NDCG@10"])


def test_bench_dtype_table_keeps_dtype_names_whole_at_80_columns(tmp_path):
    from rich.console import Console

    from recsys_cli.bench.report import table_of

    out = Console(width=80, record=True, highlight=False)
    out.print(table_of(_bench_result(tmp_path)))
    lines = out.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for name in ("float32", "float32+tf32", "bfloat16"):
        assert any(line.startswith(f"│ {name} ") for line in lines), text


def test_bench_dtype_memory_is_measured_above_the_import_baseline_and_plots_in_each_format(tmp_path):
    from recsys_cli.bench.report import memory_above_import_mib, plot

    result = _bench_result(tmp_path)
    assert [memory_above_import_mib(row) for row in result.rows] == [200.0, 300.0, 400.0]
    plot(result, "title", ("png", "svg"))
    assert (tmp_path / "bench_dtype.png").stat().st_size > 0
    svg = (tmp_path / "bench_dtype.svg").read_text()
    assert "accuracy against time" in svg and "above the import baseline" in svg


def test_training_curve_names_the_run_and_data_set_and_marks_a_resume(tmp_path):
    from recsys_cli.training.curves import curve_title, write_curve

    run = tmp_path / "20261201T000000Z-dae-ml100k-abcd1234"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  dataset: movielens-100k\n")
    title = curve_title(run, "dae", "NDCG@10")
    assert run.name in title and "dae on movielens-100k" in title
    rows = [{"epoch": e, "loss": 1.0 / e, "val_metric": 0.1 * e} for e in range(1, 5)]
    write_curve(run, rows, metric_name="NDCG@10", title=title, resumed_after=[2], formats=["png", "svg"])
    svg = (run / "train_curve.svg").read_text()
    assert "resumed" in svg and (run / "train_curve.png").is_file()


def test_a_resumed_run_says_so_in_its_log_and_curve(runs_dir):
    import csv

    from recsys_cli import experiment

    flags = ["data.dataset=synthetic", "data.synthetic.n_users=120", "data.synthetic.n_items=60",
             "data.synthetic.n_interactions=2000", "training.batch_size=32", "model.hidden=[16,4]",
             "device.accelerator=cpu", "run.plot_formats=png,svg"]
    run_dir = experiment.train(load_config(CONFIGS / "dae.yaml", [*flags, "training.epochs=2"])).run_dir
    experiment.train(load_config(CONFIGS / "dae.yaml", [*flags, "training.epochs=3"]), resume=run_dir)
    rows = list(csv.DictReader((run_dir / "train_log.csv").open()))
    assert [r.get("resumed") for r in rows] == ["", "", "True"]
    svg = (run_dir / "train_curve.svg").read_text()
    assert "resumed" in svg and run_dir.name in svg and "dae on synthetic" in svg


def test_a_finished_run_keeps_its_best_weights_once_and_a_resume_still_restores_them(runs_dir, tmp_path):
    import torch

    from recsys_cli import experiment
    from recsys_cli.models.dae import DAE, DAEConfig
    from recsys_cli.training import Trainer

    from .test_engine import CPU, _ctx, _data

    flags = ["data.dataset=synthetic", "data.synthetic.n_users=120", "data.synthetic.n_items=60",
             "data.synthetic.n_interactions=2000", "training.batch_size=32", "model.hidden=[16,4]",
             "device.accelerator=cpu", "training.epochs=2"]
    run_dir = experiment.run(load_config(CONFIGS / "dae.yaml", flags)).run_dir
    assert (run_dir / "model" / "model.pt").is_file() and (run_dir / "checkpoints" / "last.pt").is_file()
    assert not (run_dir / "checkpoints" / "best.pt").exists()  # the same tensors as model/model.pt

    # an extended run whose new epochs do not improve restores the best weights from model/
    train, _ = _data()
    model = DAE(DAEConfig(hidden=[16, 4]), device=CPU, dtype=torch.float32, seed=3)
    saved_dir = tmp_path / "run"
    model.build_for(train)
    best = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    (saved_dir / "model").mkdir(parents=True)
    torch.save(best, saved_dir / "model" / "model.pt")
    trainer = Trainer(model, _ctx(saved_dir))
    trainer.model = model
    trainer.history = [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    trainer.best_epoch, trainer.best_metric = 1, 0.3
    trainer._restore_best()
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
