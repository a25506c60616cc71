"""Runs started at once on one store: the same dataset and experiment written by many processes.

The local and Slurm launchers start a suite's children together, and users start runs side by
side on one store. MLflow checks whether a dataset (or an experiment) exists and then writes it;
two processes can both miss it and the second write breaks a unique constraint. Each process here
is released by one barrier so that their writes meet.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark import tracking
from benchmark.config import DataConfig
from benchmark.data import load_languages

PROCESSES = 8
REPO = Path(__file__).resolve().parents[1]


def _write_side_by_side(uri: str, experiment: str, barrier, results) -> None:
    mlflow.set_tracking_uri(uri)
    examples = load_languages(["python"], DataConfig(train_size=8))["python"].train
    barrier.wait()
    try:
        tracking.set_experiment(experiment)
        with mlflow.start_run():
            tracking.log_dataset(
                examples, "python-training", "sample", "python", "train", "training"
            )
        results.put("ok")
    except Exception as error:  # any failure is reported, never a silent exit
        results.put(f"{type(error).__name__}: {str(error)[:300]}")


def _side_by_side(uri: str, experiment: str) -> list[str]:
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(PROCESSES), spawn.Queue()
    workers = [
        spawn.Process(target=_write_side_by_side, args=(uri, experiment, barrier, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcomes: list[str] = []
    deadline = time.monotonic() + 900  # only a hang guard
    while len(outcomes) < len(workers):
        try:
            outcomes.append(results.get(timeout=1))
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            assert not dead, f"a writer died with exit code {dead} before reporting"
            assert time.monotonic() < deadline, f"{len(outcomes)} of {len(workers)} reported"
    for worker in workers:
        worker.join(timeout=600)
    return outcomes


def test_runs_started_together_all_record_the_same_dataset_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The writers are spawned with this process's sys.path, where an earlier test's loaded model
    # may have put its bundled copy of the code first: they import this checkout's.
    monkeypatch.syspath_prepend(str(REPO))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    MlflowClient().search_experiments()  # the store's tables exist before the runs start

    outcomes = _side_by_side(uri, "side-by-side")

    assert outcomes == ["ok"] * PROCESSES
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("side-by-side")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == PROCESSES
    digests = {run.inputs.dataset_inputs[0].dataset.digest for run in runs}
    assert len(digests) == 1  # one dataset row, linked from every run
    assert all(len(run.inputs.dataset_inputs) == 1 for run in runs)


def test_a_conflict_that_is_not_a_race_is_not_retried(monkeypatch: pytest.MonkeyPatch):
    calls = []

    def refuse():
        calls.append(1)
        raise MlflowException("Invalid value for parameter 'x'")

    with pytest.raises(MlflowException, match="Invalid value"):
        tracking.retry_write_races(refuse)
    assert calls == [1]
