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


@pytest.fixture
def tracking_server(tmp_path: Path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(
            os.environ,
            PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        ),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # stop the server by its PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_demo_run_logs_to_a_server_and_its_model_loads_back(
    tracking_server: str, csn_tree: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    monkeypatch.chdir(tmp_path)  # nothing may land in a local ./mlruns
    mlflow.set_tracking_uri(tracking_server)
    overrides = {**SMALL_RUN, "data.source": str(csn_tree), "languages": "python"}
    run_id = run(make_config("lora", "demo", overrides))
    record = MlflowClient().get_run(run_id)
    assert record.info.status == "FINISHED" and "python/bleu" in record.data.metrics
    assert record.info.artifact_uri.startswith("mlflow-artifacts:")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/python_model")
    answer = model.predict(pd.DataFrame({"prompt": ["Return the sum of the values."]}))
    assert isinstance(answer["code"][0], str)
    assert not (tmp_path / "mlruns").exists()
