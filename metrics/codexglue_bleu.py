"""CodeXGLUE's text-to-code BLEU, so numbers can be set beside published tables."""

from __future__ import annotations

import math
from collections import Counter

from metrics import Metric, MetricResult, register

MAX_ORDER = 4


def _ngrams(tokens: list[str], order: int) -> Counter:
    return Counter(tuple(tokens[i : i + order]) for i in range(len(tokens) - order + 1))


def smoothed_bleu(references: list[list[str]], hypotheses: list[list[str]]) -> float:
    """Corpus BLEU-4 with add-one smoothing on every order, as CodeXGLUE's `bleu.py`
    (`compute_bleu(..., smooth=True)`), one reference per hypothesis; 0-100."""
    matches = [0] * MAX_ORDER
    possible = [0] * MAX_ORDER
    ref_length = hyp_length = 0
    for ref, hyp in zip(references, hypotheses):
        ref_length += len(ref)
        hyp_length += len(hyp)
        for order in range(1, MAX_ORDER + 1):
            overlap = _ngrams(ref, order) & _ngrams(hyp, order)
            matches[order - 1] += sum(overlap.values())
            possible[order - 1] += max(0, len(hyp) - order + 1)
    precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / MAX_ORDER)
    if hyp_length == 0:
        return 0.0
    ratio = hyp_length / ref_length if ref_length else float("inf")
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return 100.0 * geo_mean * brevity


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

    def signature(self) -> str:
        return "codexglue_bleu|tok:split|order:4|smooth:add-one|corpus|codexglue:text-to-code"
