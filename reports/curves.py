"""The sweep section: quality against training examples (low-resource curves) and against the
base model's size, per method, with intervals, and which method is best at each sweep point.

A sweep is the fresh runs of one setup that differ only in `data.train_size` or `model.name`
(`reports.records` groups them per language and sweep point). Each point of a curve is one
method at one sweep point: the mean of its seeds' logged corpus values, with a 95 % t interval
over the seeds (several seeds) or, with one seed, the 95 % bootstrap interval over the evaluated
examples. The best method at a point is tested against the runner-up with the report's paired
bootstrap on the same examples (each example's values averaged over the seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter, FixedLocator, NullLocator  # noqa: E402

from core import record as rec  # the run record's names
from reports.records import RunRecord
from reports.render import Block, fmt
from reports.stats import PairedTest, Statistic, bootstrap_ci, paired_bootstrap
from reports.summary import (
    LEVEL,
    SIGNIFICANCE,
    _example_rows,
    _pool_seeds,
    _seed_order,
    direction,
    scope_key,
    scope_title,
)

PRIMARY = ("bleu", "pass_rate")  # the quality a sweep is drawn in, those the runs have
COLORS = plt.get_cmap("tab10").colors
Point = tuple[str, ...]  # a run's values of rec.SWEEP_AXES


@dataclass
class CurvePoint:
    """One method at one sweep point: its runs (one per seed) and its estimates."""

    method: str
    point: Point
    runs: list[RunRecord]
    estimates: dict[str, tuple[float, float, float]]  # metric -> (mean, low, high)
    base_params: float  # the base model's parameters: total minus what the method trains
    pooled: dict[str, tuple[np.ndarray, pd.Index]] = field(default_factory=dict, repr=False)

    @property
    def train_size(self) -> float:
        return _number(self.point[rec.SWEEP_AXES.index(rec.TRAIN_SIZE)])

    @property
    def model(self) -> str:
        return self.point[rec.SWEEP_AXES.index(rec.MODEL_NAME)]


@dataclass
class Winner:
    """The best method at one sweep point on one metric, tested against the runner-up."""

    point: Point
    metric: str
    best: CurvePoint
    runner_up: CurvePoint | None
    test: PairedTest | None  # best minus runner-up, on the examples both have

    def significant(self) -> bool:
        return self.test is not None and self.test.p_value < SIGNIFICANCE

    @property
    def tied(self) -> bool:
        """The runner-up's mean equals the best's: no method is best here."""
        best, other = self.best.estimates[self.metric][0], self.runner_up
        return other is not None and other.estimates[self.metric][0] == best

    @property
    def who(self) -> str:
        return (
            f"{self.best.method} = {self.runner_up.method} (tied)"
            if self.tied
            else self.best.method
        )


@dataclass
class SweepSection:
    """One language's sweep: its curve points, the winners and what they need to be read."""

    language: str
    metrics: list[str]
    points: list[CurvePoint]
    winners: list[Winner]
    swept: list[str]  # the axes with more than one value here
    table_point: Point  # the point the method tables show
    notes: list[str] = field(default_factory=list)
    family: str = ""  # the runs' base-model family when the report has several, else ""

    @property
    def title(self) -> str:
        return scope_title(self.language, self.family)

    @property
    def key(self) -> str:
        return scope_key(self.language, self.family)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _primary(runs: list[RunRecord], language: str) -> list[str]:
    shared = set.intersection(*(set(r.signatures()) for r in runs))
    shared = {m for m in shared if all(m in r.tables[language].columns for r in runs)}
    return [m for m in PRIMARY if m in shared] or sorted(shared)[:1]


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student t interval over the seeds' values."""
    array = np.array(values, dtype=float)
    mean = float(array.mean())
    half = scipy_stats.t.ppf(0.5 + LEVEL / 2, len(array) - 1) * array.std(ddof=1)
    half /= math.sqrt(len(array))
    return mean, mean - float(half), mean + float(half)


def _base_params(runs: list[RunRecord]) -> float:
    sizes = [
        _number(r.params.get(rec.TOTAL_PARAMS, ""))
        - _number(r.params.get(rec.TRAINABLE_PARAMS, ""))
        for r in runs
    ]
    sizes = [s for s in sizes if math.isfinite(s)]
    return float(np.mean(sizes)) if sizes else math.nan


def summarise_sweep(
    language: str,
    by_point: dict[Point, list[RunRecord]],
    table_point: Point,
    n_boot: int,
    seed: int,
    family: str = "",
) -> SweepSection:
    """The curve points and winners of `language` (the runs' tables already downloaded)."""
    every = [r for runs in by_point.values() for r in runs]
    metrics = _primary(every, language)
    points: list[CurvePoint] = []
    statistics: dict[str, Statistic] = {}
    for point in sorted(by_point, key=_point_order):
        by_method: dict[str, list[RunRecord]] = {}
        for record in sorted(by_point[point], key=_seed_order):
            by_method.setdefault(record.method, []).append(record)
        for method, runs in sorted(by_method.items()):
            curve = CurvePoint(method, point, runs, {}, _base_params(runs))
            for metric in metrics:
                parts = [
                    _example_rows(r.tables[language], metric, rec.split_scope(language)[1])
                    for r in runs
                ]
                statistics[metric] = parts[0][1]
                curve.pooled[metric] = _pool_seeds([p[0] for p in parts])
                key = rec.metric(*rec.split_scope(language), metric)
                logged = [r.metrics.get(key, math.nan) for r in runs]
                if len(runs) > 1 and all(map(math.isfinite, logged)):
                    curve.estimates[metric] = _t_interval(logged)
                else:
                    rows = curve.pooled[metric][0]
                    point_value, low, high = bootstrap_ci(
                        rows, statistics[metric], n_boot, seed, LEVEL
                    )
                    mean = float(np.nanmean(logged)) if np.isfinite(logged).any() else point_value
                    curve.estimates[metric] = (mean, min(low, mean), max(high, mean))
            points.append(curve)
    winners = []
    for point in sorted(by_point, key=_point_order):
        here = [c for c in points if c.point == point]
        for metric in metrics:
            sign = 1.0 if direction(metric) else -1.0
            ranked = sorted(here, key=lambda c, m=metric: (-sign * c.estimates[m][0], c.method))
            best, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
            test = None
            if runner_up is not None:
                mine, ids = best.pooled[metric]
                theirs, their_ids = runner_up.pooled[metric]
                common = ids.intersection(their_ids)
                if len(common) >= 2:
                    test = paired_bootstrap(
                        mine[ids.get_indexer(common)],
                        theirs[their_ids.get_indexer(common)],
                        statistics[metric],
                        n_boot,
                        seed,
                        LEVEL,
                    )
            winners.append(Winner(point, metric, best, runner_up, test))
    swept = [
        axis for i, axis in enumerate(rec.SWEEP_AXES) if len({point[i] for point in by_point}) > 1
    ]
    return SweepSection(
        language, metrics, points, winners, swept, table_point, _notes(language, points), family
    )


def _point_order(point: Point) -> tuple[float, str]:
    size = _number(point[rec.SWEEP_AXES.index(rec.TRAIN_SIZE)])
    return (size if math.isfinite(size) else -1.0, point[rec.SWEEP_AXES.index(rec.MODEL_NAME)])


def _notes(language: str, points: list[CurvePoint]) -> list[str]:
    """What a reader must know: fewer training examples than asked, other evaluated examples."""
    notes = []
    for curve in points:
        found = {
            _number(r.params.get(rec.train_examples_param(rec.split_scope(language)[1]), ""))
            for r in curve.runs
        }
        fewer = sorted(n for n in found if math.isfinite(n) and n < curve.train_size)
        if fewer:
            notes.append(
                f"{curve.method} at {label(curve.point, [rec.TRAIN_SIZE])}: the {language} "
                f"training split holds {fewer[0]:,.0f} examples, fewer than asked"
            )
    evaluated: dict[Point, pd.Index] = {}
    for curve in points:
        if curve.pooled:
            evaluated.setdefault(curve.point, next(iter(curve.pooled.values()))[1])
    if len({tuple(ids) for ids in evaluated.values()}) > 1:
        notes.append(
            "the sweep points were evaluated on different examples: the curves compare scores "
            "on different test sets"
        )
    return list(dict.fromkeys(notes))


def label(point: Point, axes: list[str]) -> str:
    """A sweep point in words: 'n=300', 'base demo', 'n=300, base demo'."""
    parts = []
    if rec.TRAIN_SIZE in axes:
        parts.append(f"n={point[rec.SWEEP_AXES.index(rec.TRAIN_SIZE)]}")
    if rec.MODEL_NAME in axes:
        parts.append(f"base {point[rec.SWEEP_AXES.index(rec.MODEL_NAME)]}")
    return ", ".join(parts)


# ---------------------------------------------------------------- the plot


def sweep_plot(section: SweepSection, path: Path) -> Path:
    """One row per metric: quality against training examples (log x) and, when the base model
    is swept, against the base's parameters (log x); one line per method, 95 % intervals."""
    panels = [axis for axis in (rec.TRAIN_SIZE, rec.MODEL_NAME) if axis in section.swept]
    fig, axes = plt.subplots(
        len(section.metrics),
        len(panels),
        figsize=(max(7.0, 5.6 * len(panels)), 3.6 * len(section.metrics) + 0.6),
        squeeze=False,
    )
    methods = sorted({c.method for c in section.points})
    colors = {m: COLORS[i % len(COLORS)] for i, m in enumerate(methods)}
    for row, metric in enumerate(section.metrics):
        for column, axis in enumerate(panels):
            ax = axes[row][column]
            other = [a for a in section.swept if a != axis]  # one line per value of the other
            lines: dict[tuple[str, str], list[CurvePoint]] = {}
            for curve in section.points:
                lines.setdefault((curve.method, label(curve.point, other)), []).append(curve)
            styles = {key: k for k, key in enumerate(sorted({key[1] for key in lines}))}
            ticks = set()
            for k, ((method, rest), curves) in enumerate(sorted(lines.items())):
                # Lines side by side a little, so that equal points keep every interval visible.
                dodge = 1.0 + 0.025 * (k - (len(lines) - 1) / 2)
                x_of = (
                    (lambda c: c.train_size)
                    if axis == rec.TRAIN_SIZE
                    else (lambda c: c.base_params)
                )
                curves = sorted((c for c in curves if math.isfinite(x_of(c))), key=x_of)
                if not curves:
                    continue
                ticks.update(x_of(c) for c in curves)
                xs = [x_of(c) * dodge for c in curves]
                ys = [c.estimates[metric][0] for c in curves]
                below = [y - c.estimates[metric][1] for y, c in zip(ys, curves)]
                above = [c.estimates[metric][2] - y for y, c in zip(ys, curves)]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[below, above],
                    fmt=("-o", "--s", ":^", "-.v")[styles[rest] % 4],
                    capsize=3,
                    color=colors[method],
                    label=f"{method} ({rest})" if rest else method,
                )
            ax.set_xscale("log")
            if axis == rec.TRAIN_SIZE and ticks:  # the sizes themselves, not powers of ten
                ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            else:
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel(
                "training examples per language (log scale)"
                if axis == rec.TRAIN_SIZE
                else "base model parameters (log scale)"
            )
            better = "higher" if direction(metric) else "lower"
            ax.set_ylabel(f"{metric} ({better} is better)")
            ax.legend(fontsize=8, loc="best")
            ax.grid(alpha=0.3)
    fig.suptitle(
        f"{section.title}: quality along the sweep\n(mean over seeds; bars: 95 % interval "
        "over the seeds, or over the examples with one seed)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the report's blocks


def _estimate(curve: CurvePoint, metric: str) -> str:
    mean, low, high = curve.estimates[metric]
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def _difference(winner: Winner) -> str:
    test = winner.test
    if test is None:
        return "–"
    star = "*" if winner.significant() else ""
    sign = "+" if test.difference > 0 else ""
    interval = f"[{fmt(test.low)}, {fmt(test.high)}]"
    return f"{sign}{fmt(test.difference)}{star} {interval} p={test.p_value:.3f}"


def winner_sentence(section: SweepSection, metric: str) -> str:
    """Which method is best at which sweep point, and where that is significant."""
    groups: dict[str, list[Winner]] = {}
    for winner in section.winners:
        if winner.metric == metric:
            groups.setdefault(winner.who, []).append(winner)
    parts = []
    for won in groups.values():
        where = ", ".join(label(w.point, section.swept) for w in won)
        if won[0].tied:
            parts.append(f"`{won[0].best.method}` and `{won[0].runner_up.method}` tie at {where}")
            continue
        clear = [label(w.point, section.swept) for w in won if w.significant()]
        if len(clear) == len(won):
            verdict = "significantly" if len(won) == 1 else "significantly at each"
        elif clear:
            verdict = f"significantly at {', '.join(clear)} only"
        else:
            verdict = "not significantly"
        parts.append(f"`{won[0].best.method}` is best at {where} ({verdict})")
    tested = any(not won[0].tied for won in groups.values())
    how = f" Significance: the best against the runner-up, paired bootstrap, p < {SIGNIFICANCE}."
    return f"{section.title}, {metric}: " + "; ".join(parts) + "." + (how if tested else "")


def sweep_blocks(sections: list[SweepSection], images: dict[str, Path]) -> list[Block]:
    """The report's Sweep section: per language a table of the curve points, the winners,
    one sentence per metric and the curves plot."""
    if not sections:
        return []
    first = sections[0]
    out: list[Block] = [
        ("h2", "Sweep"),
        (
            "p",
            "Runs that differ only in the training size (`data.train_size`) or the base model "
            "(`model.name`). Each cell: the mean of the seeds' corpus values [95 % t interval "
            "over the seeds, or with one seed the 95 % bootstrap interval over the evaluated "
            f"examples]. The method tables above are at {label(first.table_point, first.swept)}."
            " Best: the highest mean (lowest for a lower-is-better metric), tested against the "
            "runner-up by a paired bootstrap on the same examples; * p < "
            f"{SIGNIFICANCE}.",
        ),
    ]
    for section in sections:
        out.append(("h3", f"{section.title}: sweep"))
        points = sorted({c.point for c in section.points}, key=_point_order)
        methods = sorted({c.method for c in section.points})
        found = {(c.method, c.point): c for c in section.points}
        for metric in section.metrics:
            header = [f"{metric}: method", *[label(p, section.swept) for p in points]]
            body = [
                [method]
                + [
                    _estimate(found[(method, p)], metric) if (method, p) in found else "–"
                    for p in points
                ]
                for method in methods
            ]
            out.append(("table", header, body))
        header = [
            "sweep point",
            "metric",
            "best",
            "score",
            "runner-up",
            "best − runner-up [95 % paired interval]",
        ]
        body = [
            [
                label(w.point, section.swept),
                w.metric,
                w.who,
                _estimate(w.best, w.metric),
                w.runner_up.method if w.runner_up else "–",
                _difference(w),
            ]
            for w in section.winners
        ]
        out.append(("table", header, body))
        out += [("p", winner_sentence(section, metric)) for metric in section.metrics]
        if section.notes:
            out.append(("ul", section.notes))
        key = f"sweep_{section.key}"
        if key in images:
            out.append(("img", images[key], f"{section.title}: quality along the sweep"))
    return out
