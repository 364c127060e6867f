"""One measured repeat of ``recsys bench-dtype``, run as ``python -m recsys_cli.bench.worker``.

The parent starts one fresh process per (dtype, repeat) so that peak memory is this repeat's own.
The worker runs the experiment through :func:`recsys_cli.experiment.run` (the code path of
``recsys run``), leaving an ordinary run directory under ``--runs-dir``, and writes one JSON result
(``--out``) whatever happens: ``ok``, ``nan`` (finite run, non-finite metric), ``unsupported`` (the
dtype/device/operation combination is not available) or ``failed``. Its exit code is 0 whenever that
file was written; the parent reads the status from the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Set to a comma-separated list of variant labels or dtypes (e.g. "float16") to make those repeats
# fail on purpose: lets tests and users check that one broken dtype leaves the other rows intact.
# "float16:unsupported" raises the error torch gives for a missing low-precision kernel instead.
FAIL_ENV = "RECSYS_BENCH_FAIL"

# Phrases torch and our models use when a dtype/device/operation combination does not exist, as
# opposed to a run that went wrong ("addmm_sparse_csr" not implemented for 'Half', ...).
_UNSUPPORTED_PHRASES = (
    "not implemented for",
    "not supported",
    "unsupported",
    "low precision dtypes",
    "does not support",
    "no kernel image",
    "is not available",
)


def classify_error(exc: BaseException) -> str:
    """``unsupported`` for a missing dtype/device capability, else ``failed``."""
    from recsys_cli.errors import DeviceError, RecsysError

    if isinstance(exc, (DeviceError, NotImplementedError)):
        return "unsupported"
    if isinstance(exc, RecsysError):
        # A model refuses a dtype with DeviceError (above); any other of our errors (NaN loss, bad
        # data, a memory guard, ...) is a failed repeat, whatever its wording.
        return "failed"
    if isinstance(exc, (RuntimeError, TypeError)):
        text = str(exc).lower()
        if any(phrase in text for phrase in _UNSUPPORTED_PHRASES):
            return "unsupported"
    return "failed"


def error_line(exc: BaseException) -> str:
    from recsys_cli.errors import RecsysError

    text = exc.one_line() if isinstance(exc, RecsysError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def metrics_of(result_metrics: Any) -> dict[str, float]:
    """Flatten a run's metrics: ``NDCG@10`` for recommenders, ``test_accuracy`` for classifiers."""
    if result_metrics is None:
        return {}
    out: dict[str, float] = {}
    if isinstance(result_metrics, list):
        for row in result_metrics:
            key = f"{row['split']}_{row['metric']}" if "split" in row else str(row["metric"])
            if "cutoff" in row:
                key = f"{row['metric']}@{int(row['cutoff'])}"
            # metrics.json stores NaN/inf as null
            out[key] = math.nan if row["value"] is None else float(row["value"])
        return out
    if hasattr(result_metrics, "to_records"):
        for row in result_metrics.to_records():
            out[f"{row['metric']}@{int(row['cutoff'])}"] = float(row["value"])
    return out


def iris_fingerprint(model_config: Any) -> str:
    """Hash of the Iris train/test arrays that mlp-iris will use (its split is a pure function of the config)."""
    from recsys_cli.models.mlp_iris import load_iris_split

    data = load_iris_split(model_config)
    digest = hashlib.sha256()
    for tensor in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(tensor.numpy().tobytes())
    return "iris-" + digest.hexdigest()[:16]


def computed_as(run_dir: Path) -> str | None:
    """The dtype a model says it really computed in (``compute_dtype`` in model.json, top level or under
    ``fit``), e.g. a closed-form model that solves in float32 when asked for float16."""
    try:
        meta = json.loads((run_dir / "model" / "model.json").read_text())
    except (OSError, ValueError):
        return None
    found = meta.get("compute_dtype") or (meta.get("fit") or {}).get("compute_dtype")
    return str(found).replace("torch.", "") if found else None


class _MPSPeak:
    """MPS has no peak-allocation counter: sample the driver's allocation every 10 ms instead."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, int(self._torch.mps.driver_allocated_memory()))

    def _loop(self) -> None:
        while not self._stop.wait(0.01):
            self._sample()

    def __enter__(self) -> _MPSPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _run_dirs(runs_dir: Path) -> set[Path]:
    return {p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink()} if runs_dir.is_dir() else set()


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib

    import torch

    from recsys_cli import experiment
    from recsys_cli.config import load_config
    from recsys_cli.devices import current_rss_bytes, peak_rss_bytes, resolve_device
    from recsys_cli.errors import DataError, RunFailed
    from recsys_cli.models.registry import get_model_class

    result: dict[str, Any] = {
        "variant": args.variant, "dtype": args.dtype, "tf32": bool(args.tf32), "repeat": args.repeat,
        "device": args.accelerator, "status": "failed", "reason": None, "fit_s": None, "eval_s": None,
        "total_s": None, "peak_memory_bytes": None, "memory_kind": None, "peak_rss_bytes": None,
        "rss_after_import_bytes": current_rss_bytes(), "metrics": {}, "run_dir": None, "computed_as": None,
        "split_fingerprint": None, "torch_threads": torch.get_num_threads(),
    }
    runs_dir = Path(args.runs_dir)
    device = resolve_device(args.accelerator, log=False)
    if device.type == "cuda":
        # Both switches: "TF32 off" must mean no TF32 in convolutions either (cuDNN defaults to on).
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        torch.cuda.reset_peak_memory_stats()
    mps_peak = _MPSPeak() if device.type == "mps" else contextlib.nullcontext()
    runs_before = _run_dirs(runs_dir)
    try:
        forced = dict(part.strip().partition(":")[::2] for part in os.environ.get(FAIL_ENV, "").split(",")
                      if part.strip())
        how = forced.get(args.variant, forced.get(args.dtype))
        if how == "unsupported":
            raise NotImplementedError(f'"forced_kernel" not implemented for {args.dtype!r} ({FAIL_ENV})')
        if how is not None:
            raise RunFailed(f"forced failure of {args.variant} (environment variable {FAIL_ENV})")
        overrides = [
            f"device.dtype={args.dtype}", f"device.accelerator={args.accelerator}",
            f"device.tf32={'true' if args.tf32 else 'false'}",
            f"experiment.runs_dir={runs_dir}", f"experiment.name={args.name}",
        ]
        config = load_config(args.config, overrides, env={})
        if get_model_class(config.model.name).task == "classification":
            result["split_fingerprint"] = iris_fingerprint(config.model)
            if args.expect_fingerprint and result["split_fingerprint"] != args.expect_fingerprint:
                raise DataError(f"Iris split {result['split_fingerprint']} differs from the benchmark's "
                                f"{args.expect_fingerprint}", hint="rerun recsys bench-dtype")
        with mps_peak:
            outcome = experiment.run(config)
        result["run_dir"] = str(outcome.run_dir)
        timing = json.loads((outcome.run_dir / "timing.json").read_text())
        seconds = timing.get("seconds", {})
        result["fit_s"] = seconds.get("fit")
        result["eval_s"] = seconds.get("evaluate", 0.0)
        result["total_s"] = (result["fit_s"] or 0.0) + (result["eval_s"] or 0.0)
        env = json.loads((outcome.run_dir / "env.json").read_text())
        if isinstance(env.get("split"), dict):
            result["split_fingerprint"] = env["split"].get("fingerprint")
            if args.expect_fingerprint and result["split_fingerprint"] != args.expect_fingerprint:
                raise DataError(f"the run used split {result['split_fingerprint']}, not the benchmark's "
                                f"{args.expect_fingerprint}", hint="rerun recsys bench-dtype")
        result["computed_as"] = computed_as(outcome.run_dir)
        result["metrics"] = metrics_of(outcome.metrics)
        bad = sorted(k for k, v in result["metrics"].items() if not math.isfinite(v))
        if bad:
            result["status"] = "nan"
            result["reason"] = "non-finite metrics: " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        else:
            result["status"] = "ok"
    except Exception as exc:  # the whole point: any failure becomes a row, never a crash of the benchmark
        result["status"] = classify_error(exc)
        result["reason"] = error_line(exc)
        created = _run_dirs(runs_dir) - runs_before
        if result["run_dir"] is None and len(created) == 1:
            result["run_dir"] = str(created.pop())
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            # A repeat that failed after fitting still says how long the fit took (repeats CSV only).
            seconds = json.loads((Path(result["run_dir"]) / "timing.json").read_text())["seconds"]
            result["fit_s"], result["eval_s"] = seconds.get("fit"), seconds.get("evaluate")
    result["peak_rss_bytes"] = peak_rss_bytes()
    if device.type == "cuda":
        result["peak_memory_bytes"], result["memory_kind"] = int(torch.cuda.max_memory_allocated()), "cuda_allocated"
    elif device.type == "mps":
        result["peak_memory_bytes"], result["memory_kind"] = int(mps_peak.peak), "mps_driver"
    else:
        result["peak_memory_bytes"], result["memory_kind"] = result["peak_rss_bytes"], "rss"
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m recsys_cli.bench.worker", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="resolved config YAML (the benchmark's config.yaml)")
    p.add_argument("--variant", required=True, help="row label, e.g. float32+tf32")
    p.add_argument("--dtype", required=True)
    p.add_argument("--tf32", type=int, choices=(0, 1), default=0)
    p.add_argument("--accelerator", required=True, choices=("cpu", "cuda", "mps"))
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--runs-dir", required=True, help="where this repeat's run directory goes")
    p.add_argument("--name", required=True, help="experiment.name of this repeat's run")
    p.add_argument("--expect-fingerprint", default=None, help="split fingerprint the run must use")
    p.add_argument("--out", required=True, help="result JSON to write")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    from recsys_cli import atomic

    try:
        result = run_once(args)
    except Exception as exc:  # device resolution or imports failed before the run could start
        result = {"variant": args.variant, "dtype": args.dtype, "tf32": bool(args.tf32), "repeat": args.repeat,
                  "device": args.accelerator, "status": classify_error(exc), "reason": error_line(exc),
                  "metrics": {}}
    result["worker_s"] = round(time.perf_counter() - start, 6)
    atomic.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
