"""``train_log.csv`` (one row per epoch) and ``train_curve.png`` (loss and validation metric)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from recsys_cli import atomic

LOG_NAME = "train_log.csv"
CURVE_NAME = "train_curve.png"


def write_log(run_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    path = Path(run_dir) / LOG_NAME
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic.write_text(path, buf.getvalue())
    return path


def curve_title(run_dir: str | Path, model_name: str, metric_name: str) -> str:
    """"<run folder> — <model> on <data set>": a curve saved on its own still says what it shows."""
    import yaml

    dataset = "?"
    try:
        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
        dataset = str(config.get("data", {}).get("dataset", "?"))
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return f"{Path(run_dir).name}\n{model_name} on {dataset}: loss and validation {metric_name}"


def write_curve(run_dir: str | Path, rows: list[dict[str, Any]], *, metric_name: str, title: str = "",
                resumed_after: list[int] | tuple[int, ...] = (), formats: tuple[str, ...] | list[str] = ("png",),
                ) -> Path | None:
    """Loss (left axis) and validation metric (right axis) per epoch; the best epoch is marked.

    ``resumed_after`` lists the epochs after which the run was resumed (a dashed line each);
    ``formats`` are the files written besides nothing else: png, pdf, svg. Returns the first path.
    """
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    loss = [r["loss"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(epochs, loss, color="tab:blue", marker=".", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    val = [(r["epoch"], r["val_metric"]) for r in rows if _is_number(r.get("val_metric"))]
    if val:
        ax2 = ax.twinx()
        ax2.plot([e for e, _ in val], [v for _, v in val], color="tab:orange", marker="o", label=f"val {metric_name}")
        ax2.set_ylabel(f"validation {metric_name}", color="tab:orange")
        best = max(val, key=lambda ev: ev[1])
        ax2.axvline(best[0], color="gray", linestyle=":", linewidth=1)
        ax2.annotate(f"best {best[1]:.4f} @ {best[0]}", xy=best, xytext=(5, -12), textcoords="offset points",
                     fontsize=8)
    for epoch in resumed_after:
        ax.axvline(epoch + 0.5, color="tab:red", linestyle="--", linewidth=1)
        ax.annotate("resumed", xy=(epoch + 0.5, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="tab:red")
    ax.set_title(title or "training curve", fontsize=9)
    fig.tight_layout()
    paths = save_figure(fig, Path(run_dir) / CURVE_NAME, formats)
    plt.close(fig)
    return paths[0] if paths else None


def save_figure(fig: Any, png_path: Path, formats: tuple[str, ...] | list[str] = ("png",)) -> list[Path]:
    """Save a matplotlib figure atomically in each format (same stem as ``png_path``)."""
    paths = []
    for fmt in dict.fromkeys(formats):
        path = png_path.with_suffix(f".{fmt}")
        with atomic.atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(path)
    return paths


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)
