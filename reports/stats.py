"""Bootstrap confidence intervals and paired bootstrap tests over evaluated examples.

Every statistic here is a function of column sums of per-example rows: a mean (one column of
values), or a corpus-level metric's score from its own sufficient statistics (for BLEU: lengths,
n-gram matches and totals; the metric defines them and how to score them, this module holds no
metric formula). A resample is then a vector of example counts, and its statistic is computed
from `counts @ rows`: exact for corpus BLEU, and fast (no re-tokenising, no per-resample Python
loop over examples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Statistic:
    """A statistic computed from the column sums of per-example rows and the example count."""

    name: str
    finish: Callable[[np.ndarray, float], float]
    corpus_level: bool = False  # True: recomputes a corpus metric, not a mean of examples
    # A corpus-level metric's per-example rows from (predictions, references, language).
    rows: Callable[[list[str], list[str], str], np.ndarray] | None = None

    def __call__(self, rows: np.ndarray) -> float:
        rows = _as_rows(rows)
        return self.finish(rows.sum(axis=0), float(len(rows)))


def _as_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=float)
    return rows[:, None] if rows.ndim == 1 else rows


MEAN = Statistic("mean of per-example values", lambda totals, n: float(totals[0] / n))


def corpus_statistic(metric_name: str) -> Statistic | None:
    """The statistic of a registered corpus-level metric, rescored from the column sums of its
    own per-example sufficient statistics (`Metric.statistics` / `Metric.score`); None for a
    metric whose corpus value is a mean of examples, or one not in the registry."""
    from metrics import METRICS, Metric

    if metric_name not in METRICS:
        return None
    metric = METRICS.get(metric_name)()
    if type(metric).statistics is Metric.statistics:
        return None
    return Statistic(
        f"corpus {metric_name} from summed sufficient statistics",
        lambda totals, n: float(metric.score(totals, int(n))),
        corpus_level=True,
        rows=lambda predictions, references, language: np.asarray(
            metric.statistics(predictions, references, language), dtype=float
        ).reshape(len(predictions), -1),
    )


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) matrix: how often each example is drawn in each seeded resample."""
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    flat = (draws + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _replicates(rows: np.ndarray, statistic: Statistic, counts: np.ndarray) -> np.ndarray:
    totals = counts @ rows
    n = float(rows.shape[0])
    return np.array([statistic.finish(t, n) for t in totals])


def bootstrap_ci(
    rows: np.ndarray,
    statistic: Statistic = MEAN,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point estimate, low, high): seeded percentile bootstrap over examples (rows)."""
    rows = _as_rows(rows)
    point = statistic(rows)
    if len(rows) < 2 or n_boot < 1:
        return point, point, point
    boots = _replicates(rows, statistic, resample_counts(len(rows), n_boot, seed))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    # The percentile interval of a skewed statistic can miss its point estimate by rounding.
    return point, float(min(low, point)), float(max(high, point))


@dataclass(frozen=True)
class PairedTest:
    """System a minus system b on the same examples."""

    difference: float
    low: float  # percentile interval of the difference
    high: float
    p_value: float  # two-sided


def paired_bootstrap(
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    statistic: Statistic = MEAN,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedTest:
    """Paired bootstrap of statistic(a) - statistic(b): both resampled with the same examples.

    The p-value is twice the smaller share of resampled differences on either side of zero,
    with the usual +1 correction ((k + 1) / (n_boot + 1)), capped at 1: below 0.05 exactly when
    the 95 % percentile interval of the difference leaves out zero (up to that correction).
    """
    rows_a, rows_b = _as_rows(rows_a), _as_rows(rows_b)
    if len(rows_a) != len(rows_b):
        raise ValueError("paired bootstrap needs the same examples for both systems")
    observed = statistic(rows_a) - statistic(rows_b)
    if len(rows_a) < 2 or n_boot < 1:
        return PairedTest(observed, observed, observed, 1.0)
    counts = resample_counts(len(rows_a), n_boot, seed)
    diffs = _replicates(rows_a, statistic, counts) - _replicates(rows_b, statistic, counts)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    side = min(np.sum(diffs <= 0), np.sum(diffs >= 0))
    p_value = min(1.0, 2 * (side + 1) / (n_boot + 1))
    return PairedTest(float(observed), float(low), float(high), float(p_value))
