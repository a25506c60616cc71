"""The report as a list of blocks, written as Markdown (relative image links) and as one
self-contained HTML file (inline style, images as data URIs): the same content in both."""

from __future__ import annotations

import base64
import html as html_lib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reports import retention
from reports.inference import blocks as inference_blocks

if TYPE_CHECKING:
    from reports.records import LeftOut, RunRecord
    from reports.summary import Estimate, ForgettingRow, LanguageSection

# A block: ("h1" | "h2" | "h3" | "p", text), ("table", header, rows), ("img", path, alt) or
# ("ul", items). Text may hold `code` spans, the only inline markup used.
Block = tuple[Any, ...]


@dataclass
class Report:
    """Everything the report shows."""

    experiment: str
    filter_string: str
    tracking_uri: str
    reference: str
    preset: str
    sections: list[LanguageSection]
    left_out: list[LeftOut]
    sequential: list[RunRecord]
    forgetting: list[ForgettingRow]
    bwt: dict[tuple[str, str], list[float]]
    images: dict[str, Path]
    directions: dict[str, bool]
    n_boot: int
    seed: int
    significance: float
    sweep: list[Block] = field(default_factory=list)  # the Sweep section (`reports.curves`)

    @property
    def title(self) -> str:
        return f"adaptbench comparison: experiment {self.experiment}"


def fmt(value: float) -> str:
    """A number with about three significant digits; '–' for a missing one."""
    if value is None or not math.isfinite(value):
        return "–"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1 or value == 0:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def fmt_spread(mean_std: tuple[float, float], several: bool, scale: float = 1.0) -> str:
    """'mean ± std' across seeds when there are several, else the value."""
    mean, std = mean_std
    if several and math.isfinite(std):
        return f"{fmt(mean * scale)} ± {fmt(std * scale)}"
    return fmt(mean * scale)


def _estimate_cell(estimate: Estimate, higher_is_better: bool, note_corpus: bool) -> str:
    text = f"{fmt(estimate.point)} [{fmt(estimate.low)}, {fmt(estimate.high)}]"
    if estimate.significant():
        better = (estimate.test.difference > 0) == higher_is_better
        text += " ▲*" if better else " ▼*"
    if estimate.seeds is not None:
        text += f" (seeds {fmt(estimate.seeds[0])} ± {fmt(estimate.seeds[1])})"
    elif note_corpus:
        text += f" (corpus {fmt(estimate.logged)})"
    return text


def _difference_cell(estimate: Estimate, alpha: float) -> str:
    test = estimate.test
    if test is None:
        return "–"
    star = "*" if test.p_value < alpha else ""
    return (
        f"{'+' if test.difference > 0 else ''}{fmt(test.difference)}{star} "
        f"[{fmt(test.low)}, {fmt(test.high)}] p={test.p_value:.3f}"
    )


def _statistic_note(section: LanguageSection) -> str:
    corpus = [m for m in section.metrics if section.statistics[m].corpus_level]
    parts = []
    if corpus:
        parts.append(
            ", ".join(f"`{m}`" for m in corpus)
            + ": the corpus value itself, recomputed on every resample from per-example "
            "sufficient statistics (n-gram matches and lengths)"
        )
    if section.mean_not_corpus:
        parts.append(
            ", ".join(f"`{m}`" for m in section.mean_not_corpus)
            + ": the mean of the per-example values, which is not the corpus value the run "
            "logged (shown as 'corpus', or in the seeds' mean ± std); too costly to recompute "
            "per resample"
        )
    others = [m for m in section.metrics if m not in corpus and m not in section.mean_not_corpus]
    if others:
        parts.append(
            ", ".join(f"`{m}`" for m in others)
            + ": the mean of the per-example values, which is the logged corpus value"
        )
    return "Estimates and intervals: " + "; ".join(parts) + "."


def _run_label(run: RunRecord) -> str:
    return f"`{run.run_id}` ({run.name}: {run.method}, preset {run.preset}, seed {run.seed})"


def section_blocks(section: LanguageSection, report: Report) -> list[Block]:
    """Costs, quality and differences from the reference for one language."""
    blocks: list[Block] = [
        ("h2", section.title),
        (
            "p",
            f"{sum(len(r.runs) for r in section.rows)} runs, {len(section.rows)} methods; "
            f"data fingerprint `{section.fingerprint[:16]}`.",
        ),
        ("h3", f"{section.title}: costs"),
    ]
    header = ["method", "seeds", "trainable", "share", *[title for _, title in _costs()]]
    body = []
    for row in section.rows:
        several = len(row.runs) > 1
        body.append(
            [
                row.method,
                ", ".join(row.seeds),
                fmt_spread(row.trainable, several) if several else f"{row.trainable[0]:,.0f}",
                fmt_spread(row.share, several, 100.0) + " %",
                *[
                    fmt_spread(row.costs[key], several, 2**-20 if key.endswith("bytes") else 1)
                    + (f" {CONTENDED_MARK}" if row.contended and key in _load_sensitive() else "")
                    for key, _ in _costs()
                ],
            ]
        )
    blocks.append(("table", header, body))
    contended = contention_note(section)
    if contended:
        blocks.append(("p", contended))
    if not section.metrics:
        blocks.append(("p", "No metric is shared by every run of this table."))
        return blocks + _images(report, section.title, f"loss_{section.key}")
    blocks.append(("h3", f"{section.title}: quality"))
    header = ["method"] + [
        f"{m} {'↑' if report.directions.get(m, True) else '↓'}" for m in section.metrics
    ]
    body = [
        [row.method]
        + [
            _estimate_cell(
                row.estimates[m],
                report.directions.get(m, True),
                m in section.mean_not_corpus,
            )
            for m in section.metrics
        ]
        for row in section.rows
    ]
    header, body = retention.with_columns(section, header, body)
    blocks.append(("table", header, body))
    blocks.append(("p", _statistic_note(section)))
    blocks += retention.note(section)
    if section.reference_present:
        blocks.append(("h3", f"{section.title}: difference from {report.reference}"))
        blocks.append(
            (
                "p",
                f"Method minus `{report.reference}` on the same example ids: difference "
                f"[95 % paired bootstrap interval], two-sided p-value; * p < "
                f"{report.significance}.",
            )
        )
        others = [r for r in section.rows if r.method != report.reference]
        body = [
            [row.method]
            + [_difference_cell(row.estimates[m], report.significance) for m in section.metrics]
            for row in others
        ]
        blocks.append(("table", ["method", *section.metrics], body))
    else:
        blocks.append(
            (
                "p",
                f"The reference method `{report.reference}` has no run in this table: no "
                "significance tests.",
            )
        )
    if section.notes:
        blocks.append(("ul", section.notes))
    return blocks + _images(
        report,
        section.title,
        f"metrics_{section.key}",
        f"pareto_{section.key}",
        f"loss_{section.key}",
    )


def _costs() -> list[tuple[str, str]]:
    from reports.summary import COSTS

    return COSTS


def _load_sensitive() -> tuple[str, ...]:
    from reports.summary import LOAD_SENSITIVE

    return LOAD_SENSITIVE


CONTENDED_MARK = "†"


def contention_note(section: LanguageSection) -> str:
    """The footnote of the costs measured on a busy machine; '' when there are none."""
    marked = [row for row in section.rows if row.contended]
    if not marked:
        return ""
    titles = dict(_costs())
    columns = " and ".join(titles[key] for key in _load_sensitive())
    runs = "; ".join(
        f"{row.method}: "
        + ", ".join(f"load {fmt(load)} on {cpus:.0f} CPUs" for load, cpus in row.contended)
        for row in marked
    )
    return (
        f"{CONTENDED_MARK} {columns} measured under contention: the machine's 1-minute load "
        f"average during training was above its number of CPUs ({runs}), so other work competed "
        "for them and these runs' times are slower (and throughput lower) than on an idle "
        "machine. Compare them with care, or rerun those methods alone."
    )


ALT = {
    "metrics": "each metric by method with 95 % intervals",
    "pareto": "quality against trainable parameters and train time, Pareto front",
    "loss": "training loss curves",
    "forgetting": "forgetting per method (sequential protocol)",
}


def _images(report: Report, title: str, *keys: str) -> list[Block]:
    """The plots of `keys` (`<kind>_<table key>`) that the report has, described for `title`."""
    blocks = []
    for key in keys:
        if key in report.images:
            kind = key.partition("_")[0]
            alt = f"{title}: {ALT[kind]}" if title else ALT[kind]
            blocks.append(("img", report.images[key], alt))
    return blocks


def intro(report: Report) -> str:
    return (
        f"Each quality cell: estimate [95 % percentile bootstrap interval over the evaluated "
        f"examples, {report.n_boot} resamples, seed {report.seed}]. ▲* / ▼*: better / worse "
        f"than `{report.reference}` by a paired bootstrap test on the same examples "
        f"(p < {report.significance}; no correction for the many comparisons, so expect some "
        "false alarms). With several seeds, each example's values are averaged over the seeds "
        "before resampling (the interval covers the choice of examples, not of seeds), and the "
        "runs' own values are shown as mean ± std across seeds; costs likewise. Costs are per "
        "language. Runs are side by side only with the same preset, metric signatures and data "
        "fingerprint; the largest such group is shown (most methods, then most runs, then the "
        "newest), the rest is under Left out."
        + (
            " Runs on bases of different families (`model.family`) are never side by side: each "
            "family has its own tables, chosen that way among its own runs, and is tested "
            f"against its own `{report.reference}` run."
            if any(section.family for section in report.sections)
            else ""
        )
    )


def blocks(report: Report) -> list[Block]:
    """The whole report, in order."""
    out: list[Block] = [
        ("h1", report.title),
        (
            "p",
            f"Tracking store `{report.tracking_uri}`, experiment `{report.experiment}`"
            + (f", filter `{report.filter_string}`" if report.filter_string else "")
            + (f", preset `{report.preset}`." if report.preset else "."),
        ),
        ("p", intro(report)),
    ]
    if not report.sections and not report.forgetting:
        out.append(("p", "No finished, comparable benchmark run was found."))
    for section in report.sections:
        out += section_blocks(section, report)
    out += report.sweep
    out += inference_blocks(report.sections, report.images)  # the Inference cost section
    if report.forgetting:
        out += forgetting_blocks(report)
    out.append(("h2", "Left out"))
    if report.left_out:
        failed = [e for e in report.left_out if e.run.status != "FINISHED"]
        other = [e for e in report.left_out if e.run.status == "FINISHED"]
        items = [f"{_run_label(e.run)}: {e.reason}" for e in failed]
        items += [f"{_run_label(e.run)}: {e.reason}" for e in other]  # reasons name languages
        out.append(("ul", items))
    else:
        out.append(("p", "Nothing: every benchmark run found is in the tables."))
    return out


def forgetting_blocks(report: Report) -> list[Block]:
    """The sequential protocol's forgetting table, backward transfer and plot."""
    runs = report.sequential
    out: list[Block] = [
        ("h2", "Forgetting (sequential protocol)"),
        (
            "p",
            f"{len(runs)} sequential runs. Each cell: score right after training on that language "
            "→ final score after training on every language (forgetting, positive = forgotten). "
            "Mean ± std across seeds.",
        ),
    ]
    metrics = sorted({r.metric for r in report.forgetting})
    cells: dict[tuple[str, str], dict[str, str]] = {}
    seeds: dict[tuple[str, str], int] = {}
    for r in report.forgetting:
        several = r.seeds > 1
        cells.setdefault((r.method, r.language), {})[r.metric] = (
            f"{fmt_spread(r.after_own, several)} → {fmt_spread(r.final, several)} "
            f"({fmt_spread(r.forgetting, several)})"
        )
        seeds[(r.method, r.language)] = max(seeds.get((r.method, r.language), 0), r.seeds)
    body = [
        [method, language, str(seeds[(method, language)])]
        + [by_metric.get(m, "–") for m in metrics]
        for (method, language), by_metric in cells.items()
    ]
    out.append(("table", ["method", "language", "seeds", *metrics], body))
    if report.bwt:
        out.append(("h3", "Backward transfer"))
        out.append(
            ("p", "`bwt/<metric>`: the mean change on earlier languages (negative = forgotten).")
        )
        metrics = sorted({metric for _, metric in report.bwt})
        methods = sorted({method for method, _ in report.bwt})
        body = [
            [method] + [_spread_of(report.bwt.get((method, m), [])) for m in metrics]
            for method in methods
        ]
        out.append(("table", ["method", *[f"bwt/{m}" for m in metrics]], body))
    return out + _images(report, "", "forgetting")


def _spread_of(values: list[float]) -> str:
    array = np.array(values, dtype=float)
    if not len(array):
        return "–"
    return fmt_spread((float(array.mean()), float(array.std())), len(array) > 1)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report_blocks: list[Block], out: Path) -> str:
    """GitHub-flavoured Markdown; images linked relative to `out`."""
    lines: list[str] = []
    for block in report_blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            header, body = block[1], block[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
            lines.append("")
        elif kind == "img":
            path, alt = block[1], block[2]
            lines += [f"![{alt}]({Path(path).relative_to(out).as_posix()})", ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
    return "\n".join(lines).rstrip() + "\n"


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1500px;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}"
    "img{max-width:100%;margin:1em 0;display:block}code{background:#f3f3f3;padding:0 3px}"
)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code> elements."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html_lib.escape(text))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html_lib.escape(alt)}" src="data:image/png;base64,{data}">'


def html(report_blocks: list[Block], title: str) -> str:
    """The whole report in one file: inline style, images as data URIs, nothing external."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html_lib.escape(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for block in report_blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f'<{kind} id="{_slug(block[1])}">{_inline(block[1])}</{kind}>')
        elif kind == "p":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            header, body = block[1], block[2]
            parts.append("<table><thead><tr>")
            parts += [f"<th>{_inline(h)}</th>" for h in header]
            parts.append("</tr></thead><tbody>")
            for row in body:
                parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            parts.append("</tbody></table>")
        elif kind == "img":
            parts.append(_image(block[1], block[2]))
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
