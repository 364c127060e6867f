"""`recsys bench-dtype`: one experiment's speed, memory and accuracy across dtypes."""

from __future__ import annotations

from pathlib import Path

import typer

from recsys_cli import console
from recsys_cli.cli.common import (
    Accelerator,
    ConfigArgument,
    JsonOption,
    QuietOption,
    SetOption,
    VerboseOption,
    handle_errors,
    load,
    print_json,
)


@handle_errors
def bench_dtype(
    config: Path = ConfigArgument,
    dtypes: str = typer.Option(
        "float32,float64,float16,bfloat16", "--dtypes",
        help="Comma-separated dtypes to compare (float32 is the reference).",
    ),
    repeats: int = typer.Option(
        3, "--repeats", "-r", help="Fresh-process runs per dtype (median, min and max are reported)."
    ),
    device: Accelerator | None = typer.Option(
        None, "--device",
        help="Device to benchmark on (default: the config's device.accelerator).",
    ),
    metrics: str | None = typer.Option(
        None, "--metrics",
        help="Metric columns: evaluator names (each at every evaluation cutoff, or NAME@k), default NDCG,RECALL; "
             "mlp-iris: test_accuracy,test_loss.",
    ),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds one repeat may take before it is killed."),
    overrides: list[str] = SetOption,
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
    verbose: bool = VerboseOption,
) -> None:
    """Fit and evaluate CONFIG in each dtype, each repeat in a fresh process, and compare.

    Reports per dtype the median [min–max] fit, evaluation and total seconds, peak memory (process RSS
    on CPU, peak allocated memory on CUDA/MPS) and the metrics with their difference from float32; on
    CUDA float32 runs with TF32 matmuls off and on. The split is made once, before the repeats.
    Unsupported dtype/device combinations and failed repeats become rows saying so. Writes
    bench_dtype.csv/.md/.png/.json in a run directory of its own (every repeat's run under runs/).

    Example: recsys bench-dtype configs/ease.yaml --dtypes float32,bfloat16 --repeats 1
    """
    from recsys_cli.bench.dtype import bench_dtype as run_bench
    from recsys_cli.bench.dtype import parse_dtypes
    from recsys_cli.bench.report import as_json as result_json

    console.set_verbosity(quiet=quiet, verbose=verbose)
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    result = run_bench(load(config, overrides), dtypes=parse_dtypes(dtypes), repeats=repeats, accelerator=device.value if device else None,
                       timeout_s=timeout, metrics=names)
    console.success(f"bench-dtype finished: {result.run_dir}")
    if as_json:
        print_json(result_json(result))
