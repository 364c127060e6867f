"""Summary of a ``bench-dtype`` run: per-dtype statistics, then a rich table, CSV, Markdown, JSON and a PNG."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from recsys_cli import atomic, console

if TYPE_CHECKING:
    from recsys_cli.bench.dtype import BenchResult, Variant

MEASURED = ("ok", "nan")  # repeats that ran to the end, so their timings are real
TIMES = ("fit_s", "eval_s", "total_s")


def _stats(values: list[float]) -> tuple[float | None, float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def _median_metric(values: list[float]) -> float | None:
    if not values:
        return None
    # One non-finite repeat makes the row's metric non-finite: a median would hide it.
    if any(not math.isfinite(v) for v in values):
        return math.nan
    return statistics.median(values)


def _row_status(label: str, attempts: list[dict[str, Any]], skipped: dict[str, str]) -> tuple[str, str | None]:
    reasons = [a.get("reason") for a in attempts if a["status"] != "ok" and a.get("reason")]
    if not attempts or all(a["status"] == "unsupported" for a in attempts):
        return "unsupported", skipped.get(label) or (reasons[0] if reasons else None)
    statuses = {a["status"] for a in attempts}
    if statuses == {"ok"}:
        return "ok", None
    if len(statuses) == 1:
        return attempts[0]["status"], reasons[0] if reasons else None
    n_ok = sum(a["status"] == "ok" for a in attempts)
    return f"{n_ok}/{len(attempts)} ok", reasons[0] if reasons else None


def summarise(variants: list[Variant], attempts: list[dict[str, Any]], skipped: dict[str, str],
              metric_names: list[str], *, repeats: int, device: str) -> list[dict[str, Any]]:
    """One row per variant: status, median/min/max times, peak memory, metrics and deltas vs float32."""
    from recsys_cli.bench.dtype import BASELINE

    rows: list[dict[str, Any]] = []
    for v in variants:
        mine = [a for a in attempts if a["variant"] == v.label]
        measured = [a for a in mine if a["status"] in MEASURED]
        status, reason = _row_status(v.label, mine, skipped)
        row: dict[str, Any] = {"variant": v.label, "dtype": v.dtype, "tf32": v.tf32, "device": device,
                               "status": status, "reason": reason, "repeats_ok": sum(a["status"] == "ok" for a in mine),
                               "repeats_run": len(mine), "repeats": repeats}
        for key in TIMES:
            med, lo, hi = _stats([a.get(key) for a in measured])
            row[f"{key}_median"], row[f"{key}_min"], row[f"{key}_max"] = med, lo, hi
        mem = [a.get("peak_memory_bytes") for a in measured if a.get("peak_memory_bytes") is not None]
        row["peak_memory_bytes_median"] = int(statistics.median(mem)) if mem else None
        row["peak_memory_bytes_max"] = max(mem) if mem else None
        base_rss = [a.get("rss_after_import_bytes") for a in measured if a.get("rss_after_import_bytes") is not None]
        row["rss_after_import_bytes_median"] = int(statistics.median(base_rss)) if base_rss else None
        row["memory_kind"] = next((a.get("memory_kind") for a in measured if a.get("memory_kind")), None)
        computed = sorted({a["computed_as"] for a in measured if a.get("computed_as")} - {v.dtype})
        row["computed_as"] = ",".join(computed) or None
        if computed and row["reason"] is None:
            row["reason"] = f"the model computed in {row['computed_as']}, not {v.dtype}"
        if computed and status == "ok":
            row["status"] = f"ok ({row['computed_as']})"
        for name in metric_names:
            row[name] = _median_metric([a["metrics"][name] for a in measured if name in a.get("metrics", {})])
        rows.append(row)
    base = next((r for r in rows if r["variant"] == BASELINE and r["total_s_median"] is not None), None)
    for row in rows:
        ok = base is not None and row["total_s_median"] is not None
        row["speedup_vs_float32"] = (base["total_s_median"] / row["total_s_median"]
                                     if ok and row["total_s_median"] > 0 else None)
        for name in metric_names:
            have = ok and row[name] is not None and base[name] is not None
            row[f"{name}_delta"] = row[name] - base[name] if have else None
    return rows


# -- formatting ----------------------------------------------------------------------------------
def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def fmt_range(row: dict[str, Any], key: str) -> str:
    med, lo, hi = row[f"{key}_median"], row[f"{key}_min"], row[f"{key}_max"]
    if med is None:
        return "-"
    if lo == hi:
        return fmt_s(med)
    return f"{fmt_s(med)} [{fmt_s(lo)}–{fmt_s(hi)}]"


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    mib = value / 2**20
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


def fmt_delta(delta: float) -> str:
    if not math.isfinite(delta):
        return "nan"
    if delta == 0:
        return "±0"
    # Low-precision dtypes often move a metric by less than 1e-4: keep those differences visible.
    return f"{delta:+.1e}" if abs(delta) < 1e-3 else f"{delta:+.4f}"


def fmt_metric(row: dict[str, Any], name: str) -> str:
    value, delta = row.get(name), row.get(f"{name}_delta")
    if value is None:
        return "-"
    text = f"{value:.4f}" if math.isfinite(value) else "nan"
    if delta is not None and row["variant"] != "float32":
        text += f" ({fmt_delta(delta)})"
    return text


def fmt_speedup(row: dict[str, Any]) -> str:
    s = row.get("speedup_vs_float32")
    return "-" if s is None else f"×{s:.2f}"


def display_rows(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    kind = next((r["memory_kind"] for r in result.rows if r["memory_kind"]), "rss")
    mem_label = {"rss": "peak RSS", "cuda_allocated": "peak CUDA alloc", "mps_driver": "peak MPS alloc"}[kind]
    header = ["dtype", "status", "fit s", "eval s", "total s", "vs float32", mem_label,
              *[f"{m} (Δ)" for m in result.metrics]]
    body = []
    for row in result.rows:
        body.append([row["variant"], row["status"], fmt_range(row, "fit_s"), fmt_range(row, "eval_s"),
                     fmt_range(row, "total_s"), fmt_speedup(row), fmt_bytes(row["peak_memory_bytes_median"]),
                     *[fmt_metric(row, m) for m in result.metrics]])
    return header, body


def notes(result: BenchResult) -> list[str]:
    out = [f"{row['variant']}: {row['status']}: {row['reason']}" for row in result.rows if row["reason"]]
    return out


def print_table(result: BenchResult) -> None:
    out = console.console
    if not out.is_terminal:
        from rich.console import Console

        # Logs and pipes get the whole table instead of an 80-column squeeze.
        out = Console(stderr=True, width=250, highlight=False)
    out.print(table_of(result))
    for line in notes(result):
        console.info(line)
    console.info(f"report: {result.run_dir / 'bench_dtype.md'} (also .csv, .png, .json)")


def table_of(result: BenchResult):
    """The terminal table (a rich Table)."""
    from rich.table import Table

    header, body = display_rows(result)
    from rich.markup import escape

    repeats = result.rows[0]["repeats"] if result.rows else 0
    table = Table(title=escape(f"bench-dtype on {result.device}: median [min–max] of {repeats} repeat(s); "
                               "Δ = difference from float32"))
    # At 80 columns the figures wrap inside their cells; the dtype names never shrink or wrap.
    widths = [max(len(name), *(len(cells[0]) for cells in body)) if body else len(name) for name in header[:1]]
    for i, name in enumerate(header):
        if i == 0:
            table.add_column(escape(name), justify="left", no_wrap=True, min_width=widths[0])
        else:
            table.add_column(escape(name), justify="left" if i < 2 else "right", overflow="fold")
    style = {"ok": None, "unsupported": "dim", "failed": "red", "timeout": "red", "nan": "yellow"}
    for row, cells in zip(result.rows, body):
        table.add_row(*(escape(c) for c in cells), style=style.get(row["status"], "yellow"))
    return table


def markdown(result: BenchResult, title: str) -> str:
    header, body = display_rows(result)
    lines = [f"# bench-dtype: {title}", "",
             f"Median [min–max] over the successful repeats (each in a fresh process); Δ is the difference from "
             f"float32; `vs float32` is float32's median total time divided by this row's. "
             f"Split fingerprint: `{result.split_fingerprint or '-'}`.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    base = [a["rss_after_import_bytes"] for a in result.repeats if a.get("rss_after_import_bytes")]
    if base and any(r["memory_kind"] == "rss" for r in result.rows):
        lines += ["", f"Peak RSS includes about {fmt_bytes(int(statistics.median(base)))} that Python and torch "
                      "occupy right after import (`rss_after_import_bytes` in the repeats CSV)."]
    if notes(result):
        lines += ["", "Notes:", ""] + [f"- {line}" for line in notes(result)]
    lines += ["", "Per-repeat numbers: `bench_dtype_repeats.csv`; each repeat's own run directory is under `runs/`.",
              ""]
    return "\n".join(lines)


REPEAT_COLUMNS = ["variant", "dtype", "tf32", "repeat", "status", "reason", "computed_as", "fit_s", "eval_s",
                  "total_s", "process_s", "peak_memory_bytes", "memory_kind", "peak_rss_bytes",
                  "rss_after_import_bytes", "split_fingerprint", "run_dir", "log"]


def write_all(result: BenchResult, *, title: str, formats: tuple[str, ...] | list[str] = ("png",)) -> None:
    import pandas as pd

    run_dir = result.run_dir
    with atomic.atomic_path(run_dir / "bench_dtype.csv") as tmp:
        pd.DataFrame(result.rows).to_csv(tmp, index=False)
    flat = []
    for a in result.repeats:
        row = {k: a.get(k) for k in REPEAT_COLUMNS}
        row.update({name: a.get("metrics", {}).get(name) for name in result.metrics})
        flat.append(row)
    with atomic.atomic_path(run_dir / "bench_dtype_repeats.csv") as tmp:
        pd.DataFrame(flat, columns=REPEAT_COLUMNS + result.metrics).to_csv(tmp, index=False)
    atomic.write_text(run_dir / "bench_dtype.md", markdown(result, title))
    atomic.write_json(run_dir / "bench_dtype.json", as_json(result))
    plot(result, title, formats)


def _strict(obj: Any) -> Any:
    """NaN/inf → null, so bench_dtype.json and --json are standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def as_json(result: BenchResult) -> dict[str, Any]:
    return _strict({"run_dir": str(result.run_dir), "device": result.device,
                    "split_fingerprint": result.split_fingerprint, "metrics": result.metrics,
                    "rows": result.rows, "repeats": result.repeats})


def memory_above_import_mib(row: dict[str, Any]) -> float | None:
    """Peak memory the work itself took: on the CPU, peak RSS minus the RSS right after the imports.

    Process RSS starts at several hundred MiB of torch and NumPy code; subtracting it makes dtypes
    comparable (a float16 model that halves the data shows as half). CUDA/MPS counters start at zero.
    """
    peak = row.get("peak_memory_bytes_median")
    if peak is None:
        return None
    base = row.get("rss_after_import_bytes_median") if row.get("memory_kind") in (None, "rss") else 0
    return max(peak - (base or 0), 0) / 2**20


def plot(result: BenchResult, title: str, formats: tuple[str, ...] | list[str] = ("png",)) -> None:
    """Three panels: median fit + evaluate time per dtype (min–max whiskers, the first metric's Δ on
    each bar), peak memory above the import baseline, and the first metric against total time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsys_cli.training.curves import save_figure

    rows = result.rows
    labels = [r["variant"] for r in rows]
    fit = [r["fit_s_median"] or 0.0 for r in rows]
    ev = [r["eval_s_median"] or 0.0 for r in rows]
    total = [r["total_s_median"] or 0.0 for r in rows]  # the table's figure (a median of sums)
    lo = [max(t - (r["total_s_min"] if r["total_s_min"] is not None else t), 0.0) for t, r in zip(total, rows)]
    hi = [max((r["total_s_max"] if r["total_s_max"] is not None else t) - t, 0.0) for t, r in zip(total, rows)]
    mem = [memory_above_import_mib(r) for r in rows]
    primary = result.metrics[0] if result.metrics else None

    fig, (ax_t, ax_m, ax_a) = plt.subplots(1, 3, figsize=(max(11.0, 2.2 * len(rows) + 7), 4.8),
                                           gridspec_kw={"width_ratios": [3, 2, 2]})
    x = list(range(len(rows)))
    ax_t.bar(x, fit, color="#4C72B0", label="fit")
    ax_t.bar(x, ev, bottom=fit, color="#DD8452", label="evaluate")
    ax_t.errorbar(x, total, yerr=[lo, hi], fmt="none", ecolor="black", capsize=4, linewidth=1)
    top = max([t + h for t, h in zip(total, hi)] + [1e-9])
    for i, row in enumerate(rows):
        if row["total_s_median"] is None:
            ax_t.text(i, top * 0.02, row["status"], ha="center", va="bottom", rotation=90, color="#999999")
            continue
        text = fmt_s(total[i]) + " s"
        if primary is not None and row.get(primary) is not None:
            delta = row.get(f"{primary}_delta")
            if row["variant"] == "float32":
                text += f"\n{primary}\n{row[primary]:.4f}"
            elif delta is not None:
                text += f"\nΔ{primary}\n{fmt_delta(delta)}"
        ax_t.text(i, total[i] + hi[i] + top * 0.02, text, ha="center", va="bottom", fontsize=8)
    ax_t.set_ylim(0, top * 1.45)
    ax_t.set_xticks(x, labels, rotation=20)
    ax_t.set_ylabel("seconds (median of repeats)")
    ax_t.set_title("time per dtype")
    ax_t.legend(loc="upper left", fontsize=8)

    kind = next((r["memory_kind"] for r in rows if r["memory_kind"]), "rss")
    ax_m.bar(x, [m or 0.0 for m in mem], color="#55A868")
    for i, m in enumerate(mem):
        if m is not None:
            ax_m.text(i, m, f"{m:.0f}", ha="center", va="bottom", fontsize=8)
    ax_m.set_xticks(x, labels, rotation=20)
    ax_m.set_ylabel({"rss": "peak RSS above the import baseline (MiB)", "cuda_allocated": "peak CUDA allocated (MiB)",
                     "mps_driver": "peak MPS allocated (MiB)"}[kind], fontsize=8)
    ax_m.set_title("peak memory")

    points = [(t, r[primary], r["variant"]) for t, r in zip(total, rows)
              if primary is not None and r["total_s_median"] is not None and r.get(primary) is not None]
    for t, value, label in points:
        ax_a.scatter(t, value, color="#8172B2")
        ax_a.annotate(label, (t, value), xytext=(4, 3), textcoords="offset points", fontsize=8)
    ax_a.set_xlabel("total seconds (median)")
    ax_a.set_ylabel(primary or "metric")
    ax_a.set_title("accuracy against time")
    if not points:
        ax_a.text(0.5, 0.5, "no metric measured", ha="center", va="center", transform=ax_a.transAxes)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, result.run_dir / "bench_dtype.png", formats)
    plt.close(fig)
