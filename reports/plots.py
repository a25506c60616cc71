"""The report's figures (matplotlib, written as PNG)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from reports.compare import MethodRow


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metrics_by_method(rows: list[MethodRow], names: list[str], language: str, path: Path) -> Path:
    """One panel per metric: each method's estimate with its 95 % interval."""
    columns = min(3, len(names))
    lines = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.0 * lines), squeeze=False)
    methods = [r.method for r in rows]
    for ax, metric in zip(axes.flat, names):
        points = [r.values[metric][0] for r in rows]
        low = [r.values[metric][0] - r.values[metric][1] for r in rows]
        high = [r.values[metric][2] - r.values[metric][0] for r in rows]
        ax.bar(methods, points, yerr=[low, high], capsize=4, color="#4C72B0", alpha=0.85)
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=30)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"{language}: each metric by method (bars: 95 % bootstrap interval)")
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower cost x, higher quality y), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def quality_vs_cost(rows: list[MethodRow], quality: str, language: str, path: Path) -> Path:
    """Quality against trainable parameters (Pareto front marked) and against train time."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (label, cost) in zip(
        axes,
        [
            ("trainable parameters", lambda r: r.trainable),
            ("train time (s)", lambda r: r.costs["train_time_s"]),
        ],
    ):
        points = [(cost(r), r.values[quality][0]) for r in rows]
        for r, (x, y) in zip(rows, points):
            ax.errorbar(
                x,
                y,
                yerr=[[y - r.values[quality][1]], [r.values[quality][2] - y]],
                fmt="o",
                capsize=3,
            )
            ax.annotate(r.method, (x, y), textcoords="offset points", xytext=(5, 5))
        front = pareto_front(points)
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "--",
            color="gray",
            label="Pareto front",
        )
        ax.set_xlabel(label)
        ax.set_ylabel(quality)
        ax.xaxis.set_major_formatter(EngFormatter())  # 50k, 1.8M: no overlapping labels
        ax.legend(loc="lower right")
    fig.suptitle(f"{language}: {quality} against what it costs")
    return _save(fig, path)


def loss_curves(client: MlflowClient, rows: list[MethodRow], language: str, path: Path) -> Path:
    """Training loss per step, one line per method (its first run)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        history = client.get_metric_history(row.runs[0].run_id, f"{language}/train/loss")
        history = sorted(history, key=lambda m: m.step)
        ax.plot([m.step for m in history], [m.value for m in history], label=row.method)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{language}: training loss")
    ax.legend()
    return _save(fig, path)


def forgetting(rows: list[dict[str, Any]], path: Path) -> Path:
    """Forgetting per method (sequential protocol), one bar group per language and metric."""
    labels = sorted({f"{r['language']}/{r['metric']}" for r in rows})
    methods = sorted({r["method"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels)), 4))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        values = []
        for label in labels:
            found = [
                r["forgetting"]
                for r in rows
                if r["method"] == method and f"{r['language']}/{r['metric']}" == label
            ]
            values.append(sum(found) / len(found) if found else 0.0)
        ax.bar([j + i * width for j in range(len(labels))], values, width, label=method)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=30)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("forgetting (positive = lost)")
    ax.set_title("sequential protocol: quality lost on earlier languages")
    ax.legend()
    return _save(fig, path)
