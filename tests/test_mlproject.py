"""`mlflow run .`, the way users launch the benchmark: MLproject's entry point, bin/python and
the run that `mlflow run` opens, end to end in a subprocess (a few seconds of training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def mlflow_run(
    tmp_path: Path, *params: str, experiment: str = "adaptbench"
) -> tuple[subprocess.CompletedProcess, str]:
    """`mlflow run <repo> -P ... --env-manager local` from an empty folder; (process, store)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A fresh shell's environment: no MLflow state left by the tests that ran in this process
    # (mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID, which `mlflow run` would then refuse
    # beside --experiment-name), and no active venv, so bin/python picks the project's own.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_") and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")
    }
    env.update(MLFLOW_TRACKING_URI=store, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false")
    # The README's command as written: the venv's own `mlflow`, from a PATH without the venv.
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    args = [str(mlflow_cli), "run", str(REPO), "--env-manager", "local"]
    args += ["--experiment-name", experiment]
    for param in params:
        args += ["-P", param]
    process = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    return process, store


def test_mlflow_run_trains_and_logs_the_chosen_method(tmp_path: Path):
    process, store = mlflow_run(
        tmp_path,
        "method=ffn_expansion",
        "languages=python",
        "train_size=16",
        "eval_size=4",
        "epochs=1",
        "overrides=eval.max_new_tokens=16 data.val_size=4",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("adaptbench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["method"] == "ffn_expansion" and params["preset"] == "demo"
    # An MLproject parameter and one in `overrides` both reach the run; an empty one changes
    # nothing (the preset's value stays).
    assert params["train.epochs"] == "1" and params["data.train_size"] == "16"
    assert params["eval.max_new_tokens"] == "16" and params["data.val_size"] == "4"
    assert params["train.learning_rate"] == "0.001"
    assert (
        "generation/python/bleu" in run.data.metrics
        and "generation/python/pass_rate" in run.data.metrics
    )
    assert run.data.tags["generation.python.model_uri"].startswith("models:/")  # the pyfunc model
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "eval/generation")}
    assert tables == {"eval/generation/python_examples.json"}


def test_mlflow_run_with_an_unknown_method_fails_saying_which_exist(tmp_path: Path):
    process, _ = mlflow_run(tmp_path, "method=adapterz")
    assert process.returncode != 0
    assert "unknown method 'adapterz'" in process.stderr
    assert "Registered methods: ffn_expansion, full_layer, hybrid, lora" in process.stderr


def test_mlflow_run_with_a_bad_parameter_leaves_its_run_failed_with_the_error(tmp_path: Path):
    process, store = mlflow_run(tmp_path, "epochs=many", "overrides=eval.batch_size=0")
    assert process.returncode != 0
    assert "Traceback" not in process.stderr
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("adaptbench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert "argument --epochs: expected a positive integer, got 'many'" in run.data.tags["error"]


def test_mlflow_run_names_the_experiment_its_run_is_in(tmp_path: Path):
    # `mlflow run` chooses the experiment, not the preset: the closing line must say where.
    process, store = mlflow_run(
        tmp_path,
        "method=none",
        "languages=python",
        "train_size=4",
        "eval_size=2",
        "overrides=eval.max_new_tokens=4 data.val_size=2",
        experiment="elsewhere",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    (run,) = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("elsewhere").experiment_id]
    )
    assert f"run {run.info.run_id} finished" in process.stdout
    assert "look in experiment 'elsewhere'" in process.stdout
