"""CodeXGLUE's text-to-code BLEU, so numbers can be set beside published tables."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from metrics import Metric, MetricResult, register

MAX_ORDER = 4


def _ngrams(tokens: list[str], order: int) -> Counter:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def pair_statistics(reference: list[str], hypothesis: list[str]) -> list[int]:
    """One pair's counts: reference and hypothesis lengths, then n-gram matches and possible
    n-grams for orders 1-4 (summed over pairs, they give the corpus score)."""
    row = [len(reference), len(hypothesis)]
    for order in range(1, MAX_ORDER + 1):
        row.append(sum((_ngrams(reference, order) & _ngrams(hypothesis, order)).values()))
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
        hyps = [p.split() for p in predictions]
        refs = [r.split() for r in references]
        per_example = [smoothed_bleu([r], [h]) for r, h in zip(refs, hyps)]
        return MetricResult(corpus=smoothed_bleu(refs, hyps), per_example=per_example)

    def statistics(
        self, predictions: list[str], references: list[str], language: str
    ) -> list[list[float]]:
        return [pair_statistics(r.split(), p.split()) for p, r in zip(predictions, references)]

    def score(self, totals: Sequence[float], count: int) -> float:
        return score_counts(totals)

    def signature(self) -> str:
        return "codexglue_bleu|tok:split|order:4|smooth:add-one|corpus|codexglue:text-to-code"
