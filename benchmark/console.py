"""What the harness writes to the console: progress that reads in a terminal and in a log file
(CI, `tee`), third-party libraries kept quiet, durations and the table of scores."""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TextIO

# Third-party output that says nothing a user acts on, silenced unless `-v`:
# environment variables the libraries read when they are imported (so they cost no import here),
# and warnings matched by category and message, never a whole category.
QUIET_ENVIRONMENT = {
    # MLflow's own INFO lines: "Creating initial MLflow database tables", "Skip logging GPU
    # metrics", system metrics started/stopped, "Validating input example". Its warnings stay.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # A bar per artifact download (logging a model validates its input example by loading it;
    # `generate` and the report download artifacts too).
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # transformers' "Loading weights" / "Writing model shards" bars and the hub's download bars.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
QUIET_WARNINGS = (
    # transformers 5 deprecates the name PEFT still calls on every adapted model; nothing here
    # uses gradient checkpointing.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # MLflow's, so one format shows
LOG_DATE_FORMAT = "%Y/%m/%d %H:%M:%S"


def quiet_third_party() -> None:
    """Silence the known third-party noise (see QUIET_ENVIRONMENT, QUIET_WARNINGS); a variable
    the user set keeps its value."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    hub = sys.modules.get("huggingface_hub.utils")  # already imported: the variable came late
    if hub is not None and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        hub.disable_progress_bars()
    loaded = sys.modules.get("transformers.utils.logging")
    if loaded is not None and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        loaded.disable_progress_bar()


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def duration(seconds: float) -> str:
    """`3.2s`, `42s`, `1m12s`, `2h05m`: short enough for a progress line."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class PlainProgress:
    """A progress bar for a stream that is not a terminal: a plain line each time another
    `1/lines` of the work is done, and one at least every `every_s` seconds on a long step,
    never a carriage return. Takes the calls the harness makes on tqdm."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        file: TextIO | None = None,
        lines: int = 4,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file = file if file is not None else sys.stderr
        self.lines, self.every_s, self.clock = lines, every_s, clock
        self.start = self.last = clock()
        self.shown_part, self.shown_n = self._part(), initial
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def _part(self) -> int:
        return self.lines * self.n // self.total if self.total > 0 else 0

    def update(self, n: int = 1) -> None:
        self.n += n
        part = self._part()
        if part > self.shown_part or self.clock() - self.last >= self.every_s:
            self.shown_part = part
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed and self.n != self.shown_n:  # stopped between two lines
            self._line()
        self.closed = True

    def _line(self) -> None:
        self.last = self.clock()
        self.shown_n = self.n
        share = f" ({100 * self.n // self.total}%)" if self.total > 0 else ""
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        elapsed = duration(self.last - self.start)
        self.file.write(
            f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {elapsed}{extra}\n"
        )
        self.file.flush()


def progress_bar(
    total: int,
    desc: str,
    unit: str = "it",
    disable: bool = False,
    initial: int = 0,
    file: TextIO | None = None,
) -> Any:
    """tqdm's bar on a terminal; periodic plain lines (PlainProgress) anywhere else."""
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    if disable or is_terminal(stream):
        return tqdm(
            total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream
        )
    return PlainProgress(total, desc, unit, initial=initial, file=stream)


def table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def score(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def scores_of(params: Mapping[str, str], metrics: Mapping[str, float], scope: str) -> dict:
    """A run's scores on a `<task>/<language>` scope, by metric, from its MLflow params and
    metrics: each metric it evaluated (`metric.<name>.signature`) as `<scope>/<name>`, and
    every value of an evaluation-only task signed by its own name (pass@1, pass@10, ...)."""
    names = sorted(
        key[len("metric.") : -len(".signature")]
        for key in params
        if key.startswith("metric.") and key.endswith(".signature")
    )
    task = scope.partition("/")[0]
    out = {}
    for name in names:
        key = f"{scope}/{name}"
        if key in metrics:
            out[name] = metrics[key]
        elif name == task:  # an evaluation-only task's values, e.g. humaneval's pass_at_1
            out |= {
                k[len(scope) + 1 :]: v
                for k, v in metrics.items()
                if k.startswith(scope + "/") and k.count("/") == 2 and not k.endswith("_time_s")
            }
    return out


def score_table(columns: Mapping[str, Mapping[str, float]]) -> str:
    """One row per metric, one column per run or language (`columns`: its name -> scores)."""
    names = sorted({metric for values in columns.values() for metric in values})
    rows = [
        [metric] + [score(values.get(metric)) for values in columns.values()] for metric in names
    ]
    return table(["metric", *columns], rows)
