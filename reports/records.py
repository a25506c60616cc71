"""The report's records: runs read from a tracking store, and which of them are comparable.

The comparison report: every method side by side, with intervals, tests, costs and plots.

Runs are read from any MLflow tracking store. The tables are per task and language (a
`<task>/<language>` scope, `rec.scopes`: the tasks a run logged). Only comparable runs are put
side by side:

* setup: the same preset and the same metric signatures (`metric.<name>.signature`, an
  evaluation-only task's under its own name). The reported setup is the one of the largest group
  of finished fresh-protocol runs (most methods, then most runs, then the newest run), so the
  choice is deterministic and does not depend on search order;
* data, per language: the same `data.<lang>.fingerprint`, chosen the same way among the runs of
  that setup. A run trained on other data for one language is left out of that language's tables
  only.

A re-run of the same method and seed in a table counts once: the newest run is kept, so a seed
is never counted twice. Every run that is not in a table (unfinished, failed, other setup, other
data, re-run since) is listed under "Left out" with the reason. Sequential-protocol runs of the
same setup and data go to the forgetting table, not beside the fresh runs.

Families: runs on bases of different families (`model.family`: T5, Llama-style, GPT-2-style)
are never in one table, as no paired test across two bases means anything. Each family's runs
are chosen as above on their own (`by_family`), and the report has a table per family and scope,
each tested against its own family's reference run.

A sweep: fresh runs of one setup that differ in `data.train_size` or `model.name`
(`rec.SWEEP_AXES`, a suite's `--train-sizes` and `--models`) are never mixed in one table. The
tables hold one sweep point (the one with most methods, then most runs, then the largest training
size, then the newest run); every point's runs, grouped per language like a table's (one data
fingerprint, a seed counted once), go to the sweep section (`reports.curves`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from core import families
from core import record as rec  # the run record's names

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
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # scope -> evaluated examples
    scopes: list[str] = field(default_factory=list)  # every `<task>/<language>` it evaluated

    def fingerprint(self, scope: str) -> str:
        """The data fingerprint of a scope's (or a bare language's) language."""
        return self.params.get(rec.fingerprint_param(scope.rpartition("/")[2]), "")

    def signatures(self) -> dict[str, str]:
        """Metric name -> signature, for the metrics that decide comparability."""
        out = {}
        for key, value in self.params.items():
            name = rec.signature_of(key)
            if name is not None:
                out[name] = value
        return out

    def setup(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.preset, tuple(sorted(self.signatures().items()))

    @property
    def family(self) -> str:
        """The base model's family; a run logged before `model.family` was recorded is T5's,
        the only family the harness knew then."""
        return self.params.get(rec.MODEL_FAMILY) or families.T5.name

    def sweep_point(self) -> tuple[str, ...]:
        """The run's values of the sweep axes: training size and base model, as logged."""
        return tuple(self.params.get(axis, "") for axis in rec.SWEEP_AXES)


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
    # A sweep: language -> sweep point -> its runs (the tables' point among them); else empty.
    sweep: dict[str, dict[tuple[str, ...], list[RunRecord]]] = field(default_factory=dict)
    sweep_point: tuple[str, ...] = ()  # the point the tables show


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
                scopes=rec.scopes(run.data.params),
            )
        )
    return records


def by_family(records: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    """`records` per base-model family, in `core.families` order (then any other name), each
    group in the records' order; no records: no groups."""
    groups = _group(records, lambda r: r.family)
    order = list(families.FAMILIES)
    return sorted(
        groups.items(),
        key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]),
    )


def family_label(name: str) -> str:
    """A family as a person writes it (`Llama-style`), or its name when it is not known here."""
    found = families.FAMILIES.get(name)
    return found.label if found else name


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
    fresh, other_points, point = _one_sweep_point(fresh)
    deciding = fresh or same_setup
    languages = _ordered({scope for r in same_setup for scope in r.scopes})
    fingerprints: dict[str, str] = {}
    tables: dict[str, list[RunRecord]] = {}
    for language in languages:
        candidates = [r for r in deciding if language in r.scopes]
        if candidates:
            chosen = _largest(
                _group(candidates, lambda r, lang=language: r.fingerprint(lang)).values()
            )
            fingerprints[language] = chosen[0].fingerprint(language)
        else:  # only sequential runs have this language: the newest one's data
            fingerprints[language] = next(
                r.fingerprint(language) for r in same_setup if language in r.scopes
            )
        tables[language] = []
        for record in fresh:
            if language not in record.scopes:
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
            scope for scope in record.scopes if record.fingerprint(scope) != fingerprints[scope]
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
    sweep = _sweep_points(other_points, languages, left_out, superseded) if other_points else {}
    for language, runs in tables.items():
        if language in sweep and runs:
            sweep[language][point] = runs
    for record, newer, languages in superseded.values():
        left_out.append(LeftOut(record, _rerun_reason(record, newer, languages), languages[0]))
    return Selection(
        anchor.preset,
        fingerprints,
        {k: v for k, v in tables.items() if v},
        sequential,
        left_out,
        sweep={k: v for k, v in sweep.items() if len(v) > 1},
        sweep_point=point,
    )


def _train_size(point: tuple[str, ...]) -> float:
    try:
        return float(point[rec.SWEEP_AXES.index(rec.TRAIN_SIZE)])
    except ValueError:
        return -1.0


def _one_sweep_point(
    fresh: list[RunRecord],
) -> tuple[list[RunRecord], list[RunRecord], tuple[str, ...]]:
    """The runs at the tables' sweep point, the runs at the others, and that point (no sweep:
    every run, none, their point)."""
    points = _group(fresh, RunRecord.sweep_point)
    if len(points) <= 1:
        return fresh, [], next(iter(points), ())
    point, _ = max(
        points.items(),
        key=lambda item: (
            len({r.method for r in item[1]}),
            len(item[1]),
            _train_size(item[0]),
            item[1][0].start_time,
        ),
    )
    return points[point], [r for r in fresh if r.sweep_point() != point], point


def _sweep_points(
    runs: list[RunRecord],
    languages: list[str],
    left_out: list[LeftOut],
    superseded: dict[str, tuple[RunRecord, RunRecord, list[str]]],
) -> dict[str, dict[tuple[str, ...], list[RunRecord]]]:
    """Per language and sweep point, its runs as a table would hold them: the data fingerprint
    of the point's largest group (others left out), the newest run of a method and seed."""
    sweep: dict[str, dict[tuple[str, ...], list[RunRecord]]] = {}
    for language in languages:
        candidates = [r for r in runs if language in r.scopes]
        for point, at_point in _group(candidates, RunRecord.sweep_point).items():
            by_data = _group(at_point, lambda r, lang=language: r.fingerprint(lang))
            chosen = _largest(by_data.values())[0].fingerprint(language)
            kept = []
            for record in at_point:
                if record.fingerprint(language) == chosen:
                    kept.append(record)
                else:
                    reason = _data_reason(record, language, {language: chosen})
                    left_out.append(LeftOut(record, f"{reason} at its sweep point", language))
            sweep.setdefault(language, {})[point] = _newest_per_seed(kept, superseded, language)
    return sweep


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
    partial = where and set(where) != set(record.scopes)
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


def _ordered(scopes: Iterable[str]) -> list[str]:
    """Scopes (or languages) by task name, then Python, JavaScript, then the other languages."""

    def key(scope: str) -> tuple[str, int, str]:
        task, _, language = scope.rpartition("/")
        return task, {"python": 0, "javascript": 1}.get(language, 2), language

    return sorted(scopes, key=key)


def _download_table(client: MlflowClient, record: RunRecord, scope: str, tmp: Path) -> None:
    """The run's evaluated examples of `scope` into `record.tables[scope]`, indexed by id."""
    if scope in record.tables:
        return
    path = client.download_artifacts(
        record.run_id, rec.examples_table(*rec.split_scope(scope)), str(tmp / record.run_id)
    )
    payload = json.loads(Path(path).read_text())
    table = pd.DataFrame(payload["data"], columns=payload["columns"])
    ids = table["id"].astype(str) if "id" in table else pd.Series([], dtype=str)
    if len(ids) != len(table) or ids.duplicated().any():
        ids = pd.Series([f"#{i}" for i in range(len(table))])  # pair by position instead
    table["id"] = ids.to_numpy()
    record.tables[scope] = table.set_index("id", drop=False)
