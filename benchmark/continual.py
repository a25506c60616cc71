"""Continual-learning bookkeeping for the sequential protocol: forgetting and transfer.

Signs are oriented so that positive is good for transfer and bad for forgetting, whatever the
metric's direction: `forgetting` is the quality lost on a language between right after its own
training and the end; backward transfer (`bwt`) is minus the mean forgetting over all languages
but the last (Lopez-Paz & Ranzato, 2017); forward transfer (`fwt`) is the sequential score right
after a language's training minus the score of a fresh model trained on that language alone.
Retention (`benchmark/retention.py`) is the loss side: the model after each language is scored
against the base on the held-out code of the languages it has not been trained on yet and on the
base's pretraining text (`retention/<task>/<lang>/<set>/...`; after the last, the pretraining
text alone when the run covers every known language).
"""

from __future__ import annotations

import logging

import mlflow

import metrics as metric_registry
from benchmark.config import RunConfig
from benchmark.evaluation import EvalResult
from core import record

log = logging.getLogger("adaptbench")


def _gain(metric: str, before: float, after: float) -> float:
    """How much better `after` is than `before` for this metric."""
    higher_is_better = metric_registry.get_metric(metric).higher_is_better
    return after - before if higher_is_better else before - after


def forgetting(
    task: str, after_own: dict[str, EvalResult], final: dict[str, EvalResult], languages: list[str]
) -> dict[str, float]:
    """`forgetting/<task>/<lang>/<metric>` for every language but the last, and
    `bwt/<task>/<metric>`."""
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    for language in languages[:-1]:
        for metric, result in after_own[language].scores.items():
            lost = -_gain(metric, result.corpus, final[language].scores[metric].corpus)
            out[record.forgetting_metric(task, language, metric)] = lost
            per_metric.setdefault(metric, []).append(lost)
    for metric, values in per_metric.items():
        out[record.backward_transfer_metric(task, metric)] = -sum(values) / len(values)
    return out


def forward_transfer(
    task: str, after_own: dict[str, EvalResult], config: RunConfig
) -> dict[str, float]:
    """`fwt/<task>/<lang>/<metric>` against the latest finished `fresh` run of the same method
    and preset in this experiment, when one exists (its run id is logged as a param)."""
    run = mlflow.active_run()
    if run is None:
        return {}
    filters = (
        f"tags.method = '{config.method}' and tags.preset = '{config.preset}' "
        "and tags.protocol = 'fresh' and attributes.status = 'FINISHED'"
    )
    found = mlflow.search_runs(
        experiment_ids=[run.info.experiment_id],
        filter_string=filters,
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not found:
        log.info("no fresh %s run in this experiment: forward transfer not computed", config.method)
        return {}
    reference = found[0]
    out: dict[str, float] = {}
    for language, result in after_own.items():
        for metric, score in result.scores.items():
            key = record.metric(task, language, metric)
            if key in reference.data.metrics:
                fwt = record.forward_transfer_metric(task, language, metric)
                out[fwt] = _gain(metric, reference.data.metrics[key], score.corpus)
    mlflow.log_param("fwt.reference_run", reference.info.run_id)
    return out
