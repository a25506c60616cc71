"""The report's Inference cost section: each method's inference figures as ratios to the base
its run timed beside it (benchmark/inference.py), and whether its merged model scored as the
model as trained did, within a stated tolerance.

Ratios come from each run's own base, measured in the same process on the same prompts, then
are averaged over seeds; a ratio above 1 is an overhead for latency, memory and size, a gain
for tokens/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core import record as rec  # the run record's names

if TYPE_CHECKING:
    from reports.summary import LanguageSection

# Merged = unmerged when every metric is within this share of the unmerged score and no logit
# differs by more than LOGIT_TOLERANCE (fp32 merges differ by rounding, ~1e-6; fp16/bf16 merges
# or a wrong merge change predictions, and so scores).
SCORE_TOLERANCE = 0.005
LOGIT_TOLERANCE = 1e-3
# (figure, column title) of the timed figures, unmerged and merged side by side.
TIMED = [
    (rec.LATENCY_P50, "latency p50 / token"),
    (rec.LATENCY_P95, "latency p95 / token"),
    (rec.TOKENS_PER_S, "tokens/s"),
    (rec.PEAK_MEMORY, "peak memory"),
]


@dataclass
class Overhead:
    """One method on one scope: its figures over the base's, averaged over its runs."""

    method: str
    runs: int
    ratios: dict[str, float]  # `<model>/<figure>` -> adapted or merged over base
    trained_share: float  # trained weights' bytes over the base's saved size
    merged_size: float  # merged model's saved size over the base's
    max_logit_diff: float  # the largest over the runs (nan: not merged)
    score_drift: float  # the largest relative |merged - unmerged| of a metric (nan: not merged)
    changed: float  # predictions changed by merging, summed over the runs
    unavailable: str = ""  # why the method was not merged

    @property
    def agrees(self) -> bool | None:
        """Merged scores within the tolerances; None when not merged."""
        if math.isnan(self.max_logit_diff):
            return None
        return self.max_logit_diff <= LOGIT_TOLERANCE and self.score_drift <= SCORE_TOLERANCE


@dataclass
class InferenceSection:
    scope: str
    rows: list[Overhead] = field(default_factory=list)
    memory_kind: str = ""
    title: str = ""  # the report table's title (its scope, and family when there are several)
    key: str = ""  # the report table's key among the plots


def _mean(values: list[float]) -> float:
    found = [v for v in values if not math.isnan(v)]
    return sum(found) / len(found) if found else float("nan")


def summarise(section: LanguageSection) -> InferenceSection:
    """The inference figures of a report section's runs (rows without figures left out)."""
    scope = section.language
    out = InferenceSection(scope, title=section.title, key=section.key)
    for row in section.rows:
        timed = rec.inference_metric(scope, rec.BASE_MODEL, rec.LATENCY_P50)
        runs = [r for r in row.runs if timed in r.metrics]
        if not runs:
            continue
        ratios = {}
        for model in (rec.ADAPTED_MODEL, rec.MERGED_MODEL):
            for figure, _ in TIMED:
                ratios[f"{model}/{figure}"] = _mean(
                    [_ratio(r.metrics, scope, model, figure) for r in runs]
                )
        base_size = [_figure(r.metrics, scope, rec.BASE_MODEL, rec.SIZE_BYTES) for r in runs]
        trained = [_figure(r.metrics, scope, rec.ADAPTED_MODEL, rec.TRAINED_BYTES) for r in runs]
        merged = [_figure(r.metrics, scope, rec.MERGED_MODEL, rec.SIZE_BYTES) for r in runs]
        diffs = [r.metrics.get(rec.merged_metric(scope, rec.MAX_LOGIT_DIFF)) for r in runs]
        merged_runs = [r for r, d in zip(runs, diffs) if d is not None]
        drift = [
            _drift(_unmerged(r.metrics, scope, m), r.metrics.get(rec.merged_metric(scope, m)))
            for r in merged_runs
            for m in section.metrics
        ]
        out.rows.append(
            Overhead(
                method=row.method,
                runs=len(runs),
                ratios=ratios,
                trained_share=_mean([_div(t, b) for t, b in zip(trained, base_size)]),
                merged_size=_mean([_div(m, b) for m, b in zip(merged, base_size)]),
                max_logit_diff=max((d for d in diffs if d is not None), default=float("nan")),
                score_drift=max(drift, default=float("nan")),
                changed=sum(
                    r.metrics.get(rec.merged_metric(scope, rec.CHANGED_PREDICTIONS), 0.0)
                    for r in merged_runs
                ),
                unavailable=next(
                    (r.params.get(rec.MERGE_UNAVAILABLE, "") for r in runs if not merged_runs), ""
                ),
            )
        )
        out.memory_kind = out.memory_kind or runs[0].params.get(rec.INFERENCE_MEMORY_PARAM, "")
    return out


def _unmerged(metrics: dict[str, float], scope: str, name: str) -> float | None:
    """The unmerged score of the examples the merged model was evaluated on."""
    subset = metrics.get(rec.merged_metric(scope, rec.UNMERGED + name))
    return metrics.get(f"{scope}/{name}") if subset is None else subset


def _figure(metrics: dict[str, float], scope: str, model: str, figure: str) -> float:
    value = metrics.get(rec.inference_metric(scope, model, figure))
    return float("nan") if value is None else value


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def _ratio(metrics: dict[str, float], scope: str, model: str, figure: str) -> float:
    return _div(
        _figure(metrics, scope, model, figure), _figure(metrics, scope, rec.BASE_MODEL, figure)
    )


def _drift(unmerged: float | None, merged: float | None) -> float:
    if unmerged is None or merged is None:
        return float("nan")
    if unmerged == merged:
        return 0.0
    return abs(merged - unmerged) / max(abs(unmerged), 1e-12)


def _x(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}×"


def _agreement(row: Overhead) -> str:
    if row.agrees is None:
        return f"not merged ({row.unavailable})" if row.unavailable else "not merged"
    verdict = "yes" if row.agrees else "**no**"
    return (
        f"{verdict} (max logit diff {row.max_logit_diff:.1e}, {row.changed:.0f} predictions "
        f"changed, largest score change {100 * row.score_drift:.2f} %)"
    )


def blocks(sections: list[LanguageSection], images: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The Inference cost section: a table per scope and its plot; nothing without figures."""
    summaries = [s for s in (summarise(section) for section in sections) if s.rows]
    if not summaries:
        return []
    out: list[tuple[Any, ...]] = [
        ("h2", "Inference cost"),
        (
            "p",
            "Each method's figures over the base's, measured in its own run, in the same "
            "process, on the same prompts (benchmark/inference.py): latency per generated token "
            "at batch 1 (p50, p95), tokens/s at the evaluation batch size, peak memory; each "
            "cell unmerged / merged. Above 1 is an overhead, except for tokens/s. Sizes on "
            "disk: the trained weights over the base's saved size, and the merged model's. "
            f"Merged = unmerged when every metric is within {100 * SCORE_TOLERANCE:g} % of the "
            f"unmerged score and no logit differs by more than {LOGIT_TOLERANCE:g} "
            "(teacher-forced, first evaluation batch).",
        ),
    ]
    for summary in summaries:
        header = [
            "method",
            *[title for _, title in TIMED],
            "trained weights / base",
            "merged size",
            "merged = unmerged",
        ]
        body = []
        for row in summary.rows:
            timed = [
                f"{_x(row.ratios[f'{rec.ADAPTED_MODEL}/{figure}'])} / "
                f"{_x(row.ratios[f'{rec.MERGED_MODEL}/{figure}'])}"
                for figure, _ in TIMED
            ]
            body.append(
                [
                    row.method,
                    *timed,
                    "–" if math.isnan(row.trained_share) else f"{100 * row.trained_share:.1f} %",
                    _x(row.merged_size),
                    _agreement(row),
                ]
            )
        out.append(("h3", f"{summary.title}: inference cost against the base"))
        out.append(("table", header, body))
        if summary.memory_kind:
            out.append(("p", f"Peak memory: {summary.memory_kind}."))
        key = image_key(summary.key)
        if key in images:
            out.append(("img", images[key], f"{summary.title}: inference overhead per method"))
    return out


def image_key(scope: str) -> str:
    return f"inference_{scope}"
