"""Bootstrap confidence intervals and paired bootstrap tests over per-example values."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sacrebleu.metrics import BLEU

from metrics._text import code_tokens

Statistic = Callable[[np.ndarray], float]


def mean(rows: np.ndarray) -> float:
    return float(np.mean(rows))


_BLEU = BLEU(tokenize="none")


def bleu_rows(predictions: list[str], references: list[str]) -> np.ndarray:
    """Per-example BLEU sufficient statistics (lengths, n-gram matches and totals), so that a
    resample's corpus BLEU is computed from sums, not re-tokenised: exact and fast."""
    hyps = [" ".join(code_tokens(p)) for p in predictions]
    refs = [" ".join(code_tokens(r)) for r in references]
    return np.array(_BLEU._extract_corpus_statistics(hyps, [refs]), dtype=float)


def corpus_bleu(rows: np.ndarray) -> float:
    """sacrebleu's corpus BLEU from summed sufficient statistics."""
    return float(_BLEU._compute_score_from_stats(list(rows.sum(axis=0))).score)


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(
    rows: np.ndarray,
    statistic: Statistic = mean,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(point estimate, low, high): percentile bootstrap over examples (rows)."""
    rows = np.asarray(rows, dtype=float)
    point = statistic(rows)
    if len(rows) < 2:
        return point, point, point
    boots = np.array([statistic(rows[idx]) for idx in _indices(len(rows), n_boot, seed)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return point, float(min(low, point)), float(max(high, point))


def paired_bootstrap(
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    statistic: Statistic = mean,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(observed difference a - b, two-sided p-value) resampling the same examples for both.

    The p-value is twice the share of resamples whose difference falls on the other side of
    zero (Koehn, 2004, in its two-sided form), floored at 1 / n_boot.
    """
    rows_a, rows_b = np.asarray(rows_a, dtype=float), np.asarray(rows_b, dtype=float)
    if len(rows_a) != len(rows_b):
        raise ValueError("paired bootstrap needs the same examples for both systems")
    observed = statistic(rows_a) - statistic(rows_b)
    diffs = np.array(
        [
            statistic(rows_a[idx]) - statistic(rows_b[idx])
            for idx in _indices(len(rows_a), n_boot, seed)
        ]
    )
    if observed == 0:
        return 0.0, 1.0
    other_side = np.mean(diffs <= 0) if observed > 0 else np.mean(diffs >= 0)
    return float(observed), float(min(1.0, max(2 * other_side, 1 / n_boot)))
