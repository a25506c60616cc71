"""Latency and throughput of a served model: `mlflow models serve` on a free loopback port.

Single-prompt requests one after another give p50/p95 latency; then 8 concurrent clients give
the throughput. Requests go to 127.0.0.1 only and the loops are bounded in count.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmark.serving import free_port, start_server, wait_ready  # noqa: E402

PROMPTS = [
    "Return the sum of the squares of the values in the list.",
    "Read a JSON file and return its content as a dictionary.",
    "Split a string on commas and strip whitespace from each part.",
    "Return True when the number is a prime number.",
    "Create a deep copy of the given object.",
    "Return the index of the first element matching the predicate.",
]


def request(base: str, prompt: str, max_new_tokens: int) -> float:
    body = {"dataframe_records": [{"prompt": prompt}], "params": {"max_new_tokens": max_new_tokens}}
    start = time.perf_counter()
    answer = requests.post(f"{base}/invocations", json=body, timeout=120)
    answer.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", required=True, help="e.g. runs:/<run_id>/python_model")
    parser.add_argument("--requests", type=int, default=60, help="sequential requests")
    parser.add_argument("--concurrent-requests", type=int, default=96, help="requests, 8 clients")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(f"serve-{port}.log")
    proc = start_server(args.model_uri, port, log)
    try:
        startup = wait_ready(base, proc, log)
        request(base, PROMPTS[0], args.max_new_tokens)  # warm-up
        latencies = [
            request(base, PROMPTS[i % len(PROMPTS)], args.max_new_tokens)
            for i in range(args.requests)
        ]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(
                pool.map(
                    lambda i: request(base, PROMPTS[i % len(PROMPTS)], args.max_new_tokens),
                    range(args.concurrent_requests),
                )
            )
        elapsed = time.perf_counter() - start
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.unlink(missing_ok=True)
    quantiles = statistics.quantiles(latencies, n=100)
    figures = {
        "startup_s": round(startup, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * quantiles[94], 1),
        "throughput_rps": round(args.concurrent_requests / elapsed, 2),
        "clients": args.clients,
        "max_new_tokens": args.max_new_tokens,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
