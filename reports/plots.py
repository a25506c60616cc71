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

from core import record as rec  # noqa: E402  (the run record's names)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from reports.summary import ForgettingRow, LanguageSection, MethodRow

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
        f"{section.title}: each metric by method (bars: 95 % bootstrap interval; "
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
    contended = [r.method for r in section.rows if r.contended]
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
    title = f"{section.title}: {quality} (95 % interval) against what it costs"
    if contended:
        title += "\n† train time measured under contention (machine loaded beyond its CPUs)"
    fig.suptitle(title)
    fig.tight_layout()  # the axes take their final place before the labels are placed
    for ax, (label, cost) in zip(axes, axis_costs):
        rows = [r for r in section.rows if math.isfinite(cost(r))]
        timed = label.startswith("train time")
        names = [r.method + (" †" if timed and r.method in contended else "") for r in rows]
        label_points(ax, names, [(cost(r), r.estimates[quality].point) for r in rows])
    return _save(fig, path)


Box = tuple[float, float, float, float]  # left, bottom, right, top (display pixels)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    anchors: list[tuple[float, float]],
    sizes: list[tuple[float, float]],
    bounds: Box | None = None,
    pad: float = 6.0,
    marker: float = 8.0,
) -> list[Box]:
    """A box for each label (width, height) near its anchor point, none overlapping another
    label or another anchor's marker, inside `bounds` where there is room.

    Each label takes the first free place of: above right, below right, above left, below left
    of its point, then the same places stepped away a label's height at a time (up and down).
    Labels are placed left to right, so a point's label stays beside it unless others crowd it.
    """
    markers = [(x - marker / 2, y - marker / 2, x + marker / 2, y + marker / 2) for x, y in anchors]
    placed: list[Box] = []
    boxes: list[Box | None] = [None] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda k: (anchors[k][0], -anchors[k][1], k)):
        (x, y), (width, height) = anchors[i], sizes[i]
        step = height + 2.0
        candidates = []
        for level in range(2 * len(anchors) + 4):  # enough levels for a free place to exist
            for side in (1, -1) if level else (1,):
                lift = side * level * step
                for left in (x + pad, x - pad - width):
                    candidates.append((left, y + pad / 2 + lift))  # above the point
                    candidates.append((left, y - pad / 2 - height - lift))  # below it
        obstacles = placed + [m for k, m in enumerate(markers) if k != i]
        boxes_there = [(left, bottom, left + width, bottom + height) for left, bottom in candidates]
        free = [b for b in boxes_there if not any(_overlaps(b, other) for other in obstacles)]
        inside = [b for b in free if bounds is None or _inside(b, bounds)]
        boxes[i] = (inside or free or boxes_there)[0]  # the last: never, with these levels
        placed.append(boxes[i])
    return boxes


def _inside(box: Box, bounds: Box) -> bool:
    return (
        box[0] >= bounds[0] and box[1] >= bounds[1] and box[2] <= bounds[2] and box[3] <= bounds[3]
    )


def label_points(ax: Any, names: list[str], points: list[tuple[float, float]]) -> list[Any]:
    """Name each point (data coordinates) with a label that overlaps no other label (see
    `place_labels`); a label moved away from its point is tied to it by a thin line."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    sizes = []
    for name in names:
        probe = ax.text(0, 0, name, fontsize=9)
        extent = probe.get_window_extent(renderer)
        sizes.append((extent.width, extent.height))
        probe.remove()
    anchors = [tuple(ax.transData.transform(point)) for point in points]
    frame = ax.get_window_extent(renderer)
    boxes = place_labels(anchors, sizes, (frame.x0, frame.y0, frame.x1, frame.y1))
    per_point = 72.0 / fig.dpi  # annotate's offsets are in points, the boxes in pixels
    labels = []
    for name, point, (x, y), box in zip(names, points, anchors, boxes):
        dx, dy = (box[0] - x) * per_point, (box[1] - y) * per_point
        far = max(abs(dx), abs(dy)) > 15
        label = ax.annotate(
            name,
            point,
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=9,
            ha="left",
            va="bottom",
            arrowprops={"arrowstyle": "-", "color": "gray", "lw": 0.6} if far else None,
        )
        label.set_in_layout(False)  # placed inside the axes: the layout must not move for it
        labels.append(label)
    return labels


def loss_curves(client: MlflowClient, section: LanguageSection, path: Path) -> Path:
    """Training loss per optimizer step: one colour per method, one line per seed's run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    window = 1
    for i, row in enumerate(section.rows):
        color = COLORS[i % len(COLORS)]
        for j, run in enumerate(row.runs):
            key = rec.metric(*rec.split_scope(section.language), "train/loss")
            history = client.get_metric_history(run.run_id, key)
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
        f"{section.title}: training loss, one line per run (moving average of {window} steps)"
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


def inference_overhead(sections: list[LanguageSection], out: Path) -> dict[str, Path]:
    """Per scope with inference figures, `inference_<scope>.png`: each method's latency per
    token (p50) and tokens/s over the base's, unmerged and merged (an earlier report's go)."""
    from reports import inference

    for stale in out.glob("inference_*.png"):
        stale.unlink()
    images = {}
    for section in sections:
        summary = inference.summarise(section)
        if not summary.rows:
            continue
        names = [row.method for row in summary.rows]
        x = np.arange(len(names))
        fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(names) + 2), 3.4))
        for ax, figure, title in zip(
            axes,
            (rec.LATENCY_P50, rec.TOKENS_PER_S),
            ("latency per token, batch 1 (p50)", "tokens/s at the evaluation batch size"),
        ):
            for offset, model, color in (
                (-0.2, rec.ADAPTED_MODEL, BASE_COLOR),
                (0.2, rec.MERGED_MODEL, REFERENCE_COLOR),
            ):
                values = [row.ratios[f"{model}/{figure}"] for row in summary.rows]
                ax.bar(x + offset, values, 0.4, color=color, label=model)
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xticks(x, names, rotation=20)
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("÷ base (1 = the base)")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{section.title}: inference against the base", fontsize=10)
        key = inference.image_key(section.key)
        images[key] = _save(fig, out / f"{key.replace('/', '_')}.png")
    return images
