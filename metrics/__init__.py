"""Metric plugins: each scores generated code against references and states its settings.

A metric is one module in this package holding a `Metric` subclass decorated with `@register`.
Its `signature()` names every setting and library version that changes the number; the harness
logs it as a param so two numbers are only compared when their signatures match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from core.registry import Registry

METRICS: Registry[type[Metric]] = Registry("metric", __name__, lambda cls: cls.name)


@dataclass
class MetricResult:
    corpus: float  # the corpus-level value reported for the run
    per_example: list[float]  # one value per prediction, in input order (for intervals)


class Metric:
    """One metric. Subclasses set `name` and implement `compute` and `signature`."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    languages: ClassVar[tuple[str, ...] | None] = None  # None: every language
    default: ClassVar[bool] = True  # part of `eval.metrics=all`

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        raise NotImplementedError

    def signature(self) -> str:
        raise NotImplementedError

    def statistics(
        self, predictions: list[str], references: list[str], language: str
    ) -> list[list[float]] | None:
        """Per-example sufficient statistics of a corpus-level metric: rows whose column sums
        give the corpus value through `score` (sacrebleu's design), so a bootstrap resamples
        examples and rescores exactly. None (the default): the corpus value is the mean of the
        per-example values, and that mean is what is resampled."""
        return None

    def score(self, totals: Sequence[float], count: int) -> float:
        """The corpus value from the column sums of `statistics` rows over `count` examples."""
        raise NotImplementedError(f"metric {self.name!r} has no sufficient statistics")

    def supports(self, language: str) -> bool:
        return self.languages is None or language in self.languages


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: make a metric available by its `name`."""
    return METRICS.register(cls)


def available() -> list[str]:
    """Names of every registered metric, sorted."""
    return METRICS.names()


def get_metric(name: str) -> Metric:
    return METRICS.get(name)()


def resolve(names: list[str]) -> list[Metric]:
    """Metric instances for `names`; `all` stands for every metric marked default."""
    chosen: list[str] = []
    for name in names:
        if name == "all":
            chosen += [n for n in available() if METRICS.get(n).default]
        else:
            METRICS.get(name)  # validates the name
            chosen.append(name)
    return [get_metric(n) for n in dict.fromkeys(chosen)]
