"""The logged model served: benchmark.serving's server (three request forms, clear 400s, params
it does not take refused by name, a clean stop) and MLflow's own `mlflow models serve`."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import requests

from benchmark.serving import free_port, start_server, wait_ready

pytestmark = pytest.mark.slow


def serve(demo_run: dict, mlflow_cli: bool):
    port = free_port()
    log = demo_run["root"] / ("serve-mlflow.log" if mlflow_cli else "serve.log")
    model_uri = f"runs:/{demo_run['run_id']}/python_model"
    proc = start_server(model_uri, port, log, tracking_uri=demo_run["uri"], mlflow_cli=mlflow_cli)
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


@pytest.fixture(scope="module")
def server(demo_run: dict):
    """`python -m benchmark.serving`: MLflow's scoring app with the request's params checked."""
    yield from serve(demo_run, mlflow_cli=False)


@pytest.fixture(scope="module")
def mlflow_server(demo_run: dict):
    """`mlflow models serve --env-manager local` on the same model."""
    yield from serve(demo_run, mlflow_cli=True)


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


ACCEPTED = (
    "this model accepts max_new_tokens, num_beams, length_penalty, do_sample, temperature, top_p"
)


def records(params: object) -> dict:
    return {"dataframe_records": [{"prompt": "x"}], "params": params}


@pytest.mark.parametrize(
    "body, fragments",
    [
        (records({"max_new_token": 5}), ["'max_new_token'", "did you mean max_new_tokens?"]),
        (records({"max_new_tokens": 4, "beams": 2, "sampling": True}), ["'beams', 'sampling'"]),
        ({"prompt": "x", "max_new_token": 5}, ["'max_new_token'"]),
        (records(["max_new_tokens", 5]), ['"params" must be a JSON object']),
    ],
    ids=["misspelt", "two-unknown", "unwrapped-form", "not-an-object"],
)
def test_unknown_params_get_400_naming_them_and_the_accepted_ones(
    server: str, body: dict, fragments: list[str]
):
    answer = requests.post(f"{server}/invocations", json=body, timeout=60)
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert all(fragment in message for fragment in fragments), message
    assert ACCEPTED in message


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"max_new_tokens": "lots"}, 'max_new_tokens must be an integer, got "lots"'),
        ({"num_beams": 2.5}, "num_beams must be an integer, got 2.5"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer, got true"),
        ({"do_sample": "yes"}, 'do_sample must be true or false, got "yes"'),
        ({"temperature": [0.5]}, "temperature must be a number, got [0.5]"),
    ],
    ids=["string", "float-for-int", "bool-for-int", "string-for-bool", "list"],
)
def test_wrong_typed_params_get_400_naming_them(server: str, params: dict, fragment: str):
    answer = requests.post(f"{server}/invocations", json=records(params), timeout=60)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["message"]


def test_accepted_params_in_the_unwrapped_form_still_work(server: str):
    body = {"prompt": PROMPTS[0], "max_new_tokens": 4, "num_beams": 1}
    answer = requests.post(f"{server}/invocations", json=body, timeout=120)
    assert answer.status_code == 200, answer.text


def test_mlflow_models_serve_serves_the_same_model(server: str, mlflow_server: str):
    body = {"dataframe_records": [{"prompt": PROMPTS[0]}], "params": {"max_new_tokens": 8}}
    ours = requests.post(f"{server}/invocations", json=body, timeout=120)
    theirs = requests.post(f"{mlflow_server}/invocations", json=body, timeout=120)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json() == theirs.json()
    out_of_range = records({"top_p": 3.0})
    answer = requests.post(f"{mlflow_server}/invocations", json=out_of_range, timeout=60)
    assert answer.status_code == 400 and "top_p" in answer.json()["message"]
    # Why benchmark.serving checks params itself: MLflow drops an unknown one before predict sees
    # it, with a warning in the server's log. Should this start failing, MLflow refuses them now.
    unknown = requests.post(
        f"{mlflow_server}/invocations", json=records({"max_new_token": 4}), timeout=120
    )
    assert unknown.status_code == 200, unknown.text
