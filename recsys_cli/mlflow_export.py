"""Copy run directories into MLflow (``recsys export mlflow``); the run directory stays the source of truth.

Each run directory becomes one MLflow run, named after the directory, with:

- params: the resolved config.yaml flattened to dotted keys (``model.l2_norm``; lists as their text);
- metrics: the final table, ``NAME@K`` → ``NAME_at_K`` (MLflow metric names cannot hold ``@``;
  validation tables get a ``val_`` prefix, tables without cutoffs ``<split>_<metric>``), non-finite values
  left out; the per-epoch log (train_log.csv, or loss_curve.csv of mlp-iris) as histories
  ``train.<column>`` with step = epoch; timing.json's seconds as ``seconds_<phase>``;
- tags: ``recsys.run_id`` (the directory's name), ``recsys.split_fingerprint``, ``recsys.git_commit`` and
  MLflow's ``mlflow.source.git.commit``, ``recsys.status``, ``recsys.model``, ``recsys.dataset``,
  ``recsys.digest`` (of the files exported);
- artifacts: every file of the run directory (``include_model=False`` leaves model/ and checkpoints/ out).

Exporting again finds the MLflow run by its ``recsys.run_id`` tag: unchanged runs are skipped, and a run
whose files changed since (re-evaluated, finished) replaces its MLflow run, so there is one per directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recsys_cli import console
from recsys_cli.errors import RecsysError
from recsys_cli.rundir import RunDirectory, load_yaml

RUN_ID_TAG = "recsys.run_id"
DIGEST_TAG = "recsys.digest"
EPOCH_LOGS = ("train_log.csv", "loss_curve.csv")
DIGESTED = ("config.yaml", "status.json", "metrics.csv", "metrics-val.csv", "timing.json", *EPOCH_LOGS)
MODEL_FOLDERS = ("model", "checkpoints")
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
BATCH = 100  # MLflow's limit of params (and tags) per log_batch call


def import_mlflow():
    import logging

    try:
        import mlflow
    except ImportError:
        raise RecsysError("MLflow is not installed", hint="pip install 'recsys-cli[mlflow]'") from None
    for name in ("mlflow", "alembic"):  # their INFO lines (database migrations) are not ours to print
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def default_artifact_location(tracking_uri: str | None) -> str | None:
    """For a new experiment in an SQLite store: mlartifacts/ beside the database file (MLflow's own
    default is ./mlruns of whatever folder the command runs in)."""
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///"):]).expanduser().resolve()
        return (database.parent / "mlartifacts").as_uri()
    return None


def metric_key(name: str) -> str:
    """An MLflow-safe metric or param name: ``@`` becomes ``_at_``, other unsupported characters ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", str(name).replace("@", "_at_"))


def params_of(config: dict[str, Any]) -> dict[str, str]:
    """The config flattened to dotted keys (evaluation.groups.flatten), values as text (None as null)."""
    from recsys_cli.evaluation.groups import flatten

    return {metric_key(k): "null" if v is None else str(v) for k, v in flatten(config).items()}


def final_metrics(run_path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for stem, prefix in (("metrics", ""), ("metrics-val", "val_")):
        path = run_path / f"{stem}.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if not {"metric", "value"} <= set(frame.columns):
            continue
        for row in frame.to_dict(orient="records"):
            if "cutoff" in row:
                name = f"{row['metric']}@{int(row['cutoff'])}"
            elif "split" in row:
                name = f"{row['split']}_{row['metric']}"
            else:
                name = str(row["metric"])
            value = pd.to_numeric(row["value"], errors="coerce")
            if math.isfinite(value):
                out[metric_key(prefix + name)] = float(value)
    return out


def epoch_histories(run_path: Path) -> list[tuple[str, int, float]]:
    """(key, epoch, value) of every numeric cell of the run's per-epoch log."""
    for name in EPOCH_LOGS:
        path = run_path / name
        if path.is_file():
            frame = pd.read_csv(path)
            if "epoch" not in frame:
                return []
            rows = []
            for column in frame.columns:
                if column == "epoch":
                    continue
                values = pd.to_numeric(frame[column], errors="coerce")
                rows += [(metric_key(f"train.{column}"), int(e), float(v))
                         for e, v in zip(frame["epoch"], values) if math.isfinite(v)]
            return rows
    return []


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def digest(run_path: Path) -> str:
    """What the export saw: the contents of the small files that describe the run, and the name and size
    of every file (a new or rewritten file, recommendations say, changes it; the model is not read)."""
    h = hashlib.sha256()
    for name in DIGESTED:
        path = run_path / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    for path in sorted(p for p in run_path.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(run_path)}\0{path.stat().st_size}\0".encode())
    return h.hexdigest()[:16]


def _millis(stamp: str | None) -> int | None:
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return int(dt.datetime.strptime(stamp or "", fmt).replace(tzinfo=dt.UTC).timestamp() * 1000)
        except ValueError:
            continue
    return None


@dataclass
class ExportResult:
    tracking_uri: str
    experiment: str
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    mlflow_run_ids: dict[str, str] = field(default_factory=dict)  # run directory name → MLflow run id


def export_runs(run_dirs: list[RunDirectory | str | Path], *, tracking_uri: str | None = None,
                experiment: str = "recsys", include_model: bool = True,
                artifact_location: str | None = None) -> ExportResult:
    """Export each run directory into the MLflow experiment ``experiment`` at ``tracking_uri``
    (``artifact_location`` applies when the experiment is created here)."""
    run_dirs = [r if isinstance(r, RunDirectory) else RunDirectory.open(r) for r in run_dirs]
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    try:
        return _export(mlflow, run_dirs, tracking_uri, experiment, include_model, artifact_location)
    except MlflowException as exc:
        reason = " ".join(str(exc.message if hasattr(exc, "message") else exc).split())
        raise RecsysError(f"MLflow refused the export: {reason[:300]}",
                          hint="check --tracking-uri (e.g. sqlite:///mlflow.db) and the store's permissions") from None


def _export(mlflow, run_dirs: list[RunDirectory], tracking_uri: str | None, experiment: str, include_model: bool,
            artifact_location: str | None) -> ExportResult:
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    uri = tracking_uri or mlflow.get_tracking_uri()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        experiment_id = client.create_experiment(
            experiment, artifact_location=artifact_location or default_artifact_location(uri))
    result = ExportResult(uri, experiment)
    for run in run_dirs:
        name = run.path.name
        current = digest(run.path)
        existing = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{name}'")
        if any(r.data.tags.get(DIGEST_TAG) == current for r in existing):
            result.unchanged.append(name)
            result.mlflow_run_ids[name] = next(r.info.run_id for r in existing if r.data.tags.get(DIGEST_TAG) == current)
            continue
        for old in existing:  # the directory changed since it was exported: one MLflow run per directory
            client.delete_run(old.info.run_id)
        config = load_yaml(run.path / "config.yaml") or {}
        env = _read_json(run.path / "env.json")
        status = run.status()
        split = env.get("split") if isinstance(env.get("split"), dict) else {}
        tags = {
            RUN_ID_TAG: name, DIGEST_TAG: current, "recsys.status": status.get("status", "unknown"),
            "recsys.split_fingerprint": split.get("fingerprint", ""), "recsys.git_commit": env.get("git_commit") or "",
            "mlflow.source.git.commit": env.get("git_commit") or "", "recsys.path": str(run.path),
            "recsys.model": (config.get("model") or {}).get("name", ""),
            "recsys.dataset": (config.get("data") or {}).get("dataset", ""),
            "recsys.experiment": (config.get("experiment") or {}).get("name", ""),
        }
        created = client.create_run(experiment_id, start_time=_millis(name[:16]), run_name=name, tags=tags)
        run_id = created.info.run_id
        params = [Param(k, v) for k, v in params_of(config).items()]
        timestamp = _millis(status.get("updated")) or created.info.start_time
        metrics = [Metric(k, v, timestamp, 0) for k, v in final_metrics(run.path).items()]
        seconds = _read_json(run.path / "timing.json").get("seconds") or {}
        metrics += [Metric(metric_key(f"seconds_{k}"), float(v), timestamp, 0)
                    for k, v in seconds.items() if isinstance(v, (int, float)) and math.isfinite(v)]
        metrics += [Metric(k, v, timestamp, step) for k, step, v in epoch_histories(run.path)]
        for lo in range(0, max(len(params), len(metrics)), BATCH):
            client.log_batch(run_id, metrics=metrics[lo:lo + BATCH], params=params[lo:lo + BATCH],
                             tags=[RunTag(k, str(v)) for k, v in tags.items()] if lo == 0 else [])
        for path in sorted(run.path.iterdir()):
            if path.name.startswith(".") or (not include_model and path.name in MODEL_FOLDERS):
                continue
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                client.log_artifact(run_id, str(path))
        if status.get("status") != "running":
            client.set_terminated(run_id, status=STATUS.get(status.get("status"), "FINISHED"), end_time=timestamp)
        (result.replaced if existing else result.created).append(name)
        result.mlflow_run_ids[name] = run_id
        console.info(f"{name}: {'replaced' if existing else 'exported as'} MLflow run {run_id}")
    return result
