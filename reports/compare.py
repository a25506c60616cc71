"""The comparison report: every method side by side, with intervals, tests, costs and plots.

Runs are read from any MLflow tracking store. Only comparable runs are put side by side: same
preset, same data fingerprint per language and same metric signatures. The largest such
group is reported (most methods, then most runs, then the newest); every other run is listed
under "Left out" with the reason. Intervals are 95 % percentile bootstraps over the
evaluated examples (corpus BLEU from resampled sufficient statistics; every other metric as the
mean of its per-example values); each method is tested against a reference method with a
paired bootstrap on the same examples.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

import metrics as metric_registry
from reports import plots, render
from reports.stats import bleu_rows, bootstrap_ci, corpus_bleu, mean, paired_bootstrap

KIND_TAG = "adaptbench.kind"
SIGNIFICANCE = 0.05
COSTS = [
    ("train_time_s", "train time (s)"),
    ("peak_memory_mb", "peak memory (MB)"),
    ("tokens_per_s", "train tokens/s"),
    ("skipped_steps", "skipped steps"),
]


@dataclass
class RunRecord:
    run_id: str
    name: str
    method: str
    preset: str
    protocol: str
    status: str
    error: str
    seed: str
    languages: list[str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def key(self) -> tuple:
        """What must match for two runs to be compared."""
        fingerprints = tuple(
            sorted((k, v) for k, v in self.params.items() if k.endswith(".fingerprint"))
        )
        signatures = tuple(
            sorted(
                (k, v)
                for k, v in self.params.items()
                if k.startswith("metric.") and k.endswith(".signature") and "humaneval" not in k
            )
        )
        return (self.preset, fingerprints, signatures)


@dataclass
class MethodRow:
    """One method on one language: seeds pooled."""

    method: str
    runs: list[RunRecord]
    values: dict[str, tuple[float, float, float]]  # metric -> (point, low, high)
    seed_spread: dict[str, tuple[float, float]]  # metric -> (mean, std) across seeds
    versus_reference: dict[str, tuple[float, float]]  # metric -> (difference, p-value)
    costs: dict[str, float]
    trainable: int
    share: float
    weights_bytes: float


def load_runs(client: MlflowClient, experiment: str, filter_string: str = "") -> list[RunRecord]:
    """Benchmark runs (not suite parents or comparison runs) of `experiment`, newest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(
            f"no experiment {experiment!r} in the tracking store {mlflow.get_tracking_uri()}: "
            "run the suite first, or pass --experiment"
        )
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    records = []
    for run in runs:
        tags = run.data.tags
        if tags.get(KIND_TAG) or "method" not in tags:
            continue
        languages = json.loads(run.data.params.get("run.languages", "[]"))
        records.append(
            RunRecord(
                run_id=run.info.run_id,
                name=run.info.run_name or run.info.run_id[:8],
                method=tags["method"],
                preset=tags.get("preset", "?"),
                protocol=tags.get("protocol", "fresh"),
                status=run.info.status,
                error=tags.get("error", ""),
                seed=run.data.params.get("train.seed", "?"),
                languages=languages,
                params=run.data.params,
                metrics=run.data.metrics,
                start_time=run.info.start_time or 0,
            )
        )
    return records


def _table(client: MlflowClient, record: RunRecord, language: str, tmp: Path) -> pd.DataFrame:
    if language not in record.tables:
        path = client.download_artifacts(
            record.run_id, f"eval/{language}_examples.json", str(tmp / record.run_id)
        )
        payload = json.loads(Path(path).read_text())
        record.tables[language] = pd.DataFrame(payload["data"], columns=payload["columns"])
    return record.tables[language]


def _rows(table: pd.DataFrame, metric: str) -> tuple[np.ndarray, Any]:
    if metric == "bleu":
        return bleu_rows(table["prediction"].tolist(), table["reference"].tolist()), corpus_bleu
    return table[metric].to_numpy(dtype=float), mean


def _pooled(tables: list[pd.DataFrame], metric: str) -> tuple[np.ndarray, Any]:
    """Rows of every seed's run on the same examples, averaged per example (or, for BLEU's
    sufficient statistics, summed: the pooled corpus over seeds)."""
    parts = [_rows(t.sort_values("id"), metric) for t in tables]
    statistic = parts[0][1]
    rows = np.mean([p[0] for p in parts], axis=0)
    return rows, statistic


def summarise(
    client: MlflowClient,
    group: list[RunRecord],
    language: str,
    reference: str,
    n_boot: int,
    seed: int,
    tmp: Path,
) -> tuple[list[MethodRow], list[str]]:
    """One row per method for `language`, and the metric names shown."""
    with_language = [r for r in group if language in r.languages]
    names = sorted(
        k.split(".")[1]
        for k in with_language[0].params
        if k.startswith("metric.") and k.endswith(".signature") and "humaneval" not in k
    )
    by_method: dict[str, list[RunRecord]] = {}
    for record in with_language:
        by_method.setdefault(record.method, []).append(record)
    pooled = {
        (method, metric): _pooled([_table(client, r, language, tmp) for r in runs], metric)
        for method, runs in by_method.items()
        for metric in names
    }
    rows = []
    for method, runs in sorted(by_method.items()):
        values, spread, versus = {}, {}, {}
        for metric in names:
            data, statistic = pooled[(method, metric)]
            values[metric] = bootstrap_ci(data, statistic, n_boot, seed)
            per_seed = [r.metrics.get(f"{language}/{metric}", np.nan) for r in runs]
            spread[metric] = (float(np.nanmean(per_seed)), float(np.nanstd(per_seed)))
            if method != reference and (reference, metric) in pooled:
                ref_data, _ = pooled[(reference, metric)]
                if len(ref_data) == len(data):
                    versus[metric] = paired_bootstrap(data, ref_data, statistic, n_boot, seed)
        costs = {
            key: float(np.mean([r.metrics.get(f"{language}/{key}", np.nan) for r in runs]))
            for key, _ in COSTS
        }
        first = runs[0]
        rows.append(
            MethodRow(
                method=method,
                runs=runs,
                values=values,
                seed_spread=spread,
                versus_reference=versus,
                costs=costs,
                trainable=int(first.params.get("trainable_params", 0)),
                share=float(first.params.get("trainable_share", 0.0)),
                weights_bytes=first.metrics.get(f"{language}/trained_weights_bytes", np.nan),
            )
        )
    return rows, names


def choose_group(records: list[RunRecord]) -> tuple[list[RunRecord], list[tuple[RunRecord, str]]]:
    """The largest comparable group of finished fresh runs (most methods, then most runs, then
    the newest); every other run with the reason it was left out."""
    finished = [r for r in records if r.status == "FINISHED"]
    fresh = [r for r in finished if r.protocol == "fresh"]
    left_out: list[tuple[RunRecord, str]] = [
        (r, f"status {r.status}: {r.error or 'no error recorded'}")
        for r in records
        if r.status != "FINISHED"
    ]
    if not fresh:
        return [], left_out
    groups: dict[tuple, list[RunRecord]] = {}
    for record in fresh:  # newest first, so a group's first run is its newest
        groups.setdefault(record.key(), []).append(record)
    best = max(
        groups.values(),
        key=lambda runs: (len({r.method for r in runs}), len(runs), runs[0].start_time),
    )
    anchor = best[0]
    group = []
    for record in finished:
        if record.protocol != "fresh":
            continue  # sequential runs have their own table
        reason = _difference(anchor, record)
        if reason:
            left_out.append((record, reason))
        else:
            group.append(record)
    return group, left_out


def _difference(anchor: RunRecord, other: RunRecord) -> str:
    if other.preset != anchor.preset:
        return f"preset {other.preset!r}, not {anchor.preset!r}"
    a, b = anchor.key(), other.key()
    fingerprints = {k for k, v in set(a[1]) ^ set(b[1])}
    if fingerprints:
        return "data fingerprint differs (" + ", ".join(sorted(fingerprints)) + ")"
    signatures = {k for k, v in set(a[2]) ^ set(b[2])}
    if signatures:
        return "metric signature differs (" + ", ".join(sorted(signatures)) + ")"
    return ""


def forgetting_rows(records: list[RunRecord], anchor: RunRecord | None) -> list[dict[str, Any]]:
    """Sequential runs comparable with the anchor: score after own training, final, forgetting."""
    out = []
    for record in records:
        if record.status != "FINISHED" or record.protocol != "sequential":
            continue
        if anchor is not None and _difference(anchor, record):
            continue
        for key, value in sorted(record.metrics.items()):
            if not key.startswith("forgetting/"):
                continue
            _, language, metric = key.split("/", 2)
            out.append(
                {
                    "method": record.method,
                    "seed": record.seed,
                    "language": language,
                    "metric": metric,
                    "after own training": record.metrics.get(f"{language}/{metric}", np.nan),
                    "final": record.metrics.get(f"final/{language}/{metric}", np.nan),
                    "forgetting": value,
                    "run": record.run_id,
                }
            )
    return out


def build_report(
    experiment: str = "adaptbench",
    filter_string: str = "",
    out_dir: str | Path = "reports/latest",
    reference: str = "lora",
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    log_to_mlflow: bool = True,
) -> Path:
    """Write comparison.md, a self-contained comparison.html and the plots to `out_dir`."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = load_runs(client, experiment, filter_string)
    group, left_out = choose_group(records)
    languages = sorted({lang for r in group for lang in r.languages}, key=_language_order)
    sections: dict[str, tuple[list[MethodRow], list[str]]] = {}
    images: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for language in languages:
            rows, names = summarise(client, group, language, reference, n_boot, seed, Path(tmp))
            sections[language] = (rows, names)
            images[f"metrics_{language}"] = plots.metrics_by_method(
                rows, names, language, out / f"metrics_{language}.png"
            )
            quality = "bleu" if "bleu" in names else names[0]
            images[f"pareto_{language}"] = plots.quality_vs_cost(
                rows, quality, language, out / f"pareto_{language}.png"
            )
            images[f"loss_{language}"] = plots.loss_curves(
                client, rows, language, out / f"loss_{language}.png"
            )
    forgetting = forgetting_rows(records, group[0] if group else None)
    if forgetting:
        images["forgetting"] = plots.forgetting(forgetting, out / "forgetting.png")
    directions = {
        name: metric_registry.get_metric(name).higher_is_better
        for rows_names in sections.values()
        for name in rows_names[1]
    }
    report = render.Report(
        experiment=experiment,
        tracking_uri=mlflow.get_tracking_uri(),
        reference=reference,
        sections=sections,
        left_out=left_out,
        forgetting=forgetting,
        images=images,
        directions=directions,
        n_boot=n_boot,
        significance=SIGNIFICANCE,
    )
    (out / "comparison.md").write_text(render.markdown(report, out))
    (out / "comparison.html").write_text(render.html(report))
    if log_to_mlflow:
        _log_comparison_run(client, experiment, out, group)
    return out


def _language_order(language: str) -> tuple[int, str]:
    return ({"python": 0, "javascript": 1}.get(language, 2), language)


def _log_comparison_run(
    client: MlflowClient, experiment: str, out: Path, group: list[RunRecord]
) -> None:
    tags = {KIND_TAG: "comparison", "compared_runs": ",".join(r.run_id for r in group)[:5000]}
    # Under `mlflow run . -e compare` the run it opened is the comparison run; else a new one.
    opened = os.environ.get("MLFLOW_RUN_ID", "")
    if opened:
        run_id = opened
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    else:
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        run_id = client.create_run(experiment_id, run_name="comparison", tags=tags).info.run_id
    for path in sorted(out.iterdir()):
        if path.suffix in (".md", ".html", ".png"):
            client.log_artifact(run_id, str(path), "comparison")
    if not opened:
        client.set_terminated(run_id)
