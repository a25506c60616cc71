"""The report's figures (matplotlib with the Agg backend, written as PNG)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from reports.compare import ForgettingRow, LanguageSection, MethodRow

COLORS = plt.get_cmap("tab10").colors
BASE_COLOR, REFERENCE_COLOR = "#4C72B0", "#DD8452"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _arrow(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def metrics_by_method(
    section: LanguageSection, reference: str, directions: dict[str, bool], path: Path
) -> Path:
    """One panel per metric: each method's estimate with its 95 % bootstrap interval."""
    names = section.metrics
    columns = min(3, len(names))
    lines = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.1 * lines), squeeze=False)
    rows = section.rows
    methods = [r.method for r in rows]
    colors = [REFERENCE_COLOR if m == reference else BASE_COLOR for m in methods]
    for ax, metric in zip(axes.flat, names):
        estimates = [r.estimates[metric] for r in rows]
        points = [e.point for e in estimates]
        below = [e.point - e.low for e in estimates]
        above = [e.high - e.point for e in estimates]
        ax.bar(methods, points, yerr=[below, above], capsize=4, color=colors, alpha=0.85)
        for i, estimate in enumerate(estimates):
            if estimate.significant():
                ax.annotate("*", (i, estimate.high), ha="center", va="bottom", fontsize=14)
        ax.set_title(f"{metric} ({_arrow(directions.get(metric, True))})", fontsize=10)
        ax.margins(y=0.15)  # room for the significance marks under the title
        ax.tick_params(axis="x", rotation=30)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"{section.language}: each metric by method (bars: 95 % bootstrap interval; "
        f"*: differs from {reference}, p < 0.05)"
    )
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both cost (lower x) and quality, by cost."""
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], -math.inf
    for i in order:
        quality = sign * points[i][1]
        if quality > best:
            front.append(i)
            best = quality
    return front


def quality_vs_cost(
    section: LanguageSection, quality: str, higher_is_better: bool, path: Path
) -> Path:
    """Quality against trainable parameters and against train time, Pareto fronts marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axis_costs: list[tuple[str, Callable[[MethodRow], float]]] = [
        ("trainable parameters", lambda r: r.trainable[0]),
        ("train time (s)", lambda r: r.costs["train_time_s"][0]),
    ]
    for ax, (label, cost) in zip(axes, axis_costs):
        colors = {r.method: COLORS[i % len(COLORS)] for i, r in enumerate(section.rows)}
        rows = [r for r in section.rows if math.isfinite(cost(r))]
        points = [(cost(r), r.estimates[quality].point) for r in rows]
        for row, (x, y) in zip(rows, points):
            estimate = row.estimates[quality]
            ax.errorbar(
                x,
                y,
                yerr=[[y - estimate.low], [estimate.high - y]],
                fmt="o",
                capsize=3,
                color=colors[row.method],
            )
            ax.annotate(row.method, (x, y), textcoords="offset points", xytext=(5, 5))
        front = pareto_front(points, higher_is_better)
        if front:
            ax.plot(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                "--o",
                color="gray",
                markersize=12,
                markerfacecolor="none",
                label="Pareto front",
            )
            ax.legend(loc="best")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{quality} ({_arrow(higher_is_better)})")
        ax.xaxis.set_major_formatter(EngFormatter())  # 50k, 1.8M: no overlapping labels
    fig.suptitle(f"{section.language}: {quality} (95 % interval) against what it costs")
    return _save(fig, path)


def loss_curves(client: MlflowClient, section: LanguageSection, path: Path) -> Path:
    """Training loss per optimizer step: one colour per method, one line per seed's run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    window = 1
    for i, row in enumerate(section.rows):
        color = COLORS[i % len(COLORS)]
        for j, run in enumerate(row.runs):
            history = client.get_metric_history(run.run_id, f"{section.language}/train/loss")
            history = sorted(history, key=lambda m: m.step)
            steps = np.array([m.step for m in history], dtype=float)
            values = np.array([m.value for m in history], dtype=float)
            if not len(values):
                continue
            # Per-batch loss is noisy and the methods' curves overlap: a moving average shows
            # the trend, the raw curve stays faintly behind it.
            window = max(1, len(values) // 20)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps, values, color=color, alpha=0.15, linewidth=0.6)
            ax.plot(
                steps[window - 1 :],
                smooth,
                color=color,
                alpha=1.0 if j == 0 else 0.6,
                linewidth=1.6 if j == 0 else 1.0,
                label=row.method if j == 0 else None,
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(
        f"{section.language}: training loss, one line per run (moving average of {window} steps)"
    )
    if section.rows:
        ax.legend()
    return _save(fig, path)


def forgetting(rows: list[ForgettingRow], path: Path) -> Path:
    """Sequential protocol: forgetting per method, one panel per metric, a bar per language."""
    metrics = sorted({r.metric for r in rows})
    languages = sorted({r.language for r in rows})
    methods = sorted({r.method for r in rows})
    columns = min(3, len(metrics))
    lines = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.1 * lines), squeeze=False)
    width = 0.8 / max(1, len(languages))
    for ax, metric in zip(axes.flat, metrics):
        for k, language in enumerate(languages):
            found = {
                r.method: r.forgetting
                for r in rows
                if r.metric == metric and r.language == language
            }
            xs = [i + k * width for i in range(len(methods))]
            ax.bar(
                xs,
                [found.get(m, (0.0, 0.0))[0] for m in methods],
                width,
                yerr=[found.get(m, (0.0, 0.0))[1] for m in methods],
                label=language,
                color=COLORS[k % len(COLORS)],
            )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(methods))], methods, rotation=30)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(metric, fontsize=10)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(title="language", fontsize=8)
    fig.suptitle("sequential protocol: forgetting of each language (positive = forgotten)")
    return _save(fig, path)
