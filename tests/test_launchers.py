"""The suite's launchers: child runs as separate processes (`local`) or submitit jobs (`slurm`
through submitit's local executor: real processes, Slurm's code path but for the submission)
give the same runs and numbers as the inline suite; a killed child is recorded and resumes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from core import record as rec
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY = [
    "--preset", "demo", "--methods", "lora,none", "--languages", "python", "--no-report",
    "--set", "data.train_size=8", "--set", "data.val_size=4", "--set", "data.eval_size=4",
    "--set", "train.max_steps=2", "--set", "eval.max_new_tokens=8",
]  # fmt: skip
# Every process computes with the same thread count: the same sums, the same numbers.
THREADS = str(max(1, (os.cpu_count() or 1) // 2))


def suite(tmp: Path, *extra: str, wait: bool = True):
    tmp.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=store, PYTHONPATH=str(REPO), OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
    )  # fmt: skip
    command = [sys.executable, "-m", "benchmark", "suite", *TINY, *extra]
    if not wait:
        return subprocess.Popen(command, cwd=tmp, env=env, stderr=subprocess.PIPE, text=True), store
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    return done, store


def children(store: str) -> dict[str, object]:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("adaptbench")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(rec.KIND) == rec.SUITE_KIND]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {r.data.tags[rec.METHOD]: r for r in kids} | {"suite": parent}


def scores(run) -> dict[str, float]:
    """The run's quality scores (`generation/python/<metric>`), not its times, speeds or memory."""
    costs = ("_time_s", "_per_s", "peak_memory_mb")
    return {
        key: value
        for key, value in run.data.metrics.items()
        if key.startswith("generation/python/") and key.count("/") == 2 and not key.endswith(costs)
    }


def test_local_and_slurm_launchers_give_the_inline_suites_numbers(tmp_path: Path):
    inline, inline_store = suite(tmp_path / "inline")
    assert inline.returncode == 0, inline.stderr[-3000:]
    local, local_store = suite(tmp_path / "local", "--launcher", "local", "--max-parallel", "2")
    assert local.returncode == 0, local.stderr[-3000:]
    slurm, slurm_store = suite(
        tmp_path / "slurm", "--launcher", "slurm", "--slurm-executor", "local"
    )
    assert slurm.returncode == 0, slurm.stderr[-3000:]
    expected = children(inline_store)
    assert set(expected) == {"lora", "none", "suite"}
    for store, launcher in ((local_store, "local"), (slurm_store, "slurm")):
        found = children(store)
        assert found["suite"].data.tags["launcher"] == launcher
        for method in ("lora", "none"):
            run = found[method]
            assert run.info.status == "FINISHED"
            assert scores(run) and scores(run) == scores(expected[method]), (launcher, method)
            tags = run.data.tags
            # The local launcher's word for a clean exit, or submitit's job state.
            assert tags["launcher.state"] in ("COMPLETED", "FINISHED"), tags["launcher.state"]
            assert Path(tags["launcher.log"]).is_file() and tags["launcher.job_id"]
        assert not found["suite"].data.tags.get("failed_children")


def test_a_killed_child_is_a_failed_run_that_resumes(tmp_path: Path):
    # One child with checkpoints every step, killed once its first checkpoint is written.
    proc, store = suite(
        tmp_path, "--launcher", "local", "--methods", "lora", "--set", "train.max_steps=12",
        "--set", "train.checkpoint_every=1", "--set", "data.train_size=96",
        "--set", "data.skip_long_targets=false", wait=False,
    )  # fmt: skip
    pid, lines, deadline = None, [], time.monotonic() + 600
    while pid is None:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "".join(lines)[-3000:]
        lines.append(line)
        found = re.search(r"child 0 \(lora seed 42\): pid (\d+)", line)
        pid = int(found.group(1)) if found else None
        assert time.monotonic() < deadline, "".join(lines)[-3000:]
    while not list((tmp_path / "checkpoints").glob("*/generation/python/step-00000002")):
        assert time.monotonic() < deadline, "no checkpoint in 600 s"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    rest = proc.stderr.read()
    assert proc.wait(timeout=600) == 1, rest[-3000:]  # the suite says a child failed
    run = children(store)["lora"]
    assert run.info.status == "FAILED"
    assert "--resume " + run.info.run_id in run.data.tags[rec.ERROR]
    assert run.data.tags["launcher.state"] == "KILLED (signal 9)"
    assert run.info.run_id in children(store)["suite"].data.tags["failed_children"]
    # The command the error gives, from the suite's folder: the same run goes on to the end.
    command = run.data.tags[rec.ERROR].split("continue it with ", 1)[1].split()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=store, OMP_NUM_THREADS=THREADS)
    done = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = MlflowClient(store).get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags[rec.RESUMES] == "1"
    assert resumed.data.metrics["generation/python/resumed_from_step"] >= 2
