"""Where a served model's time goes, and its throughput under concurrent clients.

One process loads the model (`mlflow.pyfunc.load_model`) and starts `python -m benchmark.serving`
on a free loopback port (and, with --baseline, a second server from another file, e.g. an earlier
benchmark/serving.py). Each round, for each prompt in turn, it times the same generation several
ways, interleaved so that the shared machine's load hits them alike:

- `generate`: `model.generate` on already tokenised input, with the served model's settings;
- `codec`: the tokenizer's encode of that prompt and decode of its output;
- `pyfunc`: `PyFuncModel.predict` in this process (MLflow's schema and params checks, the
  DataFrame, the served model's own code);
- `http`: one request to the server (JSON, MLflow's scoring app, the strict-params middleware,
  the batching), and `http_baseline` to the baseline server.

It prints the medians and each server's overhead over direct generation (the ratio of medians,
and the median of per-prompt ratios). Then N clients (1, 2, 4, 8 by default) send requests at
once to each server in turn and it prints requests/s. Requests go to 127.0.0.1 only and every
loop is bounded in count.

    .venv/bin/python scripts/bench_serving.py --threads 1 \
        --model-uri runs:/<run_id>/generation_python_model
    git show HEAD~1:benchmark/serving.py > /tmp/serving_before.py
    .venv/bin/python scripts/bench_serving.py --model-uri ... --baseline /tmp/serving_before.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
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

_local = threading.local()


def session() -> requests.Session:
    """One keep-alive connection per client thread, as a real client would hold."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def post(base: str, prompt: str, params: dict) -> str:
    body = {"dataframe_records": [{"prompt": prompt}], "params": params}
    answer = session().post(f"{base}/invocations", json=body, timeout=300)
    answer.raise_for_status()
    return answer.json()["predictions"][0]["code"]


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def throughput(base: str, clients: int, count: int, params: dict) -> float:
    """Requests/s of `count` requests sent by `clients` threads at once."""
    with ThreadPoolExecutor(clients) as pool:
        warm = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
        list(pool.map(lambda p: post(base, p, params), warm))
        start = time.perf_counter()
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(count)]
        list(pool.map(lambda p: post(base, p, params), prompts))
        return count / (time.perf_counter() - start)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-uri", required=True, help="e.g. runs:/<run_id>/generation_python_model"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=0, help="0: the model's own setting")
    parser.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts")
    parser.add_argument("--concurrent-requests", type=int, default=48, help="requests per count")
    parser.add_argument(
        "--baseline", default="", help="a server file taking benchmark.serving's flags, to compare"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads here and in the servers (OMP_NUM_THREADS); 0: torch's default",
    )
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the servers read it at start

    import mlflow
    import pandas as pd
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    servers: dict[str, tuple[str, subprocess.Popen, Path]] = {}
    try:
        for name, script in (("http", ""), ("http_baseline", args.baseline)):
            if name == "http_baseline" and not script:
                continue
            port = free_port()
            log = Path(f"serve-{port}.log")
            proc = start_server(args.model_uri, port, log, script=script)
            servers[name] = (f"http://127.0.0.1:{port}", proc, log)
        pyfunc = mlflow.pyfunc.load_model(args.model_uri)
        served = pyfunc.unwrap_python_model()
        model, tokenizer, meta = served.model, served.tokenizer, served.meta
        startup = {name: wait_ready(base, proc, log) for name, (base, proc, log) in servers.items()}
        num_beams = args.num_beams or meta["generation"]["num_beams"]
        params = {"max_new_tokens": args.max_new_tokens, "num_beams": num_beams}
        decoding = {"max_new_tokens": args.max_new_tokens, "num_beams": num_beams}
        if num_beams > 1:
            decoding["length_penalty"] = meta["generation"]["length_penalty"]

        def tokenise(prompt: str) -> dict:
            return tokenizer(
                [prompt],
                max_length=meta["max_source_length"],
                truncation=True,
                padding=True,
                return_tensors="pt",
            )

        def direct(batch: dict) -> torch.Tensor:
            with torch.no_grad():
                return model.generate(**batch, **decoding)

        def decode(tokens: torch.Tensor) -> list[str]:
            return tokenizer.batch_decode(
                tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )

        def in_process(prompt: str) -> str:
            return pyfunc.predict(pd.DataFrame({"prompt": [prompt]}), params=params)["code"][0]

        for base, _, _ in servers.values():  # warm-up: first request, first tokenizer call
            post(base, PROMPTS[0], params)
        in_process(PROMPTS[0])
        times: dict[str, list[float]] = {k: [] for k in ("generate", "codec", "pyfunc", *servers)}
        differs = {name: 0 for name in servers}
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                t_encode, batch = timed(tokenise, prompt)
                t_generate, tokens = timed(direct, batch)
                t_decode, texts = timed(decode, tokens)
                times["generate"].append(t_generate)
                times["codec"].append(t_encode + t_decode)
                times["pyfunc"].append(timed(in_process, prompt)[0])
                for name, (base, _, _) in servers.items():
                    t_http, code = timed(post, base, prompt, params)
                    times[name].append(t_http)
                    differs[name] += code != texts[0]
        medians = {k: statistics.median(v) for k, v in times.items()}
        print(f"medians (ms): { {k: round(1000 * v, 1) for k, v in medians.items()} }", flush=True)
        overhead = {}
        for name in ("pyfunc", *servers):
            # Pairs are timed back to back: the median of their ratios is less swayed by a load
            # spike on the shared machine than one median over the other, so both are given.
            pairs = [t / g for t, g in zip(times[name], times["generate"])]
            overhead[name] = {
                "ratio_of_medians": round(medians[name] / medians["generate"], 3),
                "median_of_ratios": round(statistics.median(pairs), 3),
            }
        rates: dict[str, dict[str, float]] = {name: {} for name in servers}
        for clients in [int(c) for c in args.clients.split(",") if c.strip()]:
            for name, (base, _, _) in servers.items():
                count = max(args.concurrent_requests, clients)
                rates[name][str(clients)] = round(throughput(base, clients, count, params), 2)
                print(f"{name}, {clients} clients: {rates[name][str(clients)]} requests/s")
    finally:
        for _, proc, log in servers.values():
            stop(proc)
            log.unlink(missing_ok=True)
    figures = {
        "startup_s": {k: round(v, 2) for k, v in startup.items()},
        "max_new_tokens": args.max_new_tokens,
        "num_beams": num_beams,
        "torch_threads": torch.get_num_threads(),
        "samples_per_way": len(times["generate"]),
        "median_ms": {k: round(1000 * v, 1) for k, v in medians.items()},
        "p95_ms": {
            name: round(1000 * statistics.quantiles(times[name], n=20)[18], 1) for name in servers
        },
        "over_generate": overhead,
        "answers_differing_from_generate": differs,
        "throughput_rps_by_clients": rates,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
