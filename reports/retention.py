"""Retention in the report: beside each section's quality columns, how much each method's held-out
loss rose (`retention/<scope>/<set>/loss_delta`, see benchmark/retention.py), and one line that
says what the numbers mean and what the base's loss was."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from core import record as rec

if TYPE_CHECKING:
    from reports.records import RunRecord
    from reports.summary import LanguageSection

COLUMN = "retention Δ {} ↓"


def held_out_sets(section: LanguageSection) -> list[str]:
    """The held-out sets some run of the section logged, in the order first seen."""
    found: dict[str, None] = {}
    for row in section.rows:
        for run in row.runs:
            for key in run.metrics:
                parts = rec.split_retention(key)
                if parts and parts[0] == section.language:
                    found[parts[1]] = None
    return list(found)


def _values(runs: list[RunRecord], scope: str, held_out: str, stat: str) -> list[float]:
    key = rec.retention_metric(scope, held_out, stat)
    return [r.metrics[key] for r in runs if key in r.metrics]


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:+.3f}"
    return f"{mean:+.3f} ± {float(np.std(values)):.3f}"


def with_columns(
    section: LanguageSection, header: list[str], body: list[list[Any]]
) -> tuple[list[str], list[list[Any]]]:
    """The quality table with a `retention Δ <set>` column per held-out set (mean ± std of the
    runs' loss_delta across seeds); unchanged when no run logged retention."""
    sets = held_out_sets(section)
    header = header + [COLUMN.format(name) for name in sets]
    body = [
        cells + [_cell(_values(row.runs, section.language, name, "loss_delta")) for name in sets]
        for cells, row in zip(body, section.rows)
    ]
    return header, body


def note(section: LanguageSection) -> list[tuple[str, str]]:
    """One paragraph: what a retention column means and each set's loss before adaptation."""
    sets = held_out_sets(section)
    if not sets:
        return []
    runs = [run for row in section.rows for run in row.runs]
    before = []
    for name in sets:
        values = _values(runs, section.language, name, "loss_before")
        if values:
            before.append(f"{name} {float(np.mean(values)):.3f}")
    return [
        (
            "p",
            "retention Δ <set>: the mean per-token loss on a held-out set the model was never "
            "trained on, after adaptation minus before (positive: the method forgot some of what "
            "the base knew; `code-<lang>`: another language's code, `pretraining-text`: the "
            "base's pretraining text). The base's loss before: " + ", ".join(before) + ".",
        )
    ]
