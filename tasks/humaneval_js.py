"""HumanEval-JS: pass@k of the generation task's trained JavaScript model on HumanEval's problems
translated to node the way MultiPL-E does (metrics.humaneval_js: 155 of the 164), every program
run with node in the sandbox."""

from __future__ import annotations

from metrics import humaneval_js
from tasks import OWN_PROBLEMS, Sample, Scored, Task, register

TIMEOUT_S = 5.0
KS = (1, 10)


def evaluate(generate: Sample, samples: int, limit: int) -> Scored:
    """pass@1 and pass@10 (where `samples` allows) of whole functions generated from each
    problem's JSDoc text; one row per problem."""
    rows: list[dict] = []
    values = humaneval_js.evaluate_humaneval_js(
        generate,
        num_samples=samples,
        ks=KS,
        mode="function",
        limit=limit or None,
        timeout_s=TIMEOUT_S,
        per_problem=rows,
    )
    return Scored(values, rows, humaneval_js.signature(samples, "function", TIMEOUT_S))


register(
    Task(
        name="humaneval-js",
        summary="HumanEval translated to JavaScript (155 of 164, MultiPL-E's way), run under node",
        languages=("javascript",),
        metrics=("pass_at_1", "pass_at_10"),
        trains=False,
        examples=OWN_PROBLEMS,
        input_field="docstring",
        target_field="tests passed",
        serves="code",
        model_of="generation",
        evaluate=evaluate,
        published="MultiPL-E (Cassano et al., 2022) reports pass@1/pass@10 on HumanEval-JS",
    )
)
