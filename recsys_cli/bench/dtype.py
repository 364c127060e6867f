"""``recsys bench-dtype``: one experiment's speed, memory and accuracy across dtypes on one device.

Plan: resolve the device, make the split once (recorded in the benchmark's env.json), then run
each (dtype, repeat) in a fresh worker process with a timeout. Repeats are interleaved (repeat 1 of
every dtype, then repeat 2, ...) so a machine that slows down during the benchmark penalises every
dtype alike. A dtype the device cannot run is found by a probe before any process starts, or from
the first worker's error; either way it becomes an ``unsupported`` row and its repeats are skipped.

Layout of the benchmark's own run directory::

    <UTC time>-<name>-bench-dtype-<hash>/
        config.yaml env.json status.json log.txt timing.json   (as for every run)
        bench_dtype.csv .md .png .json   summary per dtype      bench_dtype_repeats.csv  every repeat
        runs/      one ordinary run directory per repeat (config, log, model, metrics, timing)
        results/   the worker's JSON result per repeat          logs/  the worker's stdout+stderr
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from recsys_cli import console
from recsys_cli.config import Config
from recsys_cli.devices import DTYPES, describe_device, resolve_device, resolve_dtype
from recsys_cli.errors import ConfigError, DeviceError, RunFailed
from recsys_cli.models.registry import get_model_class
from recsys_cli.rundir import RunDirectory

DEFAULT_DTYPES = ("float32", "float64", "float16", "bfloat16")
DEFAULT_RECOMMENDER_METRICS = ("NDCG", "RECALL")
CLASSIFICATION_METRICS = ("test_accuracy", "test_loss")
BASELINE = "float32"


@dataclass(frozen=True)
class Variant:
    """One row of the report: a dtype, plus TF32 on/off for float32 on CUDA."""

    label: str
    dtype: str
    tf32: bool = False


@dataclass
class BenchResult:
    run_dir: Path
    device: str
    variants: list[Variant]
    repeats: list[dict[str, Any]]  # one worker result per (variant, repeat) actually attempted
    rows: list[dict[str, Any]]  # the summary, one per variant
    metrics: list[str]
    split_fingerprint: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def parse_dtypes(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_DTYPES)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in DTYPES]
    if not names or unknown:
        raise ConfigError(f"--dtypes {text!r}: unknown dtype {', '.join(unknown) or '(none given)'}",
                          hint=f"use a comma-separated subset of {','.join(DTYPES)}")
    return list(dict.fromkeys(names))


def plan_variants(dtypes: list[str], device: torch.device) -> list[Variant]:
    """float32 on CUDA becomes two rows, TF32 matmuls off (the reference) and on."""
    variants: list[Variant] = []
    for name in dtypes:
        variants.append(Variant(name, name, False))
        if name == "float32" and device.type == "cuda":
            variants.append(Variant("float32+tf32", name, True))
    return variants


def probe(variant: Variant, device: torch.device, model_cls: type | None = None) -> str | None:
    """Why ``variant`` cannot run on ``device`` at all (None: worth trying in a worker)."""
    try:
        dtype = resolve_dtype(variant.dtype, device)
    except DeviceError as exc:
        return exc.one_line()
    declared = getattr(model_cls, "supported_dtypes", None)
    if declared is not None and variant.dtype not in declared:
        return f"{model_cls.name} supports only {', '.join(declared)}"
    if variant.tf32 and device.type != "cuda":
        return "TF32 exists only on CUDA"
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return f"bfloat16 is not supported by {torch.cuda.get_device_name(device)}"
    try:
        x = torch.ones(4, 4, dtype=dtype, device=device)
        (x @ x).sum().item()
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        return f"{variant.dtype} matmul on {device.type} failed: {exc}".splitlines()[0]
    return None


def select_metrics(config: Config, task: str, requested: list[str] | None) -> list[str]:
    """The metric columns of the report: ``NAME@k`` for every evaluation cutoff, or classifier names."""
    if task == "classification":
        return list(requested) if requested else list(CLASSIFICATION_METRICS)
    out: list[str] = []
    for name in requested or DEFAULT_RECOMMENDER_METRICS:
        if "@" in name:
            out.append(name)
        else:
            out.extend(f"{name}@{k}" for k in config.evaluation.cutoffs)
    return out


def _bench_config(config: Config, accelerator: str) -> Config:
    out = config.model_copy(deep=True)
    out.experiment.name = f"{config.experiment.name}-bench-dtype"
    out.device.accelerator = accelerator
    return out


def _fingerprint(config: Config, task: str, run: RunDirectory) -> str | None:
    """Make (or reuse) the split once, before any repeat, and return its fingerprint."""
    if task == "classification":
        from recsys_cli.bench.worker import iris_fingerprint

        with run.timing.phase("split"):
            fp = iris_fingerprint(config.model)
        run.update_env(split={"fingerprint": fp, "directory": None})
        return fp
    from recsys_cli.tasks.recommendation import prepare_split

    _dataset, split = prepare_split(config, run)
    return split.fingerprint or None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()
    proc.wait()


def _run_worker(*, config_path: Path, run: RunDirectory, variant: Variant, repeat: int, accelerator: str,
                name: str, fingerprint: str | None, timeout_s: float) -> dict[str, Any]:
    slug = variant.label.replace("+", "-")
    out = run.path / "results" / f"{slug}-r{repeat}.json"
    log = run.path / "logs" / f"{slug}-r{repeat}.log"
    out.parent.mkdir(exist_ok=True)
    log.parent.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "recsys_cli.bench.worker", "--config", str(config_path),
           "--variant", variant.label, "--dtype", variant.dtype, "--tf32", str(int(variant.tf32)),
           "--accelerator", accelerator, "--repeat", str(repeat), "--runs-dir", str(run.path / "runs"),
           "--name", f"{name}-{slug}-r{repeat}", "--out", str(out)]
    if fingerprint:
        cmd += ["--expect-fingerprint", fingerprint]
    env = {**os.environ, "RECSYS_NO_PROGRESS": "1"}
    base = {"variant": variant.label, "dtype": variant.dtype, "tf32": variant.tf32, "repeat": repeat,
            "device": accelerator, "metrics": {}, "log": str(log.relative_to(run.path))}
    start = time.perf_counter()
    with open(log, "wb") as fh:
        # A session of its own, so a timeout kills the worker and anything it started.
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return {**base, "status": "timeout", "reason": f"no result within --timeout {timeout_s:g} s",
                    "process_s": round(time.perf_counter() - start, 6)}
        except BaseException:
            _kill_group(proc)
            raise
    process_s = round(time.perf_counter() - start, 6)
    if out.is_file():
        result = json.loads(out.read_text())
        return {**base, **result, "process_s": process_s, "log": base["log"],
                "result_file": str(out.relative_to(run.path))}
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
    return {**base, "status": "failed", "process_s": process_s,
            "reason": f"worker exited with code {code} without a result" + (f": {tail[0][:200]}" if tail else "")}


def bench_dtype(config: Config, *, dtypes: list[str] | None = None, repeats: int = 3,
                accelerator: str | None = None, timeout_s: float = 3600.0,
                metrics: list[str] | None = None) -> BenchResult:
    """Run the benchmark and write its report; the Python API behind ``recsys bench-dtype``."""
    from recsys_cli.bench import report

    if repeats < 1:
        raise ConfigError(f"--repeats {repeats} must be at least 1", hint="e.g. --repeats 3")
    if timeout_s <= 0:
        raise ConfigError(f"--timeout {timeout_s:g} must be positive", hint="seconds per repeat, e.g. --timeout 600")
    dtypes = list(dtypes or DEFAULT_DTYPES)
    try:
        model_cls = get_model_class(config.model.name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    device = resolve_device(accelerator or config.device.accelerator)
    bench_config = _bench_config(config, device.type)
    metric_names = select_metrics(config, model_cls.task, metrics)
    run = RunDirectory.create(bench_config)
    with run.active():
        run.update_env(device=describe_device(device), bench={"dtypes": dtypes, "repeats": repeats,
                                                               "timeout_s": timeout_s, "metrics": metric_names})
        console.info(f"bench-dtype: {config.model.name} on {describe_device(device)}, dtypes {', '.join(dtypes)}, "
                     f"{repeats} repeat(s) each in fresh processes")
        fingerprint = _fingerprint(bench_config, model_cls.task, run)
        if fingerprint:
            console.info(f"split {fingerprint} made once; every repeat must use it")
        variants = plan_variants(dtypes, device)
        skipped: dict[str, str] = {}
        for v in variants:
            reason = probe(v, device, model_cls)
            if reason:
                skipped[v.label] = reason
                console.warn(f"{v.label}: unsupported on {device.type}: {reason}")
        attempts: list[dict[str, Any]] = []
        todo = [v for v in variants if v.label not in skipped]
        with run.timing.phase("repeats"), console.progress(unit="run") as bar:
            task = bar.add_task("bench-dtype", total=len(todo) * repeats, rate="")
            for r in range(1, repeats + 1):
                for v in todo:
                    if v.label in skipped:
                        bar.update(task, advance=1)
                        continue
                    bar.update(task, rate=f"{v.label} #{r}")
                    res = _run_worker(config_path=run.path / "config.yaml", run=run, variant=v, repeat=r,
                                      accelerator=device.type, name=config.experiment.name,
                                      fingerprint=fingerprint, timeout_s=timeout_s)
                    attempts.append(res)
                    bar.update(task, advance=1)
                    _log_attempt(res)
                    if res["status"] == "unsupported":
                        skipped[v.label] = res.get("reason") or "unsupported"
        rows = report.summarise(variants, attempts, skipped, metric_names, repeats=repeats, device=device.type)
        result = BenchResult(run.path, device.type, variants, attempts, rows, metric_names, fingerprint, skipped)
        what = config.model.name if config.experiment.name == config.model.name else \
            f"{config.experiment.name} ({config.model.name})"
        report.write_all(result, title=f"{what} on {describe_device(device)}", formats=config.run.plot_formats)
        report.print_table(result)
        if rows and all(row["status"] in ("failed", "timeout") for row in rows):
            raise RunFailed("every dtype failed", hint=f"see the worker logs in {run.path / 'logs'}")
    return result


def _log_attempt(res: dict[str, Any]) -> None:
    label = f"{res['variant']} repeat {res['repeat']}"
    if res["status"] == "ok":
        console.info(f"{label}: fit {res['fit_s']:.3f} s, evaluate {res['eval_s']:.3f} s")
    else:
        console.warn(f"{label}: {res['status']}: {res.get('reason')}")


__all__ = ["BenchResult", "Variant", "bench_dtype", "parse_dtypes", "plan_variants", "probe", "select_metrics"]
