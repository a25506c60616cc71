"""Bootstrap intervals, paired tests, corpus statistics and the Pareto front."""

from __future__ import annotations

import numpy as np
import pytest

import metrics
from metrics import get_metric
from reports.plots import pareto_front
from reports.stats import (
    bootstrap_ci,
    corpus_statistic,
    paired_bootstrap,
    resample_counts,
)

# The registered metrics that rescore from sufficient statistics (found, not listed).
CORPUS_LEVEL = [name for name in metrics.available() if corpus_statistic(name) is not None]

REFS = [f"def f{i}(x):\n    return x + {i} * x\n" for i in range(40)]
PREDS = [r.replace("+", "-") if i % 3 else r for i, r in enumerate(REFS)]


def test_interval_contains_the_estimate_and_shrinks_with_more_examples():
    rng = np.random.default_rng(1)
    small, large = rng.normal(0.5, 0.2, 30), rng.normal(0.5, 0.2, 3000)
    point, low, high = bootstrap_ci(small, seed=0)
    assert low <= point <= high and point == pytest.approx(small.mean())
    point_l, low_l, high_l = bootstrap_ci(large, seed=0)
    assert low_l <= point_l <= high_l
    # Width goes as 1 / sqrt(n): 100 times the examples, about a tenth of the width.
    assert (high_l - low_l) < (high - low) / 4


def test_interval_is_seeded():
    values = np.random.default_rng(2).uniform(0, 1, 50)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_resample_counts_draw_n_examples_each():
    counts = resample_counts(7, 20, seed=0)
    assert counts.shape == (20, 7) and (counts.sum(axis=1) == 7).all()


def test_the_corpus_level_metrics_are_found_in_the_registry():
    assert {"bleu", "codexglue_bleu"} <= set(CORPUS_LEVEL)
    assert corpus_statistic("edit_similarity") is None  # a mean of examples
    assert corpus_statistic("humaneval/pass@1") is None  # not a registered metric


@pytest.mark.parametrize("name", CORPUS_LEVEL)
def test_corpus_statistics_reproduce_the_registry_corpus_value(name):
    statistic = corpus_statistic(name)
    preds = [*PREDS[:-1], ""]  # an empty prediction too
    expected = get_metric(name).compute(preds, REFS, "python").corpus
    assert statistic(statistic.rows(preds, REFS, "python")) == pytest.approx(expected)
    # One example's statistics score as that example's own value.
    first = get_metric(name).compute(preds[:1], REFS[:1], "python").corpus
    assert statistic(statistic.rows(preds[:1], REFS[:1], "python")) == pytest.approx(first)


def test_corpus_bleu_interval_contains_the_corpus_value_and_shrinks():
    bleu = corpus_statistic("bleu")
    rows = bleu.rows(PREDS, REFS, "python")
    point, low, high = bootstrap_ci(rows, bleu, n_boot=300)
    assert low <= point <= high
    _, low_4, high_4 = bootstrap_ci(np.concatenate([rows] * 4), bleu, n_boot=300)
    assert (high_4 - low_4) < (high - low)


def test_paired_bootstrap_separates_a_real_difference_from_none():
    base = np.random.default_rng(0).uniform(0, 1, 200)
    test = paired_bootstrap(base + 0.1, base, n_boot=500)
    assert test.difference == pytest.approx(0.1) and test.p_value < 0.01
    assert test.low == pytest.approx(0.1) and test.high == pytest.approx(0.1)
    same = paired_bootstrap(base, base.copy(), n_boot=500)
    assert same.difference == 0 and same.p_value == 1.0


def test_paired_bootstrap_on_noisy_equal_systems_is_not_significant():
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 1, 300), rng.uniform(0, 1, 300)
    test = paired_bootstrap(a, b, n_boot=1000)
    assert test.low < 0 < test.high and test.p_value > 0.05


def test_paired_bootstrap_needs_the_same_examples():
    with pytest.raises(ValueError):
        paired_bootstrap(np.ones(3), np.ones(4))


def test_pareto_front():
    # (cost, quality): the second is dominated by the first, the last is best but costly.
    points = [(1, 0.5), (2, 0.4), (3, 0.7), (0.5, 0.1)]
    assert pareto_front(points) == [3, 0, 2]
    # Lower-is-better quality (an edit distance): the cheapest and the lowest.
    assert pareto_front([(1, 50.0), (2, 60.0), (3, 10.0)], higher_is_better=False) == [0, 2]
