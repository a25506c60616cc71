"""HumanEval-JS: execution-based pass@k of generated JavaScript on HumanEval translated to node.

The problems are HumanEval's, translated as MultiPL-E does (a JSDoc'd signature as the prompt,
`node:assert` tests) by `scripts/translate_humaneval_js.py` into `metrics/data/humaneval_js.jsonl`;
the problems it cannot express are left out (`LEFT_OUT`, listed in metrics/README.md). Every
program runs with node in `metrics._sandbox`, as the Python ones do, never in this process.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
from importlib import resources
from typing import Any

from metrics._sandbox import Limits, isolation, node_binary, node_runner
from metrics.humaneval import Generate, check_completions, score_programs

DATA = resources.files("metrics").joinpath("data", "humaneval_js.jsonl")
# Where a completion of the prompt's function ends: the next top-level function, comment or
# statement (MultiPL-E's stop sequences for JavaScript).
STOP_SEQUENCES = ("\nfunction ", "\n/*", "\n//", "\nconsole.log")
# Of HumanEval's 164: Python helpers in the prompt, cases computed in Python (random, loops),
# values JavaScript cannot hold (int keys, integers beyond 2**53).
LEFT_OUT = 9


def load_problems(limit: int | None = None) -> list[dict[str, Any]]:
    """The translated problems committed with the package (HumanEval's order, minus LEFT_OUT)."""
    with DATA.open("r", encoding="utf-8") as fh:
        problems = [json.loads(line) for line in fh if line.strip()]
    return problems[:limit] if limit else problems


def truncate(completion: str, stop_sequences: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """The completion up to its first stop sequence."""
    cuts = [completion.find(stop) for stop in stop_sequences]
    return completion[: min((c for c in cuts if c >= 0), default=len(completion))]


def program(problem: dict[str, Any], completion: str, mode: str) -> str:
    """The program to run: the function, then its tests (which call it).

    mode "completion": the completion continues the prompt (the body and its closing brace),
    cut at the first stop sequence.
    mode "function": the completion is a whole function (docstring -> code models), whose name
    becomes the entry point; nothing is cut, so helpers it defines after it stay.
    """
    entry = problem["entry_point"]
    if mode == "completion":
        body = problem["prompt"] + truncate(completion, tuple(problem["stop_sequences"]))
    else:
        body = re.sub(
            r"^(\s*(?:async\s+)?function\s*\*?\s*)[\w$]+",
            rf"\g<1>{entry}",
            completion,
            count=1,
            flags=re.M,
        )
    return f"{body}\n\n{problem['test']}"


def docstring_of(problem: dict[str, Any]) -> str:
    """The JSDoc comment's text, as a docstring -> code model's input."""
    match = re.search(r"/\*\*(.*?)\*/", problem["prompt"], re.S)
    text = match.group(1) if match else problem["prompt"]
    return " ".join(line.strip().lstrip("*").strip() for line in text.splitlines()).strip()


def evaluate_humaneval_js(
    generate: Generate,
    num_samples: int = 10,
    ks: tuple[int, ...] = (1, 10),
    mode: str = "function",
    limit: int | None = None,
    timeout_s: float = 5.0,
    workers: int = 2,
    per_problem: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """pass@k (as `pass_at_<k>`) for each k <= num_samples, and the share of programs passed;
    `per_problem`, when given, gets one row per problem (its task id, samples passed, pass@k)."""
    problems = load_problems(limit)
    prompts = [p["prompt"] if mode == "completion" else docstring_of(p) for p in problems]
    completions = generate(prompts, num_samples)
    check_completions(completions, len(problems), num_samples)
    programs = [
        [program(problem, c, mode) for c in samples]
        for problem, samples in zip(problems, completions)
    ]
    limits = Limits(timeout_s=timeout_s)
    results = score_programs(
        programs, ks, limits, runner=node_runner(), workers=workers, per_problem=per_problem
    )
    if per_problem is not None:
        for row, problem in zip(per_problem, problems):
            row["id"] = problem["task_id"]
    return results


@functools.cache
def _node_version() -> str:
    out = subprocess.run([node_binary(), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or "unknown"


def _translation() -> str:
    """The translated problems' digest: a retranslation changes the number."""
    return hashlib.sha256(DATA.read_bytes()).hexdigest()[:12]


def signature(num_samples: int, mode: str, timeout_s: float) -> str:
    return (
        f"humaneval-js|problems:{len(load_problems())}|n:{num_samples}|pass@k:unbiased|mode:{mode}"
        f"|timeout:{timeout_s}|sandbox:{isolation()}|node:{_node_version()}"
        f"|translation:{_translation()}"
    )
