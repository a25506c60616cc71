"""A tracking server that refuses the caller: one line naming the server and what to set.

MLflow's REST client raises a server's 401 (no or wrong login) and 403 (no permission) as an
`MlflowException` (a `RestException` when the body is JSON), its artifact client as a
`requests.HTTPError`, often a few frames and a second failure deep. `refusals_as_usage_errors`
turns either into a one-line `UsageError`; `preflight` asks the server once before a command
logs anything, so a wrong credential fails in a second and leaves nothing half-logged.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import requests
from mlflow.exceptions import MlflowException

from benchmark.config import UsageError

CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# The error codes MLflow gives a refused request (mlflow.exceptions maps 401 and 403 to them).
_REFUSAL_CODES = {"UNAUTHENTICATED": 401, "CUSTOMER_UNAUTHORIZED": 401, "PERMISSION_DENIED": 403}
# The basic-auth app's "what may this user do here" route (mlflow.server.auth.routes
# GET_USER_PERMISSION: importing that module loads the whole server and warns on stderr).
_PERMISSION_ROUTE = "/api/3.0/mlflow/users/permissions/get"
_WRITE_PERMISSIONS = ("EDIT", "MANAGE")


class Refusal(NamedTuple):
    status: int  # 401: no or wrong login; 403: logged in, not allowed
    server: str  # the server's URI, without a login
    endpoint: str  # the refused request's path, "" when unknown


def public_uri(uri: str) -> str:
    """`uri` without a login, query or fragment: safe to print."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def is_server(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def find_refusal(err: BaseException, tracking_uri: str = "") -> Refusal | None:
    """The server's 401/403 behind `err` (itself, or an error it arose from), if there is one."""
    tracking_uri = tracking_uri or _tracking_uri()
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _refusal(current, tracking_uri)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _refusal(err: BaseException, tracking_uri: str) -> Refusal | None:
    if isinstance(err, requests.HTTPError) and err.response is not None:
        status = err.response.status_code
        if status not in (401, 403):
            return None
        url = urlsplit(err.response.url or tracking_uri)
        return Refusal(status, public_uri(f"{url.scheme}://{url.netloc}"), url.path)
    if isinstance(err, MlflowException) and is_server(tracking_uri):
        status = _REFUSAL_CODES.get(str(err.error_code))
        if status is None:
            return None
        endpoint = re.search(r"endpoint (\S+)", err.message)
        return Refusal(status, public_uri(tracking_uri), endpoint.group(1) if endpoint else "")
    return None


def refusal_message(
    refusal: Refusal, what: str = "", needs: str = "READ (EDIT to log runs)", detail: str = ""
) -> str:
    """One line: which server refused whom, and how to get in (never the password)."""
    user = _username(refusal.server)
    server = f"the tracking server {refusal.server}"
    variables = " and ".join(CREDENTIAL_VARIABLES)
    where = f" at {refusal.endpoint}" if refusal.endpoint else ""
    if refusal.status == 401:
        who = f"refused the login of user {user!r}" if user else "wants a login and got none"
        return (
            f"{server} {who} (HTTP 401{where}): set {variables} to your account on it (or write "
            "them to ~/.mlflow/credentials, mode 600; never on the command line)"
        )
    who = f"user {user!r}" if user else "a request without a login"
    return (
        f"{server} denied {who} access to {what or 'what this command uses'} "
        f"({detail or f'HTTP 403{where}'}): ask its admin for {needs} on it, or set {variables} "
        "to an account that has it"
    )


def refusal_line(err: BaseException) -> str | None:
    """The one-line message for `err` when a tracking server's 401/403 is behind it, else None."""
    refusal = find_refusal(err)
    return refusal_message(refusal) if refusal is not None else None


@contextlib.contextmanager
def refusals_as_usage_errors() -> Iterator[None]:
    """Re-raise a tracking server's 401/403, however deep, as a one-line `UsageError`."""
    try:
        yield
    except UsageError:
        raise
    except Exception as err:
        line = refusal_line(err)
        if line is None:
            raise
        raise UsageError(line) from err


def preflight(experiment: str = "", *, run_id: str = "", write: bool = False) -> None:
    """Before a command logs anything: check that the tracking server lets these credentials in.

    With `run_id` (a resumed run, or the one `mlflow run` opened) its experiment is checked,
    else `experiment` when it exists; with `write`, that the user may log runs there (EDIT or
    MANAGE). Nothing to do for a local store; one or two requests to a server.
    """
    from mlflow.tracking import MlflowClient

    uri = _tracking_uri()
    if not is_server(uri):
        return
    client = MlflowClient(uri)
    experiment_id, what = None, ""
    try:
        if run_id:
            what = f"run {run_id}"
            experiment_id = client.get_run(run_id).info.experiment_id
        elif experiment:
            what = f"experiment {experiment!r}"
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else None  # new: the user creates it
        else:
            client.search_experiments(max_results=1)
        permission = _own_permission(uri, experiment_id) if write and experiment_id else None
    except MlflowException as err:
        refusal = find_refusal(err, uri)
        if refusal is None:
            raise
        raise UsageError(refusal_message(refusal, what, "EDIT" if write else "READ")) from None
    if permission is not None and permission not in _WRITE_PERMISSIONS:
        refusal = Refusal(403, public_uri(uri), _PERMISSION_ROUTE)
        detail = f"it has {permission}, logging a run needs EDIT or MANAGE"
        raise UsageError(refusal_message(refusal, what, "EDIT", detail))


def _own_permission(uri: str, experiment_id: str) -> str | None:
    """The user's permission on the experiment; None for a server without the basic-auth app."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    creds = get_default_host_creds(uri)
    if not creds.username:
        return None
    params = {"username": creds.username, "resource_type": "experiment"}
    response = http_request(
        creds, _PERMISSION_ROUTE, "GET", params={**params, "resource_id": experiment_id}
    )
    if response.status_code == 404:
        return None
    return verify_rest_response(response, _PERMISSION_ROUTE).json().get("permission")


def _username(uri: str) -> str:
    from mlflow.utils.credentials import get_default_host_creds

    return get_default_host_creds(uri).username or ""


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()
