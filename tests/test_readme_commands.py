"""The README's serving and generate commands as written, from a fresh shell: no activated venv
and a PATH that holds none of its executables (serving once failed so: `mlflow models serve`
starts `uvicorn` by name)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from benchmark.serving import free_port, wait_ready
from tests.conftest import REPO

pytestmark = pytest.mark.slow

VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def fresh_shell(store: str) -> dict[str, str]:
    """What a new terminal has: HOME, a system PATH, the tracking store; nothing of the venv."""
    return {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MLFLOW_TRACKING_URI": store,
    }


@pytest.fixture
def venv_python() -> Path:
    if not VENV_PYTHON.is_file():
        pytest.skip("the README's commands use the project's .venv (made by make install)")
    return VENV_PYTHON


def test_serve_and_generate_work_as_written_without_the_venv_on_path(
    demo_run: dict, venv_python: Path, tmp_path: Path
):
    env = fresh_shell(demo_run["uri"])
    uri = f"runs:/{demo_run['run_id']}/generation_python_model"
    port = free_port()
    # README: .venv/bin/python -m benchmark serve -m runs:/<run_id>/generation_python_model -p 5001
    command = [".venv/bin/python", "-m", "benchmark", "serve", "-m", uri, "-p", str(port)]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={
                "dataframe_records": [{"prompt": "Return the sum of a list of numbers."}],
                "params": {"max_new_tokens": 8},
            },
            timeout=300,
        )
        assert answer.status_code == 200, answer.text
        (served,) = answer.json()["predictions"]
        assert isinstance(served["code"], str) and served["code"]
        wrong = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_records": [{"prompt": "x"}], "params": {"max_new_token": 8}},
            timeout=300,
        )
        assert wrong.status_code == 400 and "max_new_token" in wrong.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    # README: .venv/bin/python -m benchmark generate --model-uri \
    #     runs:/<run_id>/generation_python_model "..."
    done = subprocess.run(
        [".venv/bin/python", "-m", "benchmark", "generate", "--model-uri", uri,
         "--max-new-tokens", "8", "Return the sum of a list of numbers."],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == served["code"].strip()  # the server and generate agree


def test_serve_refuses_a_public_address_unless_a_proxy_guards_it(venv_python: Path):
    done = subprocess.run(
        [".venv/bin/python", "-m", "benchmark", "serve", "-m", "runs:/x/generation_python_model",
         "--host", "0.0.0.0"],
        cwd=REPO, env=fresh_shell("sqlite:///unused.db"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "--host 0.0.0.0" in line and "--behind-proxy" in line
