"""`recsys evaluate` and `recsys compare`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from recsys_cli import console
from recsys_cli.cli.common import (
    HeldOut,
    JsonOption,
    QuietOption,
    VerboseOption,
    handle_errors,
    parse_cutoffs,
    print_json,
)
from recsys_cli.errors import ConfigError, RunFailed


class PairedTest(str, Enum):
    """Choices of compare --test (evaluation/stats.py)."""

    wilcoxon = "wilcoxon"
    ttest = "ttest"
    bootstrap = "bootstrap"


class Correction(str, Enum):
    holm = "holm"
    bonferroni = "bonferroni"
    none = "none"


class TableFormat(str, Enum):
    csv = "csv"
    md = "md"
    latex = "latex"


@handle_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory made by recsys train/run (or runs/latest)."),
    split: HeldOut | None = typer.Option(
        None, "--split",
        help="Held-out part to evaluate on (default: the config's evaluation.split).",
    ),
    cutoffs: str | None = typer.Option(
        None, "--cutoffs", help="Comma-separated cutoffs, e.g. 5,10,20 (default: the config's evaluation.cutoffs)."
    ),
    assertions: list[str] = typer.Option(
        [], "--assert", metavar="METRIC@K OP NUMBER",
        help='Fail with exit code 1 unless the bound holds, e.g. --assert "NDCG@10>=0.25" (repeatable).',
    ),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE",
        help="Override an evaluation.* or device.* key (or data.data_dir, data.source) for this evaluation, "
             "e.g. --set evaluation.exclude_seen=false (repeatable).",
    ),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Evaluate a trained run from its saved model, without refitting.

    Writes metrics.csv (tidy: cutoff, metric, value), metrics.json and metrics.md into the run
    directory (metrics-val.* for --split val) and prints the key columns; docs/metrics.md defines
    all 27 columns. --cutoffs adds cutoffs to that table (its other rows stay); with --set the
    files go beside it, to RUN_DIR/evaluations/metrics-<split>-k<cutoffs>-set-<hash>.*, recording
    the overrides. --set takes evaluation.* and device.* keys (and data.data_dir, data.source):
    the model is saved and its split fixed, so other keys are refused.

    Example: recsys evaluate runs/latest --cutoffs 5,10,20 --assert "NDCG@10>=0.25"
    """
    from recsys_cli import experiment
    from recsys_cli.evaluation.report import parse_assertion

    console.set_verbosity(quiet=quiet, verbose=verbose)
    checks = [parse_assertion(text) for text in assertions]
    wanted = parse_cutoffs(cutoffs)
    if checks:
        needed = sorted({check.cutoff for check in checks})
        if wanted is not None:
            missing = [k for k in needed if k not in wanted]
            if missing:
                both = ",".join(str(k) for k in sorted(set(wanted) | set(missing)))
                raise ConfigError(f"--assert uses cutoff {missing[0]}, which --cutoffs {cutoffs} does not evaluate",
                                  hint=f"add it: --cutoffs {both}")
        else:
            from recsys_cli.rundir import RunDirectory

            configured = RunDirectory.open(run_dir).config(overrides).evaluation.cutoffs
            wanted = sorted(set(configured) | set(needed))
    result = experiment.evaluate(run_dir, split=split.value if split else None, cutoffs=wanted, overrides=overrides)
    evaluation = result.metrics
    console.success(f"metrics written to {evaluation.extra.get('metrics_file', result.run_dir)}")

    outcomes = []
    for check in checks:
        value = evaluation.value(check.metric, check.cutoff)
        ok = check.check(value)
        outcomes.append({"assertion": check.text, "metric": check.metric, "cutoff": check.cutoff,
                         "value": value, "passed": ok})
        (console.success if ok else console.error)(f"assert {check.describe(value)}")
    if as_json:
        print_json({
            "run_dir": str(result.run_dir), "metrics_file": evaluation.extra.get("metrics_file"),
            "n_users_evaluated": evaluation.n_users_evaluated,
            "users_per_second": evaluation.users_per_second, "metrics": evaluation.to_records(),
            "assertions": outcomes,
        })
    failed = [o for o in outcomes if not o["passed"]]
    if failed:
        raise RunFailed(f"{len(failed)} of {len(outcomes)} assertions failed: "
                        + "; ".join(f"{o['assertion']} (got {_number(o['value'])})" for o in failed),
                        hint="the metrics files were still written")


@handle_errors
def compare(
    run_dirs: list[str] = typer.Argument(..., help="Run directories or quoted globs, e.g. 'runs/*toppop*'."),
    metrics: str | None = typer.Option(
        None, "--metrics",
        help="Comma-separated columns, e.g. NDCG@10,PRECISION@10 (default: PRECISION, RECALL, MAP, NDCG at 10).",
    ),
    baseline: Path | None = typer.Option(
        None, "--baseline", help="Test every other run (or seed group) against this run, paired over users."
    ),
    test: PairedTest = typer.Option(PairedTest.wilcoxon, "--test", help="Paired test: wilcoxon, ttest or bootstrap."),
    correction: Correction = typer.Option(
        Correction.holm, "--correction", help="Multiple-testing correction over all the table's tests: holm, bonferroni or none."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level (after the correction)."),
    fmt: TableFormat | None = typer.Option(
        None, "--format", help="File format: csv, md or latex (default: from --output's extension, else csv)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (default: a new compare-<UTC time> file in the runs' folder)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output file."),
    keep_all: bool = typer.Option(False, "--all", help="Keep failed, interrupted and benchmark runs."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Compare runs: one row per run or seed group (mean ± sd), the hyperparameters that differ, and
    with --baseline paired significance tests per user.

    Sorted by the first metric, best first. Reads each run's metrics.csv (or metrics-val.csv),
    per-user.parquet (for the tests), config.yaml, env.json, timing.json and status.json.

    Example: recsys compare 'runs/*' --baseline runs/BASE --format latex
    """
    from recsys_cli.evaluation import compare_tables
    from recsys_cli.evaluation.compare import compare as compare_runs
    from recsys_cli.evaluation.compare import expand_run_dirs, parse_metric_specs
    from recsys_cli.rundir import RunDirectory

    console.set_verbosity(quiet=quiet, verbose=verbose)
    specs = parse_metric_specs(metrics)
    file_format = compare_tables.resolve_format(fmt.value if fmt else None, output)
    runs = expand_run_dirs(run_dirs)
    base = RunDirectory.open(baseline) if baseline is not None else None
    comparison = compare_runs(runs, specs, baseline=base, test=test.value, correction=correction.value,
                              alpha=alpha, keep_all=keep_all)
    files = compare_tables.write(comparison, file_format, output, force=force)
    compare_tables.print_table(comparison, files)
    console.success(f"{len(comparison.entries)} rows written to {', '.join(str(f) for f in files)}")
    if as_json:
        print_json({
            "rows": comparison.table(),
            "statistics": [] if comparison.statistics is None else comparison.statistics,
            "excluded": [r.name for r in comparison.excluded],
            "files": [str(f) for f in files],
        })


def _number(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.6g}"
