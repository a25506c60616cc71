"""A run killed with SIGKILL mid-epoch resumes from its checkpoint, in the same MLflow run, and
ends with the predictions and metrics of a run that was never interrupted: on the T5 demo base
and on its decoder-only counterpart (`demo-causal`, a Llama-style base)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow

# 256 examples in batches of 8: 32 steps, one epoch; a checkpoint every 4 steps (every example
# trained on: the demo's skip of long targets is turned off).
SETTINGS = [
    "--method", "lora", "--preset", "demo", "--languages", "python,javascript",
    "--train-size", "256", "--epochs", "1", "--eval-size", "8",
    "--set", "train.batch_size=8", "--set", "train.checkpoint_every=4",
    "--set", "data.val_size=8", "--set", "eval.max_new_tokens=16",
    "--set", "data.skip_long_targets=false",
]  # fmt: skip


def command(model: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmark",
        "run",
        *SETTINGS,
        "--set",
        f"model.name={model}",
        *extra,
    ]


def run_cli(cwd: Path, env: dict, model: str, *extra: str) -> str:
    done = subprocess.run(command(model, *extra), cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def predictions(client: MlflowClient, run_id: str, language: str, tmp: Path) -> list[str]:
    path = client.download_artifacts(run_id, f"eval/generation/{language}_examples.json", str(tmp))
    table = json.loads(Path(path).read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])["prediction"].tolist()


@pytest.mark.parametrize("model", ["demo", "demo-causal"])
def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path, model: str):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=uri,
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="2",  # the same thread count in every process: the same sums
    )
    # The run to be killed: SIGKILL once the second language (javascript) has a mid-epoch
    # checkpoint, so that python is finished and javascript half trained.
    proc = subprocess.Popen(
        command(model), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoints = tmp_path / "checkpoints"
    # Only a hang guard: at load 18 on 2 cores the first language alone took over 10 minutes.
    deadline = time.monotonic() + 2400
    try:
        while not list(checkpoints.glob("*/generation/javascript/step-00000008")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no javascript checkpoint in 2400 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (run_folder,) = checkpoints.iterdir()
    run_id = run_folder.name
    assert (run_folder / "generation" / "python" / "done.json").is_file()
    assert not (run_folder / "generation" / "javascript" / "done.json").exists()
    latest = max((run_folder / "generation" / "javascript").glob("step-*"))
    state = json.loads((latest / "state.json").read_text())
    assert state["epoch"] == 0 and 0 < state["batch"] < 32  # killed mid-epoch

    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody ended it
    out = run_cli(tmp_path, env, model, "--resume", run_id)
    assert run_id in out
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert not run_folder.exists()  # a finished run keeps no checkpoints
    assert resumed.data.tags["resumes"] == "1"
    assert resumed.data.metrics["generation/javascript/resumed_from_step"] >= 8

    (tmp_path / "ref").mkdir()
    # "run <id> finished: ..." closes the output, after the score table.
    reference_id = re.search(r"^run (\w+) finished", run_cli(tmp_path / "ref", env, model), re.M)[1]
    reference = client.get_run(reference_id)
    assert reference.data.params["model.family"] == ("llama" if model == "demo-causal" else "t5")
    for language in ("python", "javascript"):
        assert predictions(client, run_id, language, tmp_path / "a") == predictions(
            client, reference_id, language, tmp_path / "b"
        )
        for name in ("bleu", "codebleu", "pass_rate", "edit_similarity", "final_train_loss"):
            key = f"generation/{language}/{name}"
            assert resumed.data.metrics[key] == reference.data.metrics[key], key
        # Every step of the curve is logged once, with the uninterrupted run's values.
        history = client.get_metric_history(run_id, f"generation/{language}/train/loss")
        expected = client.get_metric_history(reference_id, f"generation/{language}/train/loss")
        assert sorted(m.step for m in history) == list(range(1, 33))
        assert {m.step: m.value for m in history} == {m.step: m.value for m in expected}
    # The resume continued the killed run: no third run was made.
    experiment = client.get_experiment_by_name("adaptbench")
    assert len(client.search_runs([experiment.experiment_id])) == 2
