"""The comparison report: every method side by side, with intervals, tests, costs and plots.

Runs are read from any MLflow tracking store. Only comparable runs are put side by side:

* setup: the same preset and the same metric signatures (`metric.<name>.signature`, HumanEval's
  left aside: it is a separate, optional evaluation that the tables do not show). The reported
  setup is the one of the largest group of finished fresh-protocol runs (most methods, then most
  runs, then the newest run), so the choice is deterministic and does not depend on search order;
* data, per language: the same `data.<lang>.fingerprint`, chosen the same way among the runs of
  that setup. A run trained on other data for one language is left out of that language's table
  only.

A re-run of the same method and seed in a table counts once: the newest run is kept, so a seed
is never counted twice. Every run that is not in a table (unfinished, failed, other setup, other
data, re-run since) is listed under "Left out" with the reason. Sequential-protocol runs of the
same setup and data go to the forgetting table, not beside the fresh runs.

Intervals are 95 % percentile bootstraps over the evaluated examples (see `reports.stats`); each
method is tested against a reference method with a paired bootstrap on the same example ids.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from core import record as rec  # the run record's names
from reports import plots, render
from reports.stats import (
    MEAN,
    PairedTest,
    Statistic,
    bootstrap_ci,
    corpus_statistic,
    paired_bootstrap,
)

SIGNIFICANCE = 0.05
LEVEL = 0.95
# Signatures that do not take part in comparability (not shown in the tables).
IGNORED_SIGNATURES = ("humaneval",)
# (metric suffix under `<lang>/`, column title) for the cost columns, in table order.
COSTS = [
    ("trained_weights_bytes", "weights (MB)"),
    ("train_time_s", "train time (s)"),
    ("peak_memory_mb", "peak memory (MB)"),
    ("tokens_per_s", "train tokens/s"),
    ("skipped_steps", "skipped steps"),
]
# Costs that a busy machine inflates (or deflates): marked when measured under contention.
LOAD_SENSITIVE = ("train_time_s", "tokens_per_s")
PLOT_PATTERNS = ("metrics_*.png", "pareto_*.png", "loss_*.png", "forgetting.png")
BASE_METHOD, FALLBACK_REFERENCE = "none", "lora"


def default_reference(methods: Iterable[str]) -> str:
    """The method the others are tested against when none is named: `none` (the base as it
    is) when it is among the compared methods, else `lora`. The suite and `compare` both use it."""
    return BASE_METHOD if BASE_METHOD in set(methods) else FALLBACK_REFERENCE


class ReportError(ValueError):
    """A comparison that cannot be made from what the store holds: says what to run or pass."""


@dataclass
class RunRecord:
    """One benchmark run as read from the tracking store."""

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

    def fingerprint(self, language: str) -> str:
        return self.params.get(rec.fingerprint_param(language), "")

    def signatures(self) -> dict[str, str]:
        """Metric name -> signature, for the metrics that decide comparability."""
        out = {}
        for key, value in self.params.items():
            name = rec.signature_of(key)
            if name is not None and name not in IGNORED_SIGNATURES:
                out[name] = value
        return out

    def setup(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.preset, tuple(sorted(self.signatures().items()))


@dataclass
class LeftOut:
    """A run (or one language of it) that is not in the tables, and why."""

    run: RunRecord
    reason: str
    language: str = ""  # empty: the whole run


@dataclass
class Selection:
    """The comparable runs: fresh runs per language, sequential runs, and the rest."""

    preset: str
    fingerprints: dict[str, str]  # language -> the compared data fingerprint
    fresh: dict[str, list[RunRecord]]  # language -> runs in that language's table
    sequential: list[RunRecord]
    left_out: list[LeftOut]


@dataclass
class Estimate:
    """One metric of one method on one language."""

    point: float
    low: float
    high: float
    seeds: tuple[float, float] | None  # (mean, std) of the runs' logged values, several seeds
    logged: float  # the logged corpus value (mean over seeds)
    test: PairedTest | None = None  # against the reference method
    ids_compared: int = 0

    def significant(self, alpha: float = SIGNIFICANCE) -> bool:
        return self.test is not None and self.test.p_value < alpha


@dataclass
class MethodRow:
    """One method on one language, its seeds pooled."""

    method: str
    runs: list[RunRecord]
    estimates: dict[str, Estimate]
    costs: dict[str, tuple[float, float]]  # cost key -> (mean, std) across seeds
    trainable: tuple[float, float]
    share: tuple[float, float]
    loads: list[tuple[float, float]] = field(default_factory=list)  # (load average, CPUs) per run

    @property
    def seeds(self) -> list[str]:
        return [r.seed for r in self.runs]

    @property
    def contended(self) -> list[tuple[float, float]]:
        """The (load, CPUs) of the runs trained while the load average exceeded the CPUs."""
        return [(load, cpus) for load, cpus in self.loads if load > cpus]


@dataclass
class LanguageSection:
    """The table of one language and what it needs to be read."""

    language: str
    fingerprint: str
    rows: list[MethodRow]
    metrics: list[str]
    statistics: dict[str, Statistic]  # metric -> how its interval was computed
    mean_not_corpus: list[str]  # metrics whose logged corpus value is not the per-example mean
    reference_present: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class ForgettingRow:
    """Sequential protocol: one method, language and metric, seeds pooled as mean and std."""

    method: str
    language: str
    metric: str
    seeds: int
    after_own: tuple[float, float]
    final: tuple[float, float]
    forgetting: tuple[float, float]


def load_runs(
    client: MlflowClient, experiment: str, filter_string: str = "", store: str = ""
) -> list[RunRecord]:
    """Benchmark runs of `experiment` (not suite parents or comparison runs), newest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(
            f"no experiment {experiment!r} in the tracking store {store or '(default)'}: "
            "run the suite first, or pass --experiment"
        )
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC", "attributes.run_id ASC"],
        max_results=50000,
    )
    records = []
    for run in runs:
        tags = run.data.tags
        if not rec.is_method_run(tags):
            continue
        languages = rec.languages(run.data.params)
        records.append(
            RunRecord(
                run_id=run.info.run_id,
                name=run.info.run_name or run.info.run_id[:8],
                method=tags[rec.METHOD],
                preset=tags.get(rec.PRESET, "?"),
                protocol=tags.get(rec.PROTOCOL, "fresh"),
                status=run.info.status,
                error=tags.get(rec.ERROR, ""),
                seed=run.data.params.get(rec.SEED, "?"),
                languages=languages,
                params=dict(run.data.params),
                metrics=dict(run.data.metrics),
                start_time=run.info.start_time or 0,
            )
        )
    return records


def _largest(groups: Iterable[list[RunRecord]]) -> list[RunRecord]:
    """Most methods, then most runs, then the newest run (groups hold newest-first runs)."""
    return max(
        groups, key=lambda runs: (len({r.method for r in runs}), len(runs), runs[0].start_time)
    )


def _group(runs: list[RunRecord], key: Any) -> dict[Any, list[RunRecord]]:
    groups: dict[Any, list[RunRecord]] = {}
    for record in runs:
        groups.setdefault(key(record), []).append(record)
    return groups


def _short(fingerprint: str) -> str:
    return fingerprint[:12] + "…" if len(fingerprint) > 12 else fingerprint or "(none)"


def setup_difference(anchor: RunRecord, other: RunRecord) -> str:
    """Why `other` cannot be compared with `anchor` (preset, metric signatures); '' if it can."""
    if other.preset != anchor.preset:
        return f"preset {other.preset!r}, the compared runs use {anchor.preset!r}"
    mine, theirs = anchor.signatures(), other.signatures()
    if mine == theirs:
        return ""
    missing = sorted(set(mine) - set(theirs))
    extra = sorted(set(theirs) - set(mine))
    changed = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
    parts = []
    if changed:
        parts.append("metric signature differs: " + ", ".join(changed))
    if missing:
        parts.append("metrics not evaluated: " + ", ".join(missing))
    if extra:
        parts.append("metrics the compared runs lack: " + ", ".join(extra))
    return "; ".join(parts)


def choose_comparable(records: list[RunRecord]) -> Selection:
    """Split `records` (newest first) into the comparable group and the left-out runs."""
    left_out = [
        LeftOut(r, f"status {r.status}: {r.error or 'no error recorded'}")
        for r in records
        if r.status != "FINISHED"
    ]
    finished = [r for r in records if r.status == "FINISHED"]
    if not finished:
        return Selection("", {}, {}, [], left_out)
    # Fresh runs decide the setup; with none, the sequential ones do.
    pool = [r for r in finished if r.protocol == "fresh"] or finished
    anchor = _largest(_group(pool, RunRecord.setup).values())[0]
    same_setup = []
    for record in finished:
        reason = setup_difference(anchor, record)
        if reason:
            left_out.append(LeftOut(record, reason))
        else:
            same_setup.append(record)
    fresh = [r for r in same_setup if r.protocol == "fresh"]
    deciding = fresh or same_setup
    languages = _ordered({lang for r in same_setup for lang in r.languages})
    fingerprints: dict[str, str] = {}
    tables: dict[str, list[RunRecord]] = {}
    for language in languages:
        candidates = [r for r in deciding if language in r.languages]
        if candidates:
            chosen = _largest(
                _group(candidates, lambda r, lang=language: r.fingerprint(lang)).values()
            )
            fingerprints[language] = chosen[0].fingerprint(language)
        else:  # only sequential runs have this language: the newest one's data
            fingerprints[language] = next(
                r.fingerprint(language) for r in same_setup if language in r.languages
            )
        tables[language] = []
        for record in fresh:
            if language not in record.languages:
                continue
            if record.fingerprint(language) == fingerprints[language]:
                tables[language].append(record)
            else:
                reason = _data_reason(record, language, fingerprints)
                left_out.append(LeftOut(record, reason, language))
    sequential = []
    for record in same_setup:
        if record.protocol == "fresh":
            continue
        different = [
            lang for lang in record.languages if record.fingerprint(lang) != fingerprints[lang]
        ]
        if different:
            reason = _data_reason(record, different[0], fingerprints)
            left_out.append(LeftOut(record, reason, different[0]))
        else:
            sequential.append(record)
    superseded: dict[str, tuple[RunRecord, RunRecord, list[str]]] = {}
    for language, runs in tables.items():
        tables[language] = _newest_per_seed(runs, superseded, language)
    sequential = _newest_per_seed(sequential, superseded, "")
    for record, newer, languages in superseded.values():
        left_out.append(LeftOut(record, _rerun_reason(record, newer, languages), languages[0]))
    return Selection(
        anchor.preset, fingerprints, {k: v for k, v in tables.items() if v}, sequential, left_out
    )


def _newest_per_seed(
    runs: list[RunRecord],
    superseded: dict[str, tuple[RunRecord, RunRecord, list[str]]],
    language: str,
) -> list[RunRecord]:
    """The newest run of each (method, seed) in `runs` (newest first); the older ones go to
    `superseded` (run id -> the run, the newer one, the languages where it was replaced)."""
    kept: dict[tuple[str, str], RunRecord] = {}
    for record in sorted(runs, key=lambda r: -r.start_time):  # stable: ties keep their order
        newer = kept.setdefault((record.method, record.seed), record)
        if newer is not record:
            superseded.setdefault(record.run_id, (record, newer, []))[2].append(language)
    return [r for r in runs if kept[(r.method, r.seed)] is r]


def _rerun_reason(record: RunRecord, newer: RunRecord, languages: list[str]) -> str:
    where = [lang for lang in languages if lang]
    partial = where and set(where) != set(record.languages)
    return (
        f"re-run of {record.method} seed {record.seed}: the newer run `{newer.run_id}` is in "
        f"the tables instead{' (' + ', '.join(where) + ')' if partial else ''}, so the seed "
        "counts once"
    )


def _data_reason(record: RunRecord, language: str, fingerprints: dict[str, str]) -> str:
    return (
        f"data fingerprint of {language} differs: {_short(record.fingerprint(language))}, "
        f"the compared runs use {_short(fingerprints[language])}"
    )


def _ordered(languages: Iterable[str]) -> list[str]:
    return sorted(languages, key=lambda lang: ({"python": 0, "javascript": 1}.get(lang, 2), lang))


def _download_table(client: MlflowClient, record: RunRecord, language: str, tmp: Path) -> None:
    if language in record.tables:
        return
    path = client.download_artifacts(
        record.run_id, f"eval/{language}_examples.json", str(tmp / record.run_id)
    )
    payload = json.loads(Path(path).read_text())
    table = pd.DataFrame(payload["data"], columns=payload["columns"])
    ids = table["id"].astype(str) if "id" in table else pd.Series([], dtype=str)
    if len(ids) != len(table) or ids.duplicated().any():
        ids = pd.Series([f"#{i}" for i in range(len(table))])  # pair by position instead
    table["id"] = ids.to_numpy()
    record.tables[language] = table.set_index("id", drop=False)


def _example_rows(
    table: pd.DataFrame, metric: str, language: str
) -> tuple[pd.DataFrame, Statistic]:
    """Per-example rows (indexed by example id) and the statistic that summarises them."""
    statistic = corpus_statistic(metric)
    if statistic is not None:
        predictions = table["prediction"].fillna("").astype(str).tolist()
        references = table["reference"].fillna("").astype(str).tolist()
        rows = statistic.rows(predictions, references, language)
        return pd.DataFrame(rows, index=table.index), statistic
    values = pd.to_numeric(table[metric], errors="coerce").dropna()  # not applicable: skipped
    return values.to_frame(), MEAN


def _pool_seeds(frames: list[pd.DataFrame]) -> tuple[np.ndarray, pd.Index]:
    """Each example's rows averaged over the seeds' runs (examples that all of them have)."""
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    common = common.sort_values()
    return sum(frame.loc[common].to_numpy() for frame in frames) / len(frames), common


def _mean_std(values: Iterable[float]) -> tuple[float, float]:
    array = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(array):
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std())


def _is_mean_of_examples(table: pd.DataFrame, metric: str, logged: float | None) -> bool:
    if logged is None or corpus_statistic(metric) is not None:
        return True
    values = pd.to_numeric(table[metric], errors="coerce").dropna()
    return not len(values) or abs(values.mean() - logged) <= 1e-6 * max(1.0, abs(logged))


def summarise(
    language: str,
    runs: list[RunRecord],
    fingerprint: str,
    reference: str,
    n_boot: int,
    seed: int,
) -> LanguageSection:
    """One row per method for `language` (runs' tables already downloaded)."""
    shown = set.intersection(*(set(r.signatures()) for r in runs))
    metrics = sorted(
        name for name in shown if all(name in r.tables[language].columns for r in runs)
    )
    by_method: dict[str, list[RunRecord]] = {}
    for record in sorted(runs, key=_seed_order):
        by_method.setdefault(record.method, []).append(record)
    pooled: dict[tuple[str, str], tuple[np.ndarray, pd.Index]] = {}
    statistics: dict[str, Statistic] = {}
    for method, method_runs in by_method.items():
        for metric in metrics:
            parts = [_example_rows(r.tables[language], metric, language) for r in method_runs]
            statistics[metric] = parts[0][1]
            pooled[(method, metric)] = _pool_seeds([p[0] for p in parts])
    mean_not_corpus = sorted(
        metric
        for metric in metrics
        if not all(
            _is_mean_of_examples(
                r.tables[language], metric, r.metrics.get(rec.metric(language, metric))
            )
            for r in runs
        )
    )
    notes = []
    rows = []
    for method, method_runs in sorted(by_method.items()):
        estimates = {}
        for metric in metrics:
            data, ids = pooled[(method, metric)]
            statistic = statistics[metric]
            point, low, high = bootstrap_ci(data, statistic, n_boot, seed, LEVEL)
            logged = [r.metrics.get(rec.metric(language, metric), np.nan) for r in method_runs]
            if statistic.corpus_level and len(method_runs) == 1 and np.isfinite(logged[0]):
                if abs(point - logged[0]) > 1e-6 * max(1.0, abs(logged[0])):
                    notes.append(
                        f"{method}, {metric}: recomputed from the examples {point:.4g}, the run "
                        f"logged {logged[0]:.4g} (another metric version?)"
                    )
            estimate = Estimate(
                point,
                low,
                high,
                seeds=_mean_std(logged) if len(method_runs) > 1 else None,
                logged=_mean_std(logged)[0],
            )
            if method != reference and (reference, metric) in pooled:
                ref_data, ref_ids = pooled[(reference, metric)]
                common = ids.intersection(ref_ids)
                if len(common) >= 2:
                    mine = data[ids.get_indexer(common)]
                    theirs = ref_data[ref_ids.get_indexer(common)]
                    estimate.test = paired_bootstrap(mine, theirs, statistic, n_boot, seed, LEVEL)
                    estimate.ids_compared = len(common)
                    if len(common) < max(len(ids), len(ref_ids)):
                        notes.append(
                            f"{method} vs {reference}, {metric}: tested on the {len(common)} "
                            "example ids both have"
                        )
            estimates[metric] = estimate
        costs = {
            key: _mean_std(r.metrics.get(rec.metric(language, key), np.nan) for r in method_runs)
            for key, _ in COSTS
        }
        rows.append(
            MethodRow(
                method=method,
                runs=method_runs,
                estimates=estimates,
                costs=costs,
                trainable=_mean_std(
                    _float(r.params.get(rec.TRAINABLE_PARAMS)) for r in method_runs
                ),
                share=_mean_std(_float(r.params.get(rec.TRAINABLE_SHARE)) for r in method_runs),
                loads=[
                    (
                        r.metrics[rec.metric(language, rec.LOAD_AVERAGE)],
                        r.metrics[rec.metric(language, rec.CPU_COUNT)],
                    )
                    for r in method_runs
                    if rec.metric(language, rec.LOAD_AVERAGE) in r.metrics
                    and rec.metric(language, rec.CPU_COUNT) in r.metrics
                ],
            )
        )
    return LanguageSection(
        language=language,
        fingerprint=fingerprint,
        rows=rows,
        metrics=metrics,
        statistics=statistics,
        mean_not_corpus=mean_not_corpus,
        reference_present=reference in by_method,
        notes=notes,
    )


def _seed_order(record: RunRecord) -> tuple[int, float, str, str]:
    """Seeds in numeric order where they are numbers, then by run id: a stable row layout."""
    try:
        return (0, float(record.seed), "", record.run_id)
    except ValueError:
        return (1, 0.0, record.seed, record.run_id)


def _float(text: str | None) -> float:
    try:
        return float(text) if text is not None else float("nan")
    except ValueError:
        return float("nan")


def forgetting_rows(
    sequential: list[RunRecord],
) -> tuple[list[ForgettingRow], dict[tuple[str, str], list[float]]]:
    """Per method, language and metric: score after own training, final score, forgetting;
    and per method and metric the backward transfer (`bwt/<metric>`), seeds pooled."""
    grouped: dict[tuple[str, str, str], list[RunRecord]] = {}
    bwt: dict[tuple[str, str], list[float]] = {}
    for run in sequential:
        for key, value in run.metrics.items():
            lost = rec.split_forgetting(key)
            if lost is not None:
                language, metric = lost
                if metric.split("/")[0] not in IGNORED_SIGNATURES:
                    grouped.setdefault((run.method, language, metric), []).append(run)
            elif (metric := rec.split_backward_transfer(key)) is not None:
                bwt.setdefault((run.method, metric), []).append(value)
    rows = []
    for (method, language, metric), runs in sorted(
        grouped.items(), key=lambda item: (item[0][0], _ordered([item[0][1]]), item[0][2])
    ):
        rows.append(
            ForgettingRow(
                method=method,
                language=language,
                metric=metric,
                seeds=len(runs),
                after_own=_mean_std(
                    r.metrics.get(rec.metric(language, metric), np.nan) for r in runs
                ),
                final=_mean_std(
                    r.metrics.get(rec.final_metric(language, metric), np.nan) for r in runs
                ),
                forgetting=_mean_std(
                    r.metrics[rec.forgetting_metric(language, metric)] for r in runs
                ),
            )
        )
    return rows, dict(sorted(bwt.items()))


def direction(metric: str) -> bool:
    """True when higher is better (unknown metrics are assumed to be scores)."""
    import metrics as metric_registry

    try:
        return bool(metric_registry.get_metric(metric).higher_is_better)
    except Exception:  # a metric no longer registered: treat it as a score
        return True


def build_report(
    experiment: str = "adaptbench",
    filter_string: str = "",
    out_dir: str | Path = "reports/latest",
    reference: str = "",
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    log_to_mlflow: bool = True,
) -> Path:
    """Write comparison.md, a self-contained comparison.html and the plots to `out_dir`;
    optionally log them as artifacts of a new comparison run. Returns `out_dir`. Without a
    `reference`, `default_reference` of the compared methods."""
    # A client of its own: reading another store must not change the caller's tracking URI.
    client = MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()
    store = tracking_uri or mlflow.get_tracking_uri()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for pattern in PLOT_PATTERNS:  # an earlier report's plots must not linger beside this one
        for stale in out.glob(pattern):
            stale.unlink()
    records = load_runs(client, experiment, filter_string, store)
    selection = choose_comparable(records)
    reference = reference or default_reference(
        r.method for runs in selection.fresh.values() for r in runs
    )
    sections: list[LanguageSection] = []
    images: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        for language, runs in selection.fresh.items():
            for record in runs:
                _download_table(client, record, language, Path(tmp))
            section = summarise(
                language, runs, selection.fingerprints[language], reference, n_boot, seed
            )
            sections.append(section)
            directions = {m: direction(m) for m in section.metrics}
            if section.metrics:
                images[f"metrics_{language}"] = plots.metrics_by_method(
                    section, reference, directions, out / f"metrics_{language}.png"
                )
                quality = "bleu" if "bleu" in section.metrics else section.metrics[0]
                images[f"pareto_{language}"] = plots.quality_vs_cost(
                    section, quality, directions[quality], out / f"pareto_{language}.png"
                )
            images[f"loss_{language}"] = plots.loss_curves(
                client, section, out / f"loss_{language}.png"
            )
    forgetting, bwt = forgetting_rows(selection.sequential)
    if forgetting:
        images["forgetting"] = plots.forgetting(forgetting, out / "forgetting.png")
    report = render.Report(
        experiment=experiment,
        filter_string=filter_string,
        tracking_uri=store,
        reference=reference,
        preset=selection.preset,
        sections=sections,
        left_out=selection.left_out,
        sequential=selection.sequential,
        forgetting=forgetting,
        bwt=bwt,
        images=images,
        directions={m: direction(m) for s in sections for m in s.metrics},
        n_boot=n_boot,
        seed=seed,
        significance=SIGNIFICANCE,
    )
    blocks = render.blocks(report)
    (out / "comparison.md").write_text(render.markdown(blocks, out), encoding="utf-8")
    (out / "comparison.html").write_text(render.html(blocks, report.title), encoding="utf-8")
    if log_to_mlflow:
        compared = [r for runs in selection.fresh.values() for r in runs] + selection.sequential
        files = [out / "comparison.md", out / "comparison.html", *images.values()]
        _log_comparison_run(client, experiment, files, compared, selection.preset)
    return out


class _quiet_downloads:
    """MLflow draws a progress bar per downloaded table; a report downloads dozens."""

    def __enter__(self) -> None:
        self._before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = self._before


def _log_comparison_run(
    client: MlflowClient,
    experiment: str,
    files: list[Path],
    compared: list[RunRecord],
    preset: str,
) -> None:
    unique = list(dict.fromkeys(r.run_id for r in compared))
    tags = {
        rec.KIND: rec.COMPARISON_KIND,
        rec.PRESET: preset,
        rec.COMPARED_RUNS: ",".join(unique)[:5000],
    }
    # Under `mlflow run . -e compare` the run it opened is the comparison run; else a new one.
    opened = os.environ.get("MLFLOW_RUN_ID", "")
    if opened:
        run_id = opened
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    else:
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        run_id = client.create_run(experiment_id, run_name="comparison", tags=tags).info.run_id
    for path in files:
        client.log_artifact(run_id, str(path), "comparison")
    if not opened:
        client.set_terminated(run_id)
