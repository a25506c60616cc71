"""The suite: one run per method, failures recorded without stopping the others."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmark.config import UsageError
from benchmark.suite import plan, run_suite
from tests.conftest import SMALL_RUN

pytestmark = pytest.mark.slow


def test_default_suite_is_every_method_that_runs_without_settings():
    names = [c.method for c in plan("demo", [], [42], {})]
    assert names == ["ffn_expansion", "full_layer", "hybrid", "lora", "none"]
    seeds = [(c.method, c.train.seed) for c in plan("demo", ["lora"], [1, 2], {})]
    assert seeds == [("lora", 1), ("lora", 2)]


def test_a_method_setting_that_a_suite_method_lacks_is_refused_with_the_way_out():
    """`--set method.stack=encoder` with the default suite: none takes no settings and lora has
    no stack; the refusal says so and that a method.* setting goes to every method."""
    with pytest.raises(UsageError) as refused:
        plan("demo", ["hybrid", "none"], [42], {"method.stack": "encoder"})
    message = str(refused.value)
    assert "method 'none'" in message and "takes no settings" in message
    assert "method.stack applies to every method" in message and "--methods" in message
    with pytest.raises(UsageError, match="Known fields: .*r.*applies to every method"):
        plan("demo", ["lora"], [42], {"method.stack": "encoder"})
    with pytest.raises(UsageError) as other:  # a setting of another section: no such advice
        plan("demo", ["hybrid"], [42], {"method.stack": "encoder", "train.epochs": "x"})
    assert "train.epochs" in str(other.value) and "every method" not in str(other.value)
    (config,) = plan("demo", ["hybrid"], [42], {"method.stack": "encoder"})
    assert config.method_options["stack"] == "encoder"


def test_a_bad_method_setting_value_is_refused_before_anything_trains():
    """A value the method refuses (not a setting it lacks) stops the plan, with no every-method
    advice: before, full_layer trained and hybrid failed at apply, recorded as a failed run."""
    with pytest.raises(UsageError) as refused:
        plan("demo", ["full_layer", "hybrid"], [42], {"method.stack": "sideways"})
    message = str(refused.value)
    assert "method.stack must be one of encoder, decoder, got 'sideways'" in message
    assert "every method" not in message


def test_a_failing_method_is_recorded_and_the_suite_goes_on(
    mlflow_store: str, csn_tree: Path, caplog: pytest.LogCaptureFixture
):
    overrides = {**SMALL_RUN, "data.source": str(csn_tree), "languages": "python"}
    with caplog.at_level(logging.INFO, logger="adaptbench"):
        entries = run_suite(plan("demo", ["peft", "lora"], [42], overrides))
    assert [(e.method, e.status) for e in entries] == [("peft", "FAILED"), ("lora", "FINISHED")]
    assert "config_file" in entries[0].error
    client = MlflowClient()
    failed = client.get_run(entries[0].run_id)
    assert failed.info.status == "FAILED" and "config_file" in failed.data.tags["error"]
    finished = client.get_run(entries[1].run_id)
    assert "generation/python/bleu" in finished.data.metrics
    # The machine's load while lora trained, for the report to mark costs under contention.
    assert finished.data.metrics["generation/python/train/load_avg"] >= 0
    assert finished.data.metrics["generation/python/train/cpu_count"] >= 1
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[")]
    expected = [
        r"\[1/2\] peft seed 42: started \(elapsed \S+\)",
        r"\[1/2\] peft seed 42: FAILED after \S+ \(elapsed \S+, about \S+ left\): .+",
        r"\[2/2\] lora seed 42: started \(elapsed \S+, about \S+ left\)",
        r"\[2/2\] lora seed 42: FINISHED in \S+ \(elapsed \S+\)",
    ]
    assert len(progress) == 4 and all(map(re.fullmatch, expected, progress)), progress
    assert progress[1].endswith(entries[0].error)
    parent = failed.data.tags["mlflow.parentRunId"]
    assert finished.data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).data.tags["adaptbench.kind"] == "suite"


def test_suite_report_tests_methods_against_the_base(
    mlflow_store: str, csn_tree: Path, tmp_path: Path, capsys
):
    from benchmark.cli import main

    settings = {**SMALL_RUN, "data.source": str(csn_tree), "languages": "python"}
    args = [part for k, v in settings.items() for part in ("--set", f"{k}={v}")]
    out = tmp_path / "report"
    code = main(["suite", "--preset", "demo", "--methods", "none,lora", "--out", str(out), *args])
    assert code == 0, capsys.readouterr().err
    report = (out / "comparison.md").read_text()
    # `none` ran, so every method is paired with the base, not with lora.
    assert "### generation/python: difference from none" in report
    assert "difference from lora" not in report
    differences = report.split("### generation/python: difference from none")[1].split("###")[0]
    assert "| lora |" in differences and "| none |" not in differences
