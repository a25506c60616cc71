"""The console: progress that reads in a log file, the suite's position and estimate, quiet
third-party libraries, and a small CLI run whose whole output is checked line by line."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from benchmark import console
from benchmark.suite import SuiteClock
from tests.conftest import REPO


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bar_on_a_stream_that_is_not_a_terminal_prints_a_few_plain_lines():
    stream = io.StringIO()  # not a terminal, like CI or `| tee`
    bar = console.progress_bar(total=1000, desc="python train", unit="step", file=stream)
    assert isinstance(bar, console.PlainProgress)
    for step in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # a line per quarter: 25, 50, 75, 100 %
    assert lines[0].startswith("python train: 250/1000 step (25%)")
    assert lines[-1].startswith("python train: 1000/1000 step (100%)")
    assert lines[-1].endswith("loss=0.0010")


def test_a_long_bar_also_prints_a_line_every_so_often_and_where_it_stopped():
    stream, clock = io.StringIO(), FakeClock()
    bar = console.PlainProgress(10, "python eval", "ex", file=stream, every_s=60.0, clock=clock)
    clock.now = 61.0  # one slow step: a line although no quarter is done
    bar.update(1)
    for _ in range(5):
        bar.update(1)  # 6/10: the quarter line at 50 %
    bar.close()  # stopped at 6 of 10: the last state is printed once
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "python eval: 1/10 ex (10%)",  # the slow step
        "python eval: 3/10 ex (30%)",  # past a quarter
        "python eval: 5/10 ex (50%)",  # past half
        "python eval: 6/10 ex (60%)",  # closed there
    ]
    assert lines[0].endswith("1m01s")


def test_a_bar_on_a_terminal_is_tqdm_and_a_disabled_one_prints_nothing():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert not isinstance(console.progress_bar(3, "x", file=Terminal()), console.PlainProgress)
    stream = io.StringIO()
    bar = console.progress_bar(3, "x", disable=True, file=stream)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""


def test_durations_read_at_a_glance():
    assert [console.duration(s) for s in (3.21, 42.4, 72, 3599.6, 7500)] == [
        "3.2s",
        "42s",
        "1m12s",
        "1h00m",
        "2h05m",
    ]
    assert console.duration(float("nan")) == "?"


def test_the_suite_clock_gives_the_position_elapsed_time_and_an_estimate():
    clock = FakeClock()
    suite = SuiteClock(5, clock=clock)
    assert suite.position() == "[1/5]" and suite.so_far() == "elapsed 0.0s"  # nothing to go on
    clock.now = 72.0
    suite.finished(72.0)
    assert suite.position() == "[2/5]"
    assert suite.so_far() == "elapsed 1m12s, about 4m48s left"  # 4 runs left at 72 s each
    clock.now = 100.0
    suite.finished(28.0)
    assert suite.so_far() == "elapsed 1m40s, about 2m30s left"  # mean 50 s, 3 left
    for _ in range(3):
        suite.finished(10.0)
    assert suite.so_far() == "elapsed 1m40s"  # done: no estimate


def test_the_score_table_is_aligned_with_a_row_per_metric():
    text = console.score_table(
        {
            "lora": {"bleu": 0.12345, "edit_distance": 311.0},
            "ffn_expansion": {"bleu": 0.5},
        }
    )
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "lora", "ffn_expansion"]
    assert lines[2].split() == ["bleu", "0.1235", "0.5000"]
    assert lines[3].split() == ["edit_distance", "311.0", "–"]
    ends = {len(line) for line in lines}
    assert len(ends) == 1  # every line as long: right-aligned columns


def test_scores_are_read_from_the_metrics_a_run_evaluated():
    params = {"metric.bleu.signature": "b", "metric.humaneval.signature": "h", "train.seed": "1"}
    metrics = {
        "generation/python/bleu": 0.3,
        "generation/python/train_time_s": 9.0,
        "generation/javascript/bleu": 0.2,
        "humaneval/python/pass_at_1": 0.1,
        "humaneval/python/generation_time_s": 4.0,
    }
    assert console.scores_of(params, metrics, "generation/python") == {"bleu": 0.3}
    assert console.scores_of(params, metrics, "humaneval/python") == {"pass_at_1": 0.1}


def test_only_the_known_third_party_warning_is_silenced(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "DEBUG")  # the user's own choice stays
    for name in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "")  # recorded, so that what the call sets is undone after
        monkeypatch.delenv(name)
    for module in ("huggingface_hub.utils", "transformers.utils.logging"):
        monkeypatch.delitem(sys.modules, module, raising=False)  # their bars stay as they are
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        console.quiet_third_party()
        message = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
        warnings.warn(message, FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "DEBUG"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"


TINY = [
    "--set",
    "data.train_size=8",
    "--set",
    "data.val_size=4",
    "--set",
    "data.eval_size=4",
    "--set",
    "train.max_steps=2",
    "--set",
    "eval.max_new_tokens=8",
    "--languages",
    "python",
]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m benchmark ...` from an empty folder, stdout and stderr together, as a fresh
    shell would run it (no MLflow or quieting variables set by this test process; system
    metrics on, as by default)."""
    dropped = set(console.QUIET_ENVIRONMENT) | {"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in dropped}
    env |= {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )


NOISE = ("Warning", "warnings.warn", "INFO mlflow", "Loading weights", "Downloading artifacts")


@pytest.mark.slow
def test_a_small_suite_log_is_quiet_and_says_where_it_stands(tmp_path: Path):
    out = tmp_path / "report"
    done = _cli(tmp_path, "suite", "--methods", "lora,none", *TINY, "--out", str(out))
    log = done.stdout
    assert done.returncode == 0, log
    assert "\r" not in log  # no bar redrawn in place: the log is read, not watched
    lines = log.splitlines()
    noise = [line for line in lines if any(word in line for word in NOISE)]
    assert noise == []
    started = [line for line in lines if ": started (elapsed" in line]
    assert [line.split("INFO adaptbench: ")[1].split(":")[0] for line in started] == [
        "[1/2] lora seed 42",
        "[2/2] none seed 42",
    ]
    assert "about" in started[1] and "left" in started[1]  # an estimate once a run finished
    assert len([line for line in lines if ": FINISHED in " in line]) == 2
    train = [line for line in lines if line.startswith("generation/python train: ")]
    assert 1 <= len(train) <= 5  # plain lines, a few per bar
    table = log.split("generation/python scores:\n", 1)[1].splitlines()
    assert table[0].split() == ["metric", "lora", "none"]
    assert any(row.split()[0] == "bleu" and len(row.split()) == 3 for row in table)
    assert f"report: {out / 'comparison.html'}" in log and (out / "comparison.md").is_file()
    logged = [line for line in lines if re.search(r" (INFO|WARNING|ERROR) ", line)]
    one_format = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) \S+: ")
    assert logged and all(one_format.match(line) for line in logged)  # MLflow's format, only


@pytest.mark.slow
def test_a_small_run_ends_with_its_scores_and_verbose_shows_the_rest(tmp_path: Path):
    done = _cli(tmp_path, "run", "--method", "lora", *TINY)
    assert done.returncode == 0, done.stdout
    assert [line for line in done.stdout.splitlines() if any(w in line for w in NOISE)] == []
    table = done.stdout.split("scores of lora (", 1)[1].splitlines()[1:]
    assert table[0].split() == ["metric", "generation/python"]
    assert "generation/python/{" not in done.stdout  # no metrics as a raw dict
    verbose = _cli(tmp_path, "-v", "run", "--method", "lora", *TINY)
    assert verbose.returncode == 0, verbose.stdout
    assert "INFO mlflow" in verbose.stdout  # -v hides nothing
