"""CodeXGLUE's text-to-code BLEU, so numbers can be set beside published tables."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from metrics import Metric, MetricResult, register

MAX_ORDER = 4


def _ngrams(tokens: list[str], order: int) -> Counter:
    # zip of shifted views: the n-grams as tuples, without slicing the list once per n-gram.
    return Counter(zip(*(tokens[i:] for i in range(order))))


def pair_statistics(reference: list[str], hypothesis: list[str]) -> list[int]:
    """One pair's counts: reference and hypothesis lengths, then n-gram matches and possible
    n-grams for orders 1-4 (summed over pairs, they give the corpus score)."""
    row = [len(reference), len(hypothesis)]
    for order in range(1, MAX_ORDER + 1):
        if order > len(hypothesis) or order > len(reference):
            row.append(0)  # no n-gram of this order on one side: nothing can match
            continue
        found, wanted = _ngrams(hypothesis, order), _ngrams(reference, order)
        if len(found) > len(wanted):
            found, wanted = wanted, found
        row.append(sum(min(count, wanted[gram]) for gram, count in found.items() if gram in wanted))
    row += [max(0, len(hypothesis) - order + 1) for order in range(1, MAX_ORDER + 1)]
    return row


def score_counts(totals: Sequence[float]) -> float:
    """BLEU-4 with add-one smoothing on every order from summed `pair_statistics`; 0-100."""
    ref_length, hyp_length = totals[0], totals[1]
    matches = totals[2 : 2 + MAX_ORDER]
    possible = totals[2 + MAX_ORDER : 2 + 2 * MAX_ORDER]
    precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / MAX_ORDER)
    if hyp_length == 0:
        return 0.0
    ratio = hyp_length / ref_length if ref_length else float("inf")
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return 100.0 * geo_mean * brevity


def smoothed_bleu(references: list[list[str]], hypotheses: list[list[str]]) -> float:
    """Corpus BLEU-4 with add-one smoothing on every order, as CodeXGLUE's `bleu.py`
    (`compute_bleu(..., smooth=True)`), one reference per hypothesis; 0-100."""
    totals = [0] * (2 + 2 * MAX_ORDER)
    for ref, hyp in zip(references, hypotheses):
        totals = [t + v for t, v in zip(totals, pair_statistics(ref, hyp))]
    return score_counts(totals)


@register
class CodexglueBleu(Metric):
    """CodeXGLUE text-to-code BLEU: whitespace (`str.split`) tokens, BLEU-4, add-one smoothing,
    corpus level (0-100); per example, the same formula on one pair."""

    name = "codexglue_bleu"

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        # Each pair counted once: its row scores the pair, the rows' sums score the corpus
        # (what smoothed_bleu computes from the same counts).
        rows = self.statistics(predictions, references, language)
        totals = [sum(column) for column in zip(*rows)] if rows else [0] * (2 + 2 * MAX_ORDER)
        return MetricResult(
            corpus=score_counts(totals), per_example=[score_counts(row) for row in rows]
        )

    def statistics(
        self, predictions: list[str], references: list[str], language: str
    ) -> list[list[float]]:
        return [pair_statistics(r.split(), p.split()) for p, r in zip(predictions, references)]

    def score(self, totals: Sequence[float], count: int) -> float:
        return score_counts(totals)

    def signature(self) -> str:
        return "codexglue_bleu|tok:split|order:4|smooth:add-one|corpus|codexglue:text-to-code"
