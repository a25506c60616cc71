"""A shared tracking server: runs log to `mlflow server` over HTTP, models load back from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from benchmark.config import make_config
from benchmark.runner import run
from benchmark.serving import free_port
from tests.conftest import SMALL_RUN

pytestmark = pytest.mark.slow


# Generous: a cold start takes about 15 s, far longer on a loaded 2-core machine. Every wait polls
# readiness under this one deadline; no single request may fail the wait by being slow.
SERVER_DEADLINE_S = 180


def start_server(folder: Path, *extra: str, env: dict[str, str] | None = None):
    """`mlflow server` on a free loopback port: sqlite store and proxied artifacts in `folder`.

    Returns the process and its URL once /health answers; `extra` adds server options.
    """
    port = free_port()
    log_path = folder / "server.log"
    server_env = dict(os.environ if env is None else env)
    # `mlflow server` starts uvicorn by name: this interpreter's bin folder must be on PATH.
    server_env["PATH"] = os.pathsep.join(
        [os.path.dirname(sys.executable), server_env.get("PATH", "")]
    )
    # The GenAI job runner (eight worker processes) serves nothing a benchmark run uses.
    server_env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{folder / 'server.db'}",
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log_path)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def wait_until_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Poll `url`/health until it answers 200, the server exits, or the deadline passes."""
    deadline = time.monotonic() + SERVER_DEADLINE_S
    while True:
        assert proc.poll() is None, f"mlflow server exited: {log_path.read_text()[-3000:]}"
        try:
            if requests.get(f"{url}/health", timeout=10).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            pass
        assert time.monotonic() < deadline, (
            f"mlflow server not healthy in {SERVER_DEADLINE_S} s: {log_path.read_text()[-3000:]}"
        )
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM by its PID (it stops its uvicorn workers), SIGKILL to its session if it hangs."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: start_new_session=True
        proc.wait()


@pytest.fixture
def tracking_server(tmp_path: Path):
    proc, url = start_server(tmp_path)
    try:
        yield url
    finally:
        stop_server(proc)


def test_demo_run_logs_to_a_server_and_its_model_loads_back(
    tracking_server: str, csn_tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    monkeypatch.chdir(tmp_path)  # nothing may land in a local ./mlruns
    mlflow.set_tracking_uri(tracking_server)
    overrides = {**SMALL_RUN, "data.source": str(csn_tree), "languages": "python"}
    run_id = run(make_config("lora", "demo", overrides))
    record = MlflowClient().get_run(run_id)
    assert record.info.status == "FINISHED" and "generation/python/bleu" in record.data.metrics
    assert record.info.artifact_uri.startswith("mlflow-artifacts:")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/generation_python_model")
    answer = model.predict(pd.DataFrame({"prompt": ["Return the sum of the values."]}))
    assert isinstance(answer["code"][0], str)
    assert not (tmp_path / "mlruns").exists()
