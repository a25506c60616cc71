"""The model server: MLflow's scoring app for a logged model, refusing params it does not take.

`mlflow models serve` (MLflow 3) drops a request's params that are not in the signature before the
model sees them, logs a warning on the server and answers 200: a misspelt `max_new_token` decodes
with the default and the client never knows. `python -m benchmark.serving` serves the same app
(routes, request forms, answers) with each /invocations request's params checked first against
the model's signature, so an unknown name or a wrong type gets a 400 naming it. `start_server`
starts either (tests, benchmarks) and `wait_ready` waits until it answers.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.utils.serving_data_parser import SUPPORTED_LLM_FORMATS
from mlflow.types import ParamSchema, ParamSpec

KINDS = {
    "long": "an integer",
    "integer": "an integer",
    "double": "a number",
    "float": "a number",
    "boolean": "true or false",
    "string": "a string",
}


def check_params(params: Any, schema: ParamSchema | None) -> None:
    """Refuse params the signature does not name, or of another type, naming them (a 400)."""
    accepted = {spec.name: spec for spec in schema.params} if schema else {}
    listing = f"this model accepts {', '.join(accepted)}" if accepted else "this model takes none"
    if not isinstance(params, dict):
        raise MlflowException.invalid_parameter_value(
            f'"params" must be a JSON object like {{"max_new_tokens": 64}}, got {params!r}; '
            f"{listing}"
        )
    unknown = [name for name in params if name not in accepted]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), accepted, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        names = ", ".join(repr(name) for name in unknown)
        raise MlflowException.invalid_parameter_value(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {names}{hint}; {listing}"
        )
    for name, value in params.items():
        spec: ParamSpec = accepted[name]
        try:
            ParamSpec.validate_param_spec(value, spec)
        except MlflowException:
            kind = KINDS.get(spec.dtype.name, spec.dtype.name)
            raise MlflowException.invalid_parameter_value(
                f"parameter {name} must be {kind}, got {json.dumps(value)} "
                f"(its default: {json.dumps(spec.default)})"
            ) from None


def check_request(body: bytes, schema: ParamSchema | None) -> None:
    """`check_params` on a JSON /invocations body's params; a body MLflow cannot read is its own."""
    try:
        request = json.loads(body)
    except ValueError:
        return  # MLflow answers a malformed body with its own 400
    if not isinstance(request, dict):
        return
    if any(key in request for key in SUPPORTED_LLM_FORMATS):
        # MLflow's unwrapped form ({"prompt": [...], "max_new_tokens": 8}): params at the top.
        params = {k: v for k, v in request.items() if k not in SUPPORTED_LLM_FORMATS}
        check_params(params, schema)
    elif "params" in request:
        check_params(request["params"], schema)


class StrictParams:
    """ASGI middleware: /invocations JSON requests pass `check_request` before MLflow's app runs."""

    def __init__(self, app: Any, schema: ParamSchema | None) -> None:
        self.app = app
        self.schema = schema

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations":
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if not content_type.strip().lower().startswith("application/json"):
            await self.app(scope, receive, send)
            return
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        try:
            check_request(body, self.schema)
        except MlflowException as err:
            from starlette.responses import Response

            answer = Response(
                err.serialize_as_json(),
                status_code=err.get_http_status_code(),
                media_type="application/json",
            )
            await answer(scope, receive, send)
            return

        async def replay() -> dict:
            # MLflow's app reads the body again: hand it what was read, then the live channel.
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def build_app(model_uri: str) -> Any:
    """MLflow's scoring app for `model_uri`, behind `StrictParams`."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(model_uri)
    app = scoring_server.init(model)
    app.add_middleware(StrictParams, schema=model.metadata.get_params_schema())
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.serving",
        description="Serve a logged model over HTTP like `mlflow models serve --env-manager "
        "local` (same /invocations, /ping), answering 400 to params the model does not take.",
        epilog="Example: python -m benchmark.serving -m runs:/<run_id>/python_model -p 5001",
    )
    parser.add_argument("-m", "--model-uri", required=True, help="an MLflow model URI")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to listen on")
    args = parser.parse_args(argv)
    import uvicorn

    try:
        app = build_app(args.model_uri)
    except MlflowException as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port)
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model_uri: str, port: int, log: Path, tracking_uri: str = "", mlflow_cli: bool = False
) -> subprocess.Popen:
    """Serve `model_uri` on 127.0.0.1:`port`, output to `log`: this module's server, or with
    `mlflow_cli` MLflow's own `mlflow models serve --env-manager local`."""
    # The MLflow CLI starts `uvicorn` by name: this interpreter's bin folder must be on PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if mlflow_cli:
        command = ["-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
        command += ["-h", "127.0.0.1", "-p", str(port)]
    else:
        command = ["-m", "benchmark.serving", "-m", model_uri, "--host", "127.0.0.1"]
        command += ["-p", str(port)]
    return subprocess.Popen(
        [sys.executable, *command],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(base_url: str, proc: subprocess.Popen, log: Path, limit_s: float = 300) -> float:
    """Seconds until `/ping` answers 200; an error with the server's log if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base_url}/ping", timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the model server did not answer /ping within {limit_s:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
