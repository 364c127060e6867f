"""`recsys evaluate` and `recsys compare`."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli import console, experiment
from recsys_cli.cli.common import JsonOption, QuietOption, SetOption, handle_errors, parse_cutoffs, print_json
from recsys_cli.errors import ConfigError, RunFailed


@handle_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory made by recsys train/run (or runs/latest)."),
    split: str | None = typer.Option(
        None, "--split", help="Held-out part to evaluate on: val or test (default: the config's evaluation.split)."
    ),
    cutoffs: str | None = typer.Option(
        None, "--cutoffs", help="Comma-separated cutoffs, e.g. 5,10,20 (default: the config's evaluation.cutoffs)."
    ),
    assertions: list[str] = typer.Option(
        [], "--assert", metavar="METRIC@K OP NUMBER",
        help='Fail with exit code 1 unless the bound holds, e.g. --assert "NDCG@10>=0.25" (repeatable).',
    ),
    overrides: list[str] = SetOption,
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Evaluate a trained run from its saved model, without refitting.

    Writes metrics.csv (tidy: cutoff, metric, value), metrics.json and metrics.md into the run
    directory (metrics-val.* for --split val) and prints the key columns; docs/metrics.md defines
    all 27 columns. --cutoffs adds cutoffs to that table (its other rows stay); with --set the
    files go beside it, to RUN_DIR/evaluations/metrics-<split>-k<cutoffs>-set-<hash>.*, recording
    the overrides.
    """
    from recsys_cli.evaluation.report import parse_assertion

    console.set_quiet(quiet)
    if split is not None and split not in ("val", "test"):
        raise ConfigError(f"--split {split!r} is not a held-out part", hint="use --split val or --split test")
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
    result = experiment.evaluate(run_dir, split=split, cutoffs=wanted, overrides=overrides)
    evaluation = result.metrics
    console.success(f"metrics written to {evaluation.extra.get('metrics_file', result.run_dir)}")

    outcomes = []
    for check in checks:
        value = evaluation.value(check.metric, check.cutoff)
        ok = check.check(value)
        outcomes.append({"assertion": check.text, "metric": check.metric, "cutoff": check.cutoff,
                         "value": value if value == value else None, "passed": ok})
        (console.success if ok else console.error)(f"assert {check.describe(value)}")
    if as_json:
        from recsys_cli.evaluation.report import json_records

        print_json({
            "run_dir": str(result.run_dir), "metrics_file": evaluation.extra.get("metrics_file"),
            "n_users_evaluated": evaluation.n_users_evaluated,
            "users_per_second": evaluation.users_per_second, "metrics": json_records(evaluation),
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
    output: Path = typer.Option(
        Path("compare.csv"), "--output", "-o", help="Leaderboard CSV to write; a Markdown copy goes beside it (.md)."
    ),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Leaderboard of several runs: model, data set, split fingerprint, metrics, fit and evaluation time.

    Sorted by the first metric, best first. Reads each run's metrics.csv (or metrics-val.csv),
    env.json and timing.json; writes compare.csv and compare.md.
    """
    from recsys_cli.evaluation.compare import (
        expand_run_dirs,
        leaderboard,
        parse_metric_specs,
        print_leaderboard,
        write_leaderboard,
    )

    console.set_quiet(quiet)
    specs = parse_metric_specs(metrics)
    runs = expand_run_dirs(run_dirs)
    table = leaderboard(runs, specs)
    csv_path, md_path = write_leaderboard(table, output)
    print_leaderboard(table)
    console.success(f"leaderboard of {len(table)} runs written to {csv_path} and {md_path}")
    if as_json:
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        print_json(records)


def _number(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.6g}"
