"""`compare --promote ALIAS`: the report's best method per language, by one metric, and its
model's registered version given the alias, tagged with the comparison run that chose it.

The best method is the one whose pooled score in the report's table is best (the metric's
direction from the metric registry); of its runs (seeds), the one whose own score is best,
the newest on a tie. The registry's side (registering, aliases, tags) is
`benchmark.model_registry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from benchmark import model_registry
from core import record as rec  # the run record's names
from reports.records import ReportError
from reports.summary import LanguageSection, MethodRow, direction, primary_metric


@dataclass
class Promotion:
    """What `compare --promote` asked for; `steps` holds what was done, once applied."""

    alias: str
    metric: str = ""  # "": the report's primary metric
    register_as: str = ""  # the name to register a best model under when it is not registered
    steps: list[model_registry.Step] = field(default_factory=list)

    def choose(self, sections: list[LanguageSection]) -> list[model_registry.Choice]:
        """The best method's run of each language by the metric."""
        if self.metric:
            import metrics  # an unknown name: one line with the nearest registered one

            metrics.get_metric(self.metric)
        choices: dict[str, tuple[model_registry.Choice, LanguageSection]] = {}
        for section in sections:
            task, language = rec.split_scope(section.language)
            if all(rec.signature_param(task) in r.params for row in section.rows for r in row.runs):
                continue  # an evaluation-only task (signed by its own name) has no model of its own
            metric = self.metric or primary_metric(section.metrics)
            if metric not in section.metrics:
                raise ReportError(
                    f"--promote-metric {metric}: the {section.language} table has no {metric}; "
                    f"its metrics: {', '.join(section.metrics)}"
                )
            higher = direction(metric)
            rows = [r for r in section.rows if not math.isnan(_score(r, metric))]
            if not rows:
                raise ReportError(
                    f"--promote-metric {metric}: no {section.language} run has a {metric} score"
                )
            sign = 1.0 if higher else -1.0
            best = max(rows, key=lambda r: sign * _score(r, metric))  # the first on a tie
            key = rec.metric(task, language, metric)
            run = max(
                best.runs,
                key=lambda r: (sign * r.metrics.get(key, -sign * math.inf), r.start_time),
            )
            choice = model_registry.Choice(
                section.language, best.method, run.run_id, metric, _score(best, metric), higher
            )
            earlier = choices.get(section.language)
            if earlier is not None:  # a table per family: the best of them, on the same data
                choice = _better(earlier, (choice, section))
            choices[section.language] = (choice, section)
        return [choice for choice, _ in choices.values()]

    def plan(self, client: MlflowClient, sections: list[LanguageSection]) -> list:
        """Every language's promotion, refused (nothing written) if one cannot be made."""
        return model_registry.plan(client, self.alias, self.choose(sections), self.register_as)

    def apply(self, client: MlflowClient, steps: list, comparison_run_id: str) -> None:
        model_registry.promote(client, self.alias, steps, comparison_run_id)
        self.steps = steps


def _better(
    first: tuple[model_registry.Choice, LanguageSection],
    second: tuple[model_registry.Choice, LanguageSection],
) -> model_registry.Choice:
    """The better of two families' choices for one scope; refused when their tables were
    scored on different data (their scores do not compare)."""
    (one, one_section), (other, other_section) = first, second
    if one_section.fingerprint != other_section.fingerprint:
        raise ReportError(
            f"--promote: the {one.language} tables of {one_section.title} and "
            f"{other_section.title} were evaluated on different data, so their best models do "
            'not compare: promote one family, e.g. --filter "params.`model.family` = '
            f"'{one_section.family}'\""
        )
    sign = 1.0 if one.higher_is_better else -1.0
    return other if sign * other.value > sign * one.value else one


def _score(row: MethodRow, metric: str) -> float:
    estimate = row.estimates.get(metric)
    return estimate.point if estimate is not None else math.nan
