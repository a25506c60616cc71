"""The model server: MLflow's scoring app for a logged model, refusing params it does not take.

`mlflow models serve` (MLflow 3) drops a request's params that are not in the signature before the
model sees them, logs a warning on the server and answers 200: a misspelt `max_new_token` decodes
with the default and the client never knows. `python -m benchmark.serving` serves the same app
(routes, request forms, answers) with each /invocations request's params checked first against
the model's signature, so an unknown name or a wrong type gets a 400 naming it. Requests that
arrive together with the same params are generated as one batch (`BatchedModel`), so throughput
grows with concurrent clients. `start_server` starts either (tests, benchmarks) and `wait_ready`
waits until it answers.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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


# How long the first request of a batch waits for others once requests overlap: about one
# loopback round trip, so a client that just got its answer can join the next batch.
BATCH_WINDOW_S = 0.01
# The served model's own limit on rows per request (benchmark.packaging.MAX_ROWS).
MAX_BATCH_ROWS = 64
# Requests overlap "lately" for this long after two were seen together; until then a lone
# request is generated at once, without waiting for company that is not coming.
OVERLAP_MEMORY_S = 1.0


@dataclass(eq=False)  # compared by identity: a request holds a DataFrame
class _Request:
    data: Any
    params: dict[str, Any] | None
    key: str | None  # requests with equal keys can share a batch; None: never
    rows: int
    finished: bool = False
    result: Any = None
    error: BaseException | None = None


class BatchedModel:
    """A loaded pyfunc model whose concurrent `predict` calls (the scoring app makes them from
    its worker threads) run one batch at a time: calls with the same columns and params that
    arrive together (within `window_s`, once requests overlap) become one call on all their rows,
    whose answer is split back. A lone request runs at once, in its own thread.

    Each row's answer is what it gets alone (T5 with an attention mask: padding changes nothing;
    tests/test_serving.py checks it). A batch that fails is retried request by request, so a bad
    request gets its own error and the others their answers.
    """

    def __init__(
        self, model: Any, window_s: float = BATCH_WINDOW_S, max_rows: int = MAX_BATCH_ROWS
    ) -> None:
        self.model = model
        self.metadata = model.metadata
        schema = model.metadata.get_params_schema()
        self.defaults = {spec.name: spec.default for spec in schema.params} if schema else {}
        self.window_s = window_s
        self.max_rows = max_rows
        self.batch_sizes: list[int] = []  # requests per model call, newest last (bounded)
        self._queue: list[_Request] = []
        self._state = threading.Condition()
        self._busy = False  # a thread is collecting or running a batch
        self._overlap_until = 0.0

    @property
    def waiting(self) -> int:
        """Calls queued for a batch (not yet running)."""
        with self._state:
            return len(self._queue)

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """The model's answer to this call alone, computed in a batch with others like it."""
        request = self._request(data, params)
        with self._state:
            if self._busy or self._queue:
                self._overlap_until = time.monotonic() + OVERLAP_MEMORY_S
            self._queue.append(request)
            self._state.notify_all()
            # The first caller to find no batch running leads one (of the oldest request, which
            # may be another's); the rest wait to be answered or to lead the next.
            while not request.finished:
                if self._busy:
                    self._state.wait()
                else:
                    self._lead()
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self) -> None:
        """Under the lock: collect a batch, run it with the lock released, mark it answered."""
        self._busy = True
        batch: list[_Request] = []
        try:
            batch = self._collect()
            self._state.release()
            try:
                self._run(batch)
            finally:
                self._state.acquire()
        finally:
            self._busy = False
            for done in batch:
                done.finished = True
            if len(batch) > 1:
                self._overlap_until = time.monotonic() + OVERLAP_MEMORY_S
            self.batch_sizes = (self.batch_sizes + [len(batch)])[-1000:]
            self._state.notify_all()

    def _request(self, data: Any, params: dict[str, Any] | None) -> _Request:
        import pandas as pd

        if not isinstance(data, pd.DataFrame) or self.window_s <= 0:
            return _Request(data, params, None, 1)
        # MLflow fills a param a request leaves out from the signature's default: requests
        # that are equal after that decode alike.
        settings = {**self.defaults, **(params or {})}
        key = json.dumps([list(map(str, data.columns)), settings], sort_keys=True, default=str)
        return _Request(data, params, key, len(data))

    def _collect(self) -> list[_Request]:
        """Under the lock: the oldest request and those that may join it, up to max_rows; once
        requests overlap, the first waits up to window_s for more."""
        first = self._queue[0]
        if first.key is not None and time.monotonic() < self._overlap_until:
            deadline = time.monotonic() + self.window_s
            while self._rows_like(first) < self.max_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._state.wait(left)
        batch, rows = [first], first.rows
        for request in self._queue[1:]:
            joins = first.key is not None and request.key == first.key
            if joins and rows + request.rows <= self.max_rows:
                batch.append(request)
                rows += request.rows
        taken = {id(r) for r in batch}
        self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    def _rows_like(self, first: _Request) -> int:
        return sum(r.rows for r in self._queue if r.key == first.key)

    def _run(self, batch: list[_Request]) -> None:
        if len(batch) == 1:
            self._alone(batch[0])
            return
        import pandas as pd

        joined = pd.concat([r.data for r in batch], ignore_index=True)
        try:
            result = self.model.predict(joined, params=batch[0].params)
        except Exception:
            result = None
        if not isinstance(result, pd.DataFrame) or len(result) != len(joined):
            for request in batch:  # a failure, or not one answer row per row: one by one
                self._alone(request)
            return
        start = 0
        for request in batch:
            request.result = result.iloc[start : start + request.rows].reset_index(drop=True)
            start += request.rows

    def _alone(self, request: _Request) -> None:
        try:
            request.result = self.model.predict(request.data, params=request.params)
        except Exception as err:  # raised again in the request's own thread
            request.error = err


class WaitingThreads:
    """ASGI middleware: at startup, room in the event loop's default thread pool for requests
    that wait for a batch (MLflow's app predicts in `asyncio.to_thread`; the default pool has
    cpu_count + 4 threads, so on 2 cores a 7th concurrent request would wait for a thread)."""

    def __init__(self, app: Any, threads: int = 64) -> None:
        self.app = app
        self.threads = threads

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            import asyncio

            pool = ThreadPoolExecutor(self.threads, thread_name_prefix="predict")
            asyncio.get_running_loop().set_default_executor(pool)
        await self.app(scope, receive, send)


def build_app(model_uri: str, batch_window_s: float = BATCH_WINDOW_S) -> Any:
    """MLflow's scoring app for `model_uri`, behind `StrictParams`; requests that arrive
    together are generated together (`batch_window_s=0`: each alone, one at a time)."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(model_uri)
    app = scoring_server.init(BatchedModel(model, window_s=batch_window_s))
    app.add_middleware(StrictParams, schema=model.metadata.get_params_schema())
    app.add_middleware(WaitingThreads)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.serving",
        description="Serve a logged model over HTTP like `mlflow models serve --env-manager "
        "local` (same /invocations, /ping), answering 400 to params the model does not take.",
        epilog="Example: python -m benchmark.serving -m runs:/<run_id>/generation_python_model "
        "-p 5001",
    )
    parser.add_argument("-m", "--model-uri", required=True, help="an MLflow model URI")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("-p", "--port", type=int, default=5000, help="port to listen on")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=1000 * BATCH_WINDOW_S,
        help="once requests overlap, how long a request waits for others with the same params "
        "to generate with (0: no batching)",
    )
    args = parser.parse_args(argv)
    import uvicorn

    try:
        app = build_app(args.model_uri, batch_window_s=args.batch_window_ms / 1000)
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
    model_uri: str,
    port: int,
    log: Path,
    tracking_uri: str = "",
    mlflow_cli: bool = False,
    script: str = "",
    extra_args: tuple[str, ...] = (),
) -> subprocess.Popen:
    """Serve `model_uri` on 127.0.0.1:`port`, output to `log`: this module's server, or with
    `mlflow_cli` MLflow's own `mlflow models serve --env-manager local`, or with `script` another
    file taking this module's flags (benchmarks: an earlier version of it)."""
    # The MLflow CLI starts `uvicorn` by name: this interpreter's bin folder must be on PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if mlflow_cli:
        command = ["-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
        command += ["-h", "127.0.0.1", "-p", str(port)]
    else:
        command = [script] if script else ["-m", "benchmark.serving"]
        command += ["-m", model_uri, "--host", "127.0.0.1", "-p", str(port)]
    return subprocess.Popen(
        [sys.executable, *command, *extra_args],
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
