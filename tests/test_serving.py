"""`mlflow models serve` on a logged model: three request forms, clear 400s, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import requests

from benchmark.serving import free_port, start_server, wait_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(demo_run: dict):
    port = free_port()
    log = demo_run["root"] / "serve.log"
    model_uri = f"runs:/{demo_run['run_id']}/python_model"
    proc = start_server(model_uri, port, log, tracking_uri=demo_run["uri"])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, proc, log)
        yield base
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # stop by PID; the CLI takes its uvicorn child along
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode is not None


PROMPTS = ["Return the sum of the first 3 squares of the values.", "Multiply every element."]


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["prompt"], "data": [[p] for p in PROMPTS]}},
        {"dataframe_records": [{"prompt": p} for p in PROMPTS]},
        {"inputs": {"prompt": PROMPTS}},
    ],
    ids=["dataframe_split", "dataframe_records", "inputs"],
)
def test_three_request_forms_give_the_same_code(server: str, body: dict):
    answer = requests.post(f"{server}/invocations", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 2
    assert all(isinstance(p["code"], str) for p in predictions)
    reference = requests.post(
        f"{server}/invocations", json={"dataframe_records": [{"prompt": PROMPTS[0]}]}, timeout=120
    ).json()["predictions"][0]["code"]
    assert predictions[0]["code"] == reference


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"dataframe_records": [{"text": "x"}]}, "prompt"),
        ({"dataframe_records": [{"prompt": 5}]}, ""),
        ({"dataframe_records": [{"prompt": "x"}] * 65}, "at most 64"),
        (
            {"dataframe_records": [{"prompt": "x"}], "params": {"max_new_tokens": 100000}},
            "max_new_tokens",
        ),
        ({"dataframe_records": [{"prompt": "x"}], "params": {"top_p": 3.0}}, "top_p"),
        (
            {"dataframe_records": [{"prompt": "x"}], "params": {"length_penalty": 30.0}},
            "length_penalty",
        ),
    ],
    ids=["no-prompt", "non-string", "too-many-rows", "max-new-tokens", "top-p", "length-penalty"],
)
def test_bad_requests_get_400_naming_the_problem(server: str, body: dict, fragment: str):
    answer = requests.post(f"{server}/invocations", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["message"]


def test_over_long_prompt_is_truncated_not_an_error(server: str):
    prompt = "Return the sum of the values " * 2000
    body = {"dataframe_records": [{"prompt": prompt}], "params": {"max_new_tokens": 4}}
    answer = requests.post(f"{server}/invocations", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
