"""Exact match after whitespace normalisation."""

from __future__ import annotations

from metrics import Metric, MetricResult, register


@register
class ExactMatch(Metric):
    """1.0 when prediction and reference are equal once runs of whitespace are folded."""

    name = "exact_match"

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        per_example = [float(p.split() == r.split()) for p, r in zip(predictions, references)]
        corpus = sum(per_example) / len(per_example) if per_example else 0.0
        return MetricResult(corpus=corpus, per_example=per_example)

    def signature(self) -> str:
        return "exact_match|whitespace:fold|v1"
