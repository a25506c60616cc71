"""Start `mlflow models serve` on a loopback port and wait until it answers (tests, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_uri: str, port: int, log: Path, tracking_uri: str = "") -> subprocess.Popen:
    """`mlflow models serve` for `model_uri` on 127.0.0.1:`port`, output to `log`."""
    # The server starts `uvicorn` by name: this interpreter's bin folder must be on PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(base_url: str, proc: subprocess.Popen, log: Path, limit_s: float = 180) -> float:
    """Seconds until `/ping` answers 200; an error with the server's log if it never does."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base_url}/ping", timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.ConnectionError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the model server did not answer /ping within {limit_s:.0f} s")
