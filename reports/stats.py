"""Bootstrap confidence intervals and paired bootstrap tests over evaluated examples.

Every statistic here is a function of column sums of per-example rows: a mean (one column of
values), or a corpus BLEU (columns of sufficient statistics: lengths, n-gram matches and
totals). A resample is then a vector of example counts, and its statistic is computed from
`counts @ rows`: exact for corpus BLEU, and fast (no re-tokenising, no per-resample Python loop
over examples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import BLEU

from metrics._text import code_tokens


@dataclass(frozen=True)
class Statistic:
    """A statistic computed from the column sums of per-example rows and the example count."""

    name: str
    finish: Callable[[np.ndarray, float], float]
    corpus_level: bool = False  # True: recomputes a corpus metric, not a mean of examples

    def __call__(self, rows: np.ndarray) -> float:
        rows = _as_rows(rows)
        return self.finish(rows.sum(axis=0), float(len(rows)))


def _as_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=float)
    return rows[:, None] if rows.ndim == 1 else rows


MEAN = Statistic("mean of per-example values", lambda totals, n: float(totals[0] / n))

_BLEU = BLEU(tokenize="none")


def bleu_rows(predictions: list[str], references: list[str]) -> np.ndarray:
    """Per-example sacrebleu sufficient statistics on code tokens, as `metrics.bleu` scores."""
    hyps = [" ".join(code_tokens(p)) for p in predictions]
    refs = [" ".join(code_tokens(r)) for r in references]
    return np.array(_BLEU._extract_corpus_statistics(hyps, [refs]), dtype=float)


def _corpus_bleu(totals: np.ndarray, n: float) -> float:
    return float(_BLEU._compute_score_from_stats(list(totals)).score)


CORPUS_BLEU = Statistic("corpus BLEU from summed sufficient statistics", _corpus_bleu, True)

CODEXGLUE_ORDER = 4


def codexglue_rows(predictions: list[str], references: list[str]) -> np.ndarray:
    """Per-example statistics of `metrics.codexglue_bleu`: reference and hypothesis lengths,
    then n-gram matches and possible n-grams for orders 1-4 (whitespace tokens)."""
    from metrics.codexglue_bleu import _ngrams

    rows = []
    for prediction, reference in zip(predictions, references):
        hyp, ref = prediction.split(), reference.split()
        row = [len(ref), len(hyp)]
        for order in range(1, CODEXGLUE_ORDER + 1):
            row.append(sum((_ngrams(ref, order) & _ngrams(hyp, order)).values()))
        row += [max(0, len(hyp) - order + 1) for order in range(1, CODEXGLUE_ORDER + 1)]
        rows.append(row)
    return np.array(rows, dtype=float).reshape(len(rows), 2 + 2 * CODEXGLUE_ORDER)


def _codexglue_bleu(totals: np.ndarray, n: float) -> float:
    # Same formula as metrics.codexglue_bleu.smoothed_bleu, from summed counts.
    ref_length, hyp_length = totals[0], totals[1]
    matches = totals[2 : 2 + CODEXGLUE_ORDER]
    possible = totals[2 + CODEXGLUE_ORDER :]
    if hyp_length == 0:
        return 0.0
    geo_mean = float(np.exp(np.mean(np.log((matches + 1.0) / (possible + 1.0)))))
    ratio = hyp_length / ref_length if ref_length else float("inf")
    brevity = 1.0 if ratio > 1.0 else float(np.exp(1 - 1.0 / ratio))
    return 100.0 * geo_mean * brevity


CORPUS_CODEXGLUE_BLEU = Statistic(
    "CodeXGLUE corpus BLEU from summed n-gram counts", _codexglue_bleu, True
)

# Metrics whose corpus value is not a mean of per-example values but can be recomputed exactly
# from per-example sufficient statistics; every other metric is bootstrapped as a mean.
CORPUS_STATISTICS: dict[str, tuple[Callable[[list[str], list[str]], np.ndarray], Statistic]] = {
    "bleu": (bleu_rows, CORPUS_BLEU),
    "codexglue_bleu": (codexglue_rows, CORPUS_CODEXGLUE_BLEU),
}


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
