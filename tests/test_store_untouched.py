"""A refused command damages nothing the store holds: a refused `--resume` leaves the run's
status, tags, metrics and artifacts exactly as they were."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from benchmark import cli
from tests.test_boundary import TINY, refused, store_snapshot


@pytest.mark.slow
def test_resuming_a_finished_run_is_refused_and_leaves_it_finished(demo_run: dict, capsys):
    mlflow.set_tracking_uri(demo_run["uri"])
    os.environ["MLFLOW_TRACKING_URI"] = demo_run["uri"]
    try:
        before = store_snapshot(demo_run["uri"])
        line = refused(["run", "--method", "lora", "--resume", demo_run["run_id"]], capsys)
        assert "the run finished; there is nothing to resume" in line
        assert store_snapshot(demo_run["uri"]) == before
        assert before[demo_run["run_id"]][0] == "FINISHED"
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def test_a_refused_resume_keeps_a_failed_runs_status_and_error(
    mlflow_store: str, tmp_path: Path, capsys
):
    bad = tmp_path / "broken_train.jsonl"
    bad.write_bytes(b"\xff\xfe not text\n")
    argv = ["run", "--method", "lora", *TINY, "--set", f"data.source={bad}"]
    refused(argv, capsys)  # a failed run that says why, with its checkpoint folder
    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("adaptbench").experiment_id])
    run_id = run.info.run_id
    assert run.info.status == "FAILED" and "not UTF-8" in run.data.tags["error"]
    before = store_snapshot(mlflow_store)

    # Other settings than the run was started with: refused, nothing written.
    line = refused([*argv, "--set", "train.learning_rate=0.5", "--resume", run_id], capsys)
    assert "was started with other settings: train.learning_rate" in line
    assert store_snapshot(mlflow_store) == before

    # From a folder without its checkpoints: refused, nothing written.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    line = refused([*argv, "--resume", run_id], capsys)
    assert f"no checkpoints of run {run_id}" in line
    assert store_snapshot(mlflow_store) == before

    # A suite parent or a comparison is not a run to resume.
    experiment = client.get_experiment_by_name("adaptbench").experiment_id
    suite = client.create_run(experiment, tags={"adaptbench.kind": "suite"})
    client.set_terminated(suite.info.run_id, "FAILED")
    before = store_snapshot(mlflow_store)
    line = refused([*argv, "--resume", suite.info.run_id], capsys)
    assert "that is a suite run" in line
    assert store_snapshot(mlflow_store) == before
    assert cli.main(["run", "--resume", "0" * 32]) == 2
    assert "no such run" in capsys.readouterr().err
    assert store_snapshot(mlflow_store) == before
