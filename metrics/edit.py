"""Edit similarity and edit distance (Levenshtein, on characters) through rapidfuzz."""

from __future__ import annotations

import rapidfuzz
from rapidfuzz.distance import Levenshtein

from metrics import Metric, MetricResult, register


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@register
class EditSimilarity(Metric):
    """1 - Levenshtein distance / length of the longer string, on characters (0-1)."""

    name = "edit_similarity"

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = [Levenshtein.normalized_similarity(p, r) for p, r in zip(predictions, references)]
        return MetricResult(corpus=_mean(values), per_example=values)

    def signature(self) -> str:
        version = rapidfuzz.__version__
        return f"edit_similarity|levenshtein:chars|normalised:max_len|rapidfuzz:{version}"


@register
class EditDistance(Metric):
    """Mean raw Levenshtein distance in characters (lower is better)."""

    name = "edit_distance"
    higher_is_better = False

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = [float(Levenshtein.distance(p, r)) for p, r in zip(predictions, references)]
        return MetricResult(corpus=_mean(values), per_example=values)

    def signature(self) -> str:
        return f"edit_distance|levenshtein:chars|mean|rapidfuzz:{rapidfuzz.__version__}"
