"""A shared tracking server that lets in only who belongs: MLflow's basic-auth app on loopback.

One server per module (sqlite store, its own user database, proxied artifacts); the admin from
its ini makes user alice, with EDIT on experiment team-a and nothing on team-b (the ini's
default_permission is NO_PERMISSIONS), and reader, with READ on team-a. The CLI runs in
subprocesses with the credentials in their environment, as a team's job would.

The basic-auth app needs Flask-WTF, which the project depends on (`mlflow[auth]`): nothing here
skips.
"""

from __future__ import annotations

import configparser
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from benchmark.auth import (
    CREDENTIAL_VARIABLES,
    Refusal,
    find_refusal,
    preflight,
    public_uri,
    refusal_message,
    refusals_as_usage_errors,
)
from benchmark.config import UsageError
from tests.conftest import REPO
from tests.test_tracking_server import SERVER_DEADLINE_S, start_server, stop_server

# Seconds, not minutes: one language, 8 training pairs, 2 steps, 4 greedy 8-token evaluations.
TINY_RUN = [
    "--preset", "demo", "--method", "lora", "--languages", "python",
    "--set", "data.train_size=8", "--set", "data.val_size=4", "--set", "data.eval_size=4",
    "--set", "train.max_steps=2", "--set", "eval.max_new_tokens=8",
    "--set", "eval.num_beams=1", "--set", "eval.length_penalty=1.0",
]  # fmt: skip
USERS = {
    "alice": "alice-password-" + secrets.token_hex(8),
    "reader": "reader-pw-" + secrets.token_hex(8),
}


# --- benchmark.auth without a server ---------------------------------------------------------


def test_public_uri_drops_the_login_and_the_query():
    assert public_uri("https://bob:s3cret@mlflow.example:8443/team/?token=x#top") == (
        "https://mlflow.example:8443/team"
    )
    assert public_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def _rest_error(status: int, endpoint: str) -> MlflowException:
    """What MLflow's REST client raises for a 401/403 with a plain-text body."""
    code = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}[status]
    return MlflowException(
        f"API request to endpoint {endpoint} failed with error code {status} != 200. "
        "Response body: 'Permission denied'",
        error_code=getattr(databricks_pb2, code),
    )


def test_a_refusal_is_found_behind_the_error_it_caused():
    server = "http://alice:pw@127.0.0.1:5000"
    try:
        try:
            raise _rest_error(401, "/api/2.0/mlflow/runs/create")
        except MlflowException:
            raise RuntimeError("the run's failure tag could not be written either") from None
    except RuntimeError as err:  # `from None` hides the cause, not the context
        assert find_refusal(err, server) == Refusal(
            401, "http://127.0.0.1:5000", "/api/2.0/mlflow/runs/create"
        )

    response = requests.Response()
    response.status_code, response.url = 403, "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/x?p=1"
    assert find_refusal(requests.HTTPError(response=response), server) == Refusal(
        403, "http://127.0.0.1:5000", "/api/2.0/mlflow-artifacts/x"
    )
    missing = MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST)
    assert find_refusal(missing, server) is None
    # A local store has no server to blame.
    assert (
        find_refusal(MlflowException("x", error_code=PERMISSION_DENIED), "sqlite:///m.db") is None
    )


def test_refusal_messages_are_one_line_and_say_what_to_set(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials of the developer's
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    anonymous = refusal_message(Refusal(401, "https://mlflow.example", ""))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "the-secret-value")
    wrong = refusal_message(Refusal(401, "https://mlflow.example", "/api/2.0/mlflow/runs/create"))
    denied = refusal_message(Refusal(403, "https://mlflow.example", ""), "experiment 'team-b'")
    assert "got none" in anonymous and "user 'alice'" in wrong
    assert "experiment 'team-b'" in denied and "user 'alice'" in denied
    for message in (anonymous, wrong, denied):
        assert "\n" not in message and "https://mlflow.example" in message
        assert all(name in message for name in CREDENTIAL_VARIABLES)
        assert "the-secret-value" not in message


def test_refusals_become_usage_errors_and_other_errors_pass(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    # An earlier test's mlflow.set_tracking_uri outlives it, and MLflow reads it before the
    # variable: the whole suite failed here when a store test ran first.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    with pytest.raises(UsageError, match=r"^the tracking server http://127.0.0.1:5000 denied"):
        with refusals_as_usage_errors():
            raise _rest_error(403, "/api/2.0/mlflow/runs/create")
    with pytest.raises(MlflowException, match="no such run"):
        with refusals_as_usage_errors():
            raise MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST)


def test_preflight_leaves_a_local_store_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    preflight("adaptbench", write=True)
    assert not (tmp_path / "mlflow.db").exists()  # not even opened


# --- a real basic-auth server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    """The server, its admin's client, and the ids of team-a, team-b and admin's run there."""
    folder = tmp_path_factory.mktemp("auth_server")
    admin_password = "admin-" + secrets.token_hex(12)
    ini = configparser.ConfigParser()
    ini["mlflow"] = {
        "default_permission": "NO_PERMISSIONS",  # a new user sees nothing until granted
        "database_uri": f"sqlite:///{folder / 'users.db'}",
        "admin_username": "admin",
        "admin_password": admin_password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    with (folder / "basic_auth.ini").open("w") as fh:
        ini.write(fh)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_AUTH_ADMIN")}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(folder / "basic_auth.ini")
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
    import matplotlib.font_manager  # noqa: F401  (builds its cache here, quietly, if missing)

    proc, url = start_server(folder, "--app-name", "basic-auth", env=env)
    try:
        with pytest.MonkeyPatch.context() as mp:
            login(mp, "admin", admin_password)
            users = get_app_client("basic-auth", tracking_uri=url)
            admin = MlflowClient(url)
            team_a = admin.create_experiment("team-a")
            team_b = admin.create_experiment("team-b")
            for name, password in USERS.items():
                users.create_user(name, password)
            users.grant_user_permission("alice", "experiment", team_a, "EDIT")
            users.grant_user_permission("reader", "experiment", team_a, "READ")
            secret = admin.create_run(team_b).info.run_id
            (folder / "notes.txt").write_text("team-b only")
            admin.log_artifact(secret, str(folder / "notes.txt"))
            admin.set_terminated(secret)
        yield {
            "url": url,
            "proc": proc,
            "folder": folder,
            "admin": ("admin", admin_password),
            "users": users,
            "team_a": team_a,
            "team_b": team_b,
            "secret_run": secret,
        }
    finally:
        stop_server(proc)  # by its PID, also when a test failed
    assert proc.poll() is not None


def login(mp: pytest.MonkeyPatch, user: str, password: str) -> None:
    """MLflow's client reads the credentials from these variables at every request."""
    mp.setenv("MLFLOW_TRACKING_USERNAME", user)
    mp.setenv("MLFLOW_TRACKING_PASSWORD", password)


def as_admin(server: dict) -> MlflowClient:
    return MlflowClient(server["url"])


def pythonpath() -> str:
    """This checkout after any path the caller put first."""
    return os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(REPO)) if p)


def cli_env(server: dict, home: Path, user: str = "", password: str = "") -> dict[str, str]:
    """A job's environment: the server's URI and, when given, the credentials; a fresh HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=server["url"],
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
        PYTHONPATH=pythonpath(),
        HOME=str(home),  # no ~/.mlflow/credentials but the test's own
        # The caches stay where they were: a fresh matplotlib one would announce itself on stderr.
        XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
    )
    if user:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return env


def benchmark(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmark", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SERVER_DEADLINE_S * 3,
    )


def all_runs(server: dict, experiment_id: str, mp: pytest.MonkeyPatch) -> list[str]:
    login(mp, *server["admin"])
    found = as_admin(server).search_runs([experiment_id], run_view_type=ViewType.ALL)
    return sorted(r.info.run_id for r in found)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The command failed as a usage error: exit code 2 and one line on stderr, no traceback."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_a_request_without_a_valid_login_is_refused(auth_server: dict):
    url, search = auth_server["url"], f"{auth_server['url']}/api/2.0/mlflow/experiments/search"
    body = {"max_results": 10}
    assert requests.get(f"{url}/health", timeout=60).status_code == 200  # open: a health check
    anonymous = requests.post(search, json=body, timeout=60)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.post(search, json=body, auth=("alice", "not-her-password"), timeout=60)
    assert wrong.status_code == 401
    seen = requests.post(search, json=body, auth=("alice", USERS["alice"]), timeout=60)
    assert seen.status_code == 200
    assert [e["name"] for e in seen.json()["experiments"]] == ["team-a"]  # not team-b


@pytest.mark.slow
def test_the_other_experiment_is_closed_to_the_user(
    auth_server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    users, team_b = auth_server["users"], auth_server["team_b"]
    with monkeypatch.context() as mp:
        login(mp, *auth_server["admin"])
        assert users.get_user_permission("alice", "experiment", team_b).permission == (
            "NO_PERMISSIONS"
        )  # the ini's default: no grant was made
        with pytest.raises(MlflowException, match="NO_PERMISSIONS"):  # not grantable any more
            users.grant_user_permission("alice", "experiment", team_b, "NO_PERMISSIONS")
    before = all_runs(auth_server, team_b, monkeypatch)
    login(monkeypatch, "alice", USERS["alice"])
    client, secret = MlflowClient(auth_server["url"]), auth_server["secret_run"]
    for refused in (
        lambda: client.get_experiment(team_b),
        lambda: client.get_experiment_by_name("team-b"),
        lambda: client.get_run(secret),
        lambda: client.create_run(team_b),
        lambda: client.log_param(secret, "x", "1"),
    ):
        with pytest.raises(MlflowException) as caught:
            refused()
        assert caught.value.get_http_status_code() == 403
    assert client.search_runs([team_b]) == []  # searches are filtered, not refused
    with pytest.raises(requests.HTTPError) as caught:  # the proxied artifacts too
        mlflow.artifacts.download_artifacts(
            f"mlflow-artifacts:/{team_b}/{secret}/artifacts/notes.txt",
            dst_path=str(tmp_path),
            tracking_uri=auth_server["url"],
        )
    assert caught.value.response.status_code == 403

    done = benchmark(
        tmp_path, cli_env(auth_server, tmp_path, "alice", USERS["alice"]),
        "run", *TINY_RUN, "--experiment", "team-b",
    )  # fmt: skip
    one_error_line(done)
    assert all_runs(auth_server, team_b, monkeypatch) == before


@pytest.mark.slow
def test_no_access_names_the_experiment_and_the_permission(
    auth_server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    before = all_runs(auth_server, auth_server["team_a"], monkeypatch)
    env = cli_env(auth_server, tmp_path, "alice", USERS["alice"])
    line = one_error_line(benchmark(tmp_path, env, "run", *TINY_RUN, "--experiment", "team-b"))
    assert f"the tracking server {auth_server['url']} denied user 'alice'" in line
    assert "experiment 'team-b'" in line and "EDIT" in line
    # READ lets reader see team-a, not log to it: refused before anything is logged.
    env = cli_env(auth_server, tmp_path, "reader", USERS["reader"])
    line = one_error_line(benchmark(tmp_path, env, "run", *TINY_RUN, "--experiment", "team-a"))
    assert "user 'reader'" in line and "it has READ" in line and "experiment 'team-a'" in line
    line = one_error_line(benchmark(tmp_path, env, "compare", "--experiment", "team-a"))
    assert "it has READ" in line
    assert all_runs(auth_server, auth_server["team_a"], monkeypatch) == before
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_a_wrong_password_fails_in_one_line_and_logs_nothing(
    auth_server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    before = all_runs(auth_server, auth_server["team_a"], monkeypatch)
    env = cli_env(auth_server, tmp_path, "alice", "not-her-password")
    line = one_error_line(benchmark(tmp_path, env, "run", *TINY_RUN, "--experiment", "team-a"))
    assert "not-her-password" not in line
    anonymous = one_error_line(
        benchmark(
            tmp_path, cli_env(auth_server, tmp_path), "run", *TINY_RUN, "--experiment", "team-a"
        )
    )
    assert all_runs(auth_server, auth_server["team_a"], monkeypatch) == before
    assert not (tmp_path / "checkpoints").exists()  # it stopped before the run began
    assert "401" in line and "401" in anonymous


@pytest.mark.slow
def test_a_wrong_password_names_the_server_and_the_variables(auth_server: dict, tmp_path: Path):
    env = cli_env(auth_server, tmp_path, "alice", "not-her-password")
    for args in (
        ("run", *TINY_RUN, "--experiment", "team-a"),
        ("compare", "--experiment", "team-a"),
    ):
        line = one_error_line(benchmark(tmp_path, env, *args))
        assert line.startswith(
            f"error: the tracking server {auth_server['url']} refused the login of user 'alice'"
        )
        assert all(name in line for name in CREDENTIAL_VARIABLES)
    line = one_error_line(
        benchmark(
            tmp_path,
            cli_env(auth_server, tmp_path),
            "generate",
            "--model-uri",
            f"runs:/{auth_server['secret_run']}/x",
            "doc",
        )
    )
    assert "wants a login and got none" in line


@pytest.mark.slow
def test_the_user_logs_a_demo_run_and_its_model_loads_back(
    auth_server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    env = cli_env(auth_server, tmp_path, "alice", USERS["alice"])
    done = benchmark(tmp_path, env, "run", *TINY_RUN, "--experiment", "team-a")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = re.search(r"run (\w+) finished", done.stdout).group(1)
    login(monkeypatch, *auth_server["admin"])
    record = as_admin(auth_server).get_run(run_id)
    assert record.info.status == "FINISHED" and "generation/python/bleu" in record.data.metrics
    assert record.info.experiment_id == auth_server["team_a"]
    assert record.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server
    assert not (tmp_path / "mlruns").exists()

    load = (
        "import sys, mlflow, pandas as pd; "
        f"m = mlflow.pyfunc.load_model('runs:/{run_id}/generation_python_model'); "
        "print(type(m.predict(pd.DataFrame({'prompt': ['Return the sum.']}))['code'][0]).__name__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("str"), loaded.stderr[-3000:]
    model_files = (
        f"mlflow-artifacts:/{auth_server['team_a']}/{run_id}/artifacts/generation_python_model"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(requests.HTTPError) as caught:  # without a login, not even its files
        mlflow.artifacts.download_artifacts(
            f"{model_files}/MLmodel", dst_path=str(tmp_path), tracking_uri=auth_server["url"]
        )
    assert caught.value.response.status_code == 401

    # A job may keep its login in ~/.mlflow/credentials (mode 600) instead of its environment.
    credentials = tmp_path / ".mlflow" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text(
        f"[mlflow]\nmlflow_tracking_username = alice\nmlflow_tracking_password = {USERS['alice']}\n"
    )
    credentials.chmod(0o600)
    from_file = cli_env(auth_server, tmp_path)
    generated = benchmark(
        tmp_path, from_file, "generate", "--model-uri", f"runs:/{run_id}/generation_python_model",
        "Return the sum of the values.",
    )  # fmt: skip
    assert generated.returncode == 0 and generated.stdout.strip(), generated.stderr[-3000:]
    compared = benchmark(
        tmp_path, from_file, "compare", "--experiment", "team-a", "--out", str(tmp_path / "report")
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert (tmp_path / "report" / "comparison.md").is_file()
    login(monkeypatch, *auth_server["admin"])
    tagged = as_admin(auth_server).search_runs(
        [auth_server["team_a"]], "attributes.run_name = 'comparison'"
    )
    assert tagged, "compare logged no comparison run to team-a"


@pytest.mark.slow
def test_a_killed_run_resumes_on_the_server(
    auth_server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    env = cli_env(auth_server, tmp_path, "alice", USERS["alice"])
    command = [sys.executable, "-m", "benchmark", "run", *TINY_RUN, "--experiment", "team-a"]
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:  # killed as soon as the run exists on the server and has its checkpoint folder
        deadline = time.monotonic() + SERVER_DEADLINE_S
        while not list((tmp_path / "checkpoints").glob("*/config.json")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    run_id = next((tmp_path / "checkpoints").glob("*/config.json")).parent.name
    login(monkeypatch, *auth_server["admin"])
    assert as_admin(auth_server).get_run(run_id).info.status == "RUNNING"

    wrong = cli_env(auth_server, tmp_path, "alice", "not-her-password")
    one_error_line(benchmark(tmp_path, wrong, "run", *TINY_RUN, "--resume", run_id))
    done = benchmark(tmp_path, env, "run", *TINY_RUN, "--experiment", "team-a", "--resume", run_id)
    assert done.returncode == 0, done.stderr[-3000:]
    record = as_admin(auth_server).get_run(run_id)
    assert record.info.status == "FINISHED" and record.data.tags["resumes"] == "1"
    assert "generation/python/bleu" in record.data.metrics
