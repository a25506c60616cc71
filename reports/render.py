"""The report as Markdown (relative image links) and as one self-contained HTML file."""

from __future__ import annotations

import base64
import html as html_lib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Report:
    experiment: str
    tracking_uri: str
    reference: str
    sections: dict[str, tuple[list[Any], list[str]]]
    left_out: list[tuple[Any, str]]
    forgetting: list[dict[str, Any]]
    images: dict[str, Path]
    directions: dict[str, bool]
    n_boot: int
    significance: float


def _fmt(value: float, digits: int = 3) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return (
        f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    )


def _cell(row: Any, metric: str, report: Report) -> str:
    point, low, high = row.values[metric]
    text = f"{_fmt(point)} [{_fmt(low)}, {_fmt(high)}]"
    if len(row.runs) > 1:
        mean, std = row.seed_spread[metric]
        text += f" (seeds {_fmt(mean)} ± {_fmt(std)})"
    if metric in row.versus_reference:
        diff, p = row.versus_reference[metric]
        if p < report.significance:
            better = (diff > 0) == report.directions.get(metric, True)
            text += f" {'▲' if better else '▼'}* (p={p:.3f})"
    return text


def tables(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    out = []
    for language, (rows, names) in report.sections.items():
        header = [
            "method",
            "seeds",
            "trainable",
            "share",
            "weights (MB)",
            "train time (s)",
            "peak memory (MB)",
            "train tokens/s",
            "skipped steps",
            *names,
        ]
        body = []
        for row in rows:
            body.append(
                [
                    row.method,
                    str(len(row.runs)),
                    f"{row.trainable:,}",
                    f"{100 * row.share:.2f} %",
                    _fmt(row.weights_bytes / 2**20),
                    _fmt(row.costs["train_time_s"]),
                    _fmt(row.costs["peak_memory_mb"]),
                    _fmt(row.costs["tokens_per_s"]),
                    _fmt(row.costs["skipped_steps"]),
                    *[_cell(row, m, report) for m in names],
                ]
            )
        out.append((f"{language}", header, body))
    if report.forgetting:
        header = [
            "method",
            "seed",
            "language",
            "metric",
            "after own training",
            "final",
            "forgetting",
        ]
        body = [
            [
                r["method"],
                r["seed"],
                r["language"],
                r["metric"],
                _fmt(r["after own training"]),
                _fmt(r["final"]),
                _fmt(r["forgetting"]),
            ]
            for r in report.forgetting
        ]
        out.append(("forgetting (sequential protocol)", header, body))
    return out


INTRO = (
    "Each metric cell: estimate [95 % bootstrap interval over the evaluated examples, {n} "
    "resamples]. BLEU is corpus BLEU (resampled from sufficient statistics); the other metrics "
    "are means of their per-example values. ▲* / ▼*: better / worse than `{ref}` by a paired "
    "bootstrap test on the same examples (p < {alpha}). Costs are per language; seeds pooled."
)


def intro(report: Report) -> str:
    return INTRO.format(n=report.n_boot, ref=report.reference, alpha=report.significance)


def markdown(report: Report, out: Path) -> str:
    lines = [
        f"# adaptbench comparison: experiment `{report.experiment}`",
        "",
        f"Tracking store: `{report.tracking_uri}`",
        "",
        intro(report),
        "",
    ]
    for title, header, body in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body
        ]
        lines.append("")
        for key, path in report.images.items():
            if key.endswith(f"_{title}") or (key == "forgetting" and title.startswith("forget")):
                lines += [f"![{key}]({path.relative_to(out)})", ""]
    lines += ["## Left out", ""]
    if report.left_out:
        lines += [
            f"- `{r.run_id}` ({r.method}, {r.preset}, seed {r.seed}): {why}"
            for r, why in report.left_out
        ]
    else:
        lines.append("Nothing: every run of the experiment is in the tables.")
    return "\n".join(lines) + "\n"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html_lib.escape(path.stem)}" src="data:image/png;base64,{data}">'


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "th{background:#f3f3f3}img{max-width:100%;margin:1em 0}"
)


def html(report: Report) -> str:
    """The whole report in one file: styles inline, images as data URIs, no external link."""
    esc = html_lib.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>adaptbench comparison"
        f"</title><style>{STYLE}</style></head><body>",
        f"<h1>adaptbench comparison: experiment {esc(report.experiment)}</h1>",
        f"<p>Tracking store: <code>{esc(report.tracking_uri)}</code></p>",
        f"<p>{esc(intro(report))}</p>",
    ]
    for title, header, body in tables(report):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in body:
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
        for key, path in report.images.items():
            if key.endswith(f"_{title}") or (key == "forgetting" and title.startswith("forget")):
                parts.append(_image(path))
    parts.append("<h2>Left out</h2><ul>")
    parts += [
        f"<li><code>{esc(r.run_id)}</code> ({esc(r.method)}, {esc(r.preset)}, seed "
        f"{esc(r.seed)}): {esc(why)}</li>"
        for r, why in report.left_out
    ]
    if not report.left_out:
        parts.append("<li>Nothing: every run of the experiment is in the tables.</li>")
    parts.append("</ul></body></html>")
    return "\n".join(parts)
