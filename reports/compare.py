"""The comparison report: every method side by side, with intervals, tests, costs and plots.

The records (`reports.records`: reading runs, choosing the comparable ones) and the summaries
(`reports.summary`: intervals, tests, costs, forgetting) are built here into the report
(`reports.render`) and its plots (`reports.plots`), written to a folder and logged as a
comparison run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from core import record as rec  # the run record's names
from reports import curves, plots, render
from reports.promote import Promotion
from reports.records import (  # noqa: F401  (the report's public names, found here as before)
    BASE_METHOD,
    FALLBACK_REFERENCE,
    LeftOut,
    ReportError,
    RunRecord,
    Selection,
    _download_table,
    by_family,
    choose_comparable,
    default_reference,
    family_label,
    load_runs,
    setup_difference,
)
from reports.summary import (  # noqa: F401
    COSTS,
    LEVEL,
    LOAD_SENSITIVE,
    SIGNIFICANCE,
    Estimate,
    ForgettingRow,
    LanguageSection,
    MethodRow,
    direction,
    forgetting_rows,
    primary_metric,
    scope_title,
    summarise,
)

PLOT_PATTERNS = ("metrics_*.png", "pareto_*.png", "loss_*.png", "forgetting.png", "sweep_*.png")


def _file(scope: str) -> str:
    """A `<task>/<language>` scope as a file name's part (`generation_python`)."""
    return scope.replace("/", "_")


def _section_plots(
    client: MlflowClient, section: LanguageSection, reference: str, out: Path
) -> dict[str, Path]:
    """A table's plots: each metric by method, quality against cost, the loss curves."""
    images: dict[str, Path] = {}
    key, name = section.key, _file(section.key)
    if section.metrics:
        directions = {m: direction(m) for m in section.metrics}
        images[f"metrics_{key}"] = plots.metrics_by_method(
            section, reference, directions, out / f"metrics_{name}.png"
        )
        quality = primary_metric(section.metrics)
        images[f"pareto_{key}"] = plots.quality_vs_cost(
            section, quality, directions[quality], out / f"pareto_{name}.png"
        )
    images[f"loss_{key}"] = plots.loss_curves(client, section, out / f"loss_{name}.png")
    return images


def build_report(
    experiment: str = "adaptbench",
    filter_string: str = "",
    out_dir: str | Path = "reports/latest",
    reference: str = "",
    tracking_uri: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    log_to_mlflow: bool = True,
    promote: Promotion | None = None,
) -> Path:
    """Write comparison.md, a self-contained comparison.html and the plots to `out_dir`;
    optionally log them as artifacts of a new comparison run. Returns `out_dir`. Without a
    `reference`, `default_reference` of the compared methods. With `promote`, its alias then
    points at the best method's model of each language (`reports.promote`)."""
    if promote is not None and not log_to_mlflow:
        raise ValueError("promote tags the versions with the comparison run: it needs the run")
    # A client of its own: reading another store must not change the caller's tracking URI.
    client = MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()
    store = tracking_uri or mlflow.get_tracking_uri()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for pattern in PLOT_PATTERNS:  # an earlier report's plots must not linger beside this one
        for stale in out.glob(pattern):
            stale.unlink()
    records = load_runs(client, experiment, filter_string, store)
    # A table per base-model family: each family's runs chosen and tested on their own.
    groups = by_family(records) or [("", [])]
    labelled = len(groups) > 1
    parts = [(family if labelled else "", choose_comparable(runs)) for family, runs in groups]
    reference = reference or default_reference(
        r.method for _, selection in parts for runs in selection.fresh.values() for r in runs
    )
    sections: list[LanguageSection] = []
    sweeps: list[curves.SweepSection] = []
    forgetting: list[ForgettingRow] = []
    bwt: dict[tuple[str, str], list[float]] = {}
    images: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        for family, selection in parts:
            for language, runs in selection.fresh.items():
                for record in runs:
                    _download_table(client, record, language, Path(tmp))
                section = summarise(
                    language,
                    runs,
                    selection.fingerprints[language],
                    reference,
                    n_boot,
                    seed,
                    family=family,
                )
                sections.append(section)
                images.update(_section_plots(client, section, reference, out))
            for language, by_point in selection.sweep.items():  # runs differing in size or base
                for runs in by_point.values():
                    for record in runs:
                        _download_table(client, record, language, Path(tmp))
                sweep = curves.summarise_sweep(
                    language, by_point, selection.sweep_point, n_boot, seed, family=family
                )
                if sweep.metrics:
                    sweeps.append(sweep)
                    images[f"sweep_{sweep.key}"] = curves.sweep_plot(
                        sweep, out / f"sweep_{_file(sweep.key)}.png"
                    )
            rows, transfer = forgetting_rows(selection.sequential)
            if family:  # one forgetting table for every family: each row says whose it is
                for row in rows:
                    row.language = scope_title(row.language, family)
                label = family_label(family)
                transfer = {(f"{m} ({label})", k): v for (m, k), v in transfer.items()}
            forgetting += rows
            bwt.update(transfer)
    if forgetting:
        images["forgetting"] = plots.forgetting(forgetting, out / "forgetting.png")
    images.update(plots.inference_overhead(sections, out))  # reports/inference.py's plot
    presets = list(dict.fromkeys(s.preset for _, s in parts if s.preset))
    left_out = [entry for _, selection in parts for entry in selection.left_out]
    sequential = [r for _, selection in parts for r in selection.sequential]
    report = render.Report(
        experiment=experiment,
        filter_string=filter_string,
        tracking_uri=store,
        reference=reference,
        preset=", ".join(presets),
        sections=sections,
        left_out=left_out,
        sequential=sequential,
        forgetting=forgetting,
        bwt=bwt,
        images=images,
        directions={m: direction(m) for s in sections for m in s.metrics},
        n_boot=n_boot,
        seed=seed,
        significance=SIGNIFICANCE,
        sweep=curves.sweep_blocks(sweeps, images),
    )
    # Checked before anything is logged: a refused promotion leaves the store as it was.
    steps = promote.plan(client, sections) if promote is not None else []
    blocks = render.blocks(report)
    (out / "comparison.md").write_text(render.markdown(blocks, out), encoding="utf-8")
    (out / "comparison.html").write_text(render.html(blocks, report.title), encoding="utf-8")
    if log_to_mlflow:
        compared = [r for section in sections for row in section.rows for r in row.runs]
        compared += sequential
        compared += [
            r
            for _, selection in parts
            for points in selection.sweep.values()
            for runs in points.values()
            for r in runs
        ]
        files = [out / "comparison.md", out / "comparison.html", *images.values()]
        run_id = _log_comparison_run(client, experiment, files, compared, ",".join(presets))
        if promote is not None:
            promote.apply(client, steps, run_id)
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
) -> str:
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
    return run_id
