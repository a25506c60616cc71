"""The report's summaries: per task, language and method, every metric with its interval and its
paired test against the reference, the costs, and the forgetting of sequential runs.

Intervals are 95 % percentile bootstraps over the evaluated examples (see `reports.stats`); each
method is tested against a reference method with a paired bootstrap on the same example ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import record as rec  # the run record's names
from reports.records import RunRecord, _ordered, family_label
from reports.stats import (
    MEAN,
    PairedTest,
    Statistic,
    bootstrap_ci,
    corpus_statistic,
    paired_bootstrap,
)

SIGNIFICANCE = 0.05
PRIMARY_METRIC = "bleu"
LEVEL = 0.95
# (metric suffix under `<task>/<lang>/`, column title) for the cost columns, in table order.
COSTS = [
    ("trained_weights_bytes", "weights (MB)"),
    ("train_time_s", "train time (s)"),
    ("peak_memory_mb", "peak memory (MB)"),
    ("tokens_per_s", "train tokens/s"),
    ("skipped_steps", "skipped steps"),
]
# Costs that a busy machine inflates (or deflates): marked when measured under contention.
LOAD_SENSITIVE = ("train_time_s", "tokens_per_s")


@dataclass
class Estimate:
    """One metric of one method on one language."""

    point: float
    low: float
    high: float
    seeds: tuple[float, float] | None  # (mean, std) of the runs' logged values, several seeds
    logged: float  # the logged corpus value (mean over seeds)
    test: PairedTest | None = None  # against the reference method
    ids_compared: int = 0

    def significant(self, alpha: float = SIGNIFICANCE) -> bool:
        return self.test is not None and self.test.p_value < alpha


@dataclass
class MethodRow:
    """One method on one language, its seeds pooled."""

    method: str
    runs: list[RunRecord]
    estimates: dict[str, Estimate]
    costs: dict[str, tuple[float, float]]  # cost key -> (mean, std) across seeds
    trainable: tuple[float, float]
    share: tuple[float, float]
    loads: list[tuple[float, float]] = field(default_factory=list)  # (load average, CPUs) per run

    @property
    def seeds(self) -> list[str]:
        return [r.seed for r in self.runs]

    @property
    def contended(self) -> list[tuple[float, float]]:
        """The (load, CPUs) of the runs trained while the load average exceeded the CPUs."""
        return [(load, cpus) for load, cpus in self.loads if load > cpus]


@dataclass
class LanguageSection:
    """The table of one task and language and what it needs to be read."""

    language: str  # the `<task>/<language>` scope
    fingerprint: str
    rows: list[MethodRow]
    metrics: list[str]
    statistics: dict[str, Statistic]  # metric -> how its interval was computed
    mean_not_corpus: list[str]  # metrics whose logged corpus value is not the per-example mean
    reference_present: bool
    notes: list[str] = field(default_factory=list)
    family: str = ""  # the runs' base-model family when the report has several, else ""

    @property
    def title(self) -> str:
        """The table's name in headings and plots: its scope, and its family when there are
        several (`generation/python (Llama-style)`)."""
        return scope_title(self.language, self.family)

    @property
    def key(self) -> str:
        """The table's key among the report's plots (one per family and scope)."""
        return scope_key(self.language, self.family)


def scope_title(scope: str, family: str) -> str:
    return f"{scope} ({family_label(family)})" if family else scope


def scope_key(scope: str, family: str) -> str:
    return f"{family}/{scope}" if family else scope


@dataclass
class ForgettingRow:
    """Sequential protocol: one method, language and metric, seeds pooled as mean and std."""

    method: str
    language: str  # the `<task>/<language>` scope
    metric: str
    seeds: int
    after_own: tuple[float, float]
    final: tuple[float, float]
    forgetting: tuple[float, float]


def _example_rows(
    table: pd.DataFrame, metric: str, language: str
) -> tuple[pd.DataFrame, Statistic]:
    """Per-example rows (indexed by example id) and the statistic that summarises them."""
    statistic = corpus_statistic(metric)
    if statistic is not None:
        predictions = table["prediction"].fillna("").astype(str).tolist()
        references = table["reference"].fillna("").astype(str).tolist()
        rows = statistic.rows(predictions, references, language)
        return pd.DataFrame(rows, index=table.index), statistic
    values = pd.to_numeric(table[metric], errors="coerce").dropna()  # not applicable: skipped
    return values.to_frame(), MEAN


def _pool_seeds(frames: list[pd.DataFrame]) -> tuple[np.ndarray, pd.Index]:
    """Each example's rows averaged over the seeds' runs (examples that all of them have)."""
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    common = common.sort_values()
    return sum(frame.loc[common].to_numpy() for frame in frames) / len(frames), common


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    array = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(array):
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std())


def _is_mean_of_examples(table: pd.DataFrame, metric: str, logged: float | None) -> bool:
    if logged is None or corpus_statistic(metric) is not None:
        return True
    values = pd.to_numeric(table[metric], errors="coerce").dropna()
    return not len(values) or abs(values.mean() - logged) <= 1e-6 * max(1.0, abs(logged))


def summarise(
    scope: str,
    runs: list[RunRecord],
    fingerprint: str,
    reference: str,
    n_boot: int,
    seed: int,
    family: str = "",
) -> LanguageSection:
    """One row per method for a `<task>/<language>` scope (runs' tables already downloaded).

    The metrics are those every run signed and has a column for; an evaluation-only task, signed
    by its own name, shows every per-problem column it logged a corpus value of (pass_at_1...)."""
    task, language = rec.split_scope(scope)
    shown = set.intersection(*(set(r.signatures()) for r in runs))
    columns = set.intersection(*(set(r.tables[scope].columns) for r in runs))
    metrics = sorted(name for name in shown if name in columns)
    if task in shown:
        metrics += sorted(
            column
            for column in columns
            if all(rec.metric(task, language, column) in r.metrics for r in runs)
        )
    by_method: dict[str, list[RunRecord]] = {}
    for record in sorted(runs, key=_seed_order):
        by_method.setdefault(record.method, []).append(record)
    pooled: dict[tuple[str, str], tuple[np.ndarray, pd.Index]] = {}
    statistics: dict[str, Statistic] = {}
    for method, method_runs in by_method.items():
        for metric in metrics:
            parts = [_example_rows(r.tables[scope], metric, language) for r in method_runs]
            statistics[metric] = parts[0][1]
            pooled[(method, metric)] = _pool_seeds([p[0] for p in parts])
    mean_not_corpus = sorted(
        metric
        for metric in metrics
        if not all(
            _is_mean_of_examples(
                r.tables[scope], metric, r.metrics.get(rec.metric(task, language, metric))
            )
            for r in runs
        )
    )
    notes = []
    rows = []
    for method, method_runs in sorted(by_method.items()):
        estimates = {}
        for metric in metrics:
            data, ids = pooled[(method, metric)]
            statistic = statistics[metric]
            point, low, high = bootstrap_ci(data, statistic, n_boot, seed, LEVEL)
            logged = [
                r.metrics.get(rec.metric(task, language, metric), np.nan) for r in method_runs
            ]
            if statistic.corpus_level and len(method_runs) == 1 and np.isfinite(logged[0]):
                if abs(point - logged[0]) > 1e-6 * max(1.0, abs(logged[0])):
                    notes.append(
                        f"{method}, {metric}: recomputed from the examples {point:.4g}, the run "
                        f"logged {logged[0]:.4g} (another metric version?)"
                    )
            estimate = Estimate(
                point,
                low,
                high,
                seeds=_mean_std(logged) if len(method_runs) > 1 else None,
                logged=_mean_std(logged)[0],
            )
            if method != reference and (reference, metric) in pooled:
                ref_data, ref_ids = pooled[(reference, metric)]
                common = ids.intersection(ref_ids)
                if len(common) >= 2:
                    mine = data[ids.get_indexer(common)]
                    theirs = ref_data[ref_ids.get_indexer(common)]
                    estimate.test = paired_bootstrap(mine, theirs, statistic, n_boot, seed, LEVEL)
                    estimate.ids_compared = len(common)
                    if len(common) < max(len(ids), len(ref_ids)):
                        notes.append(
                            f"{method} vs {reference}, {metric}: tested on the {len(common)} "
                            "example ids both have"
                        )
            estimates[metric] = estimate
        costs = {
            key: _mean_std(
                r.metrics.get(rec.metric(task, language, key), np.nan) for r in method_runs
            )
            for key, _ in COSTS
        }
        rows.append(
            MethodRow(
                method=method,
                runs=method_runs,
                estimates=estimates,
                costs=costs,
                trainable=_mean_std(
                    _float(r.params.get(rec.TRAINABLE_PARAMS)) for r in method_runs
                ),
                share=_mean_std(_float(r.params.get(rec.TRAINABLE_SHARE)) for r in method_runs),
                loads=[
                    (
                        r.metrics[rec.metric(task, language, rec.LOAD_AVERAGE)],
                        r.metrics[rec.metric(task, language, rec.CPU_COUNT)],
                    )
                    for r in method_runs
                    if rec.metric(task, language, rec.LOAD_AVERAGE) in r.metrics
                    and rec.metric(task, language, rec.CPU_COUNT) in r.metrics
                ],
            )
        )
    return LanguageSection(
        language=scope,
        fingerprint=fingerprint,
        rows=rows,
        metrics=metrics,
        statistics=statistics,
        mean_not_corpus=mean_not_corpus,
        reference_present=reference in by_method,
        notes=notes,
        family=family,
    )


def _seed_order(record: RunRecord) -> tuple[int, float, str, str]:
    """Seeds in numeric order where they are numbers, then by run id: a stable row layout."""
    try:
        return (0, float(record.seed), "", record.run_id)
    except ValueError:
        return (1, 0.0, record.seed, record.run_id)


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else float("nan")
    except ValueError:
        return float("nan")


def forgetting_rows(
    sequential: list[RunRecord],
) -> tuple[list[ForgettingRow], dict[tuple[str, str], list[float]]]:
    """Per method, task and language (a scope) and metric: score after own training, final
    score, forgetting; and per method and `<task>/<metric>` the backward transfer, seeds pooled."""
    grouped: dict[tuple[str, str, str], list[RunRecord]] = {}
    bwt: dict[tuple[str, str], list[float]] = {}
    for run in sequential:
        for key, value in run.metrics.items():
            lost = rec.split_forgetting(key)
            if lost is not None:
                task, language, metric = lost
                grouped.setdefault((run.method, rec.scope(task, language), metric), []).append(run)
            elif (transfer := rec.split_backward_transfer(key)) is not None:
                bwt.setdefault((run.method, "/".join(transfer)), []).append(value)
    rows = []
    for (method, scope, metric), runs in sorted(
        grouped.items(), key=lambda item: (item[0][0], _ordered([item[0][1]]), item[0][2])
    ):
        task, language = rec.split_scope(scope)
        rows.append(
            ForgettingRow(
                method=method,
                language=scope,
                metric=metric,
                seeds=len(runs),
                after_own=_mean_std(
                    r.metrics.get(rec.metric(task, language, metric), np.nan) for r in runs
                ),
                final=_mean_std(
                    r.metrics.get(rec.final_metric(task, language, metric), np.nan) for r in runs
                ),
                forgetting=_mean_std(
                    r.metrics[rec.forgetting_metric(task, language, metric)] for r in runs
                ),
            )
        )
    return rows, dict(sorted(bwt.items()))


def primary_metric(metrics: list[str]) -> str:
    """The metric the report ranks by first (its quality-vs-cost plot, `compare --promote`):
    BLEU when the report has it, else its first metric."""
    return PRIMARY_METRIC if PRIMARY_METRIC in metrics else metrics[0]


def direction(metric: str) -> bool:
    """True when higher is better (unknown metrics are assumed to be scores)."""
    import metrics as metric_registry

    try:
        return bool(metric_registry.get_metric(metric).higher_is_better)
    except Exception:  # a metric no longer registered: treat it as a score
        return True
