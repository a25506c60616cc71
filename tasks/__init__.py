"""Task plugins: what a run trains and scores, as data.

A task is one module in this package registering a `Task`: where its examples come from, which
field of an example is the input and which the target, how the prompt is formed, the languages it
covers, its default metrics, whether it trains or only evaluates a trained model, and what the
served model returns for it. The harness loops over the chosen tasks (`tasks=...`) and never
names one; every metric and table of a task is logged under `<task>/<language>/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import UsageError
from core.registry import Registry

# Where a task's examples come from: the run's CodeSearchNet examples (`data.*`), or none (an
# evaluation-only task that brings its own problems, such as HumanEval).
CODESEARCHNET = "codesearchnet"
OWN_PROBLEMS = "own problems"


class Sample(Protocol):
    """`generate(prompts, n)`: n generations for each prompt, in order (sampled when n > 1)."""

    def __call__(self, prompts: list[str], n: int) -> list[list[str]]: ...


@dataclass(frozen=True)
class Scored:
    """An evaluation-only task's result: corpus values, one row per problem, its signature."""

    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    signature: str


@dataclass(frozen=True)
class Task:
    """One task. A training task reads `input_field` -> `target_field` pairs of the run's examples;
    an evaluation-only task scores the model trained by the task `model_of` with `evaluate`."""

    name: str
    summary: str  # one line for `python -m benchmark tasks`
    languages: tuple[str, ...]
    metrics: tuple[str, ...]  # default metrics (`all`: every metric marked default)
    trains: bool = True
    examples: str = CODESEARCHNET
    input_field: str = "docstring"  # an `Example` field
    target_field: str = "code"
    prompt: str = "{input}"  # the model's input, formed from the input field
    serves: str = "code"  # what the served model returns for an input (its output column)
    model_of: str = ""  # evaluation-only: the training task whose model is scored
    # evaluation-only: evaluate(generate, samples per problem, problem limit or 0) -> Scored
    evaluate: Callable[[Sample, int, int], Scored] | None = None
    published: str = ""  # the published table its numbers can be set beside

    def covers(self, language: str) -> bool:
        return language in self.languages

    def source(self, example: Any) -> str:
        """The model's input for `example` (an `Example`)."""
        return self.prompt.format(input=getattr(example, self.input_field))

    def target(self, example: Any) -> str:
        """What the model should produce for `example`."""
        return getattr(example, self.target_field)


TASKS: Registry[Task] = Registry("task", __name__, lambda task: task.name)


def register(task: Task) -> Task:
    """Make `task` available by its name (call it once at a task module's top level)."""
    return TASKS.register(task)


def available() -> list[str]:
    return TASKS.names()


def get_task(name: str) -> Task:
    return TASKS.get(name)


def resolve(names: list[str]) -> list[Task]:
    """The named tasks in the given order, each once; an evaluation-only task needs the task
    whose model it scores among them."""
    chosen = [get_task(name) for name in dict.fromkeys(names)]
    if not chosen:
        raise UsageError(f"tasks names no task: give one or more of {', '.join(available())}")
    picked = {task.name for task in chosen}
    for task in chosen:
        if not task.trains and task.model_of not in picked:
            raise UsageError(
                f"tasks: {task.name} scores the model trained by {task.model_of}: add it "
                f"(tasks={','.join([task.model_of, *[t.name for t in chosen]])})"
            )
    return chosen


def metric_names(task: Task) -> list[str]:
    """A task's default metrics by name (`all` expanded); an evaluation-only task's values."""
    if not task.trains:
        return list(task.metrics)
    import metrics

    return [m.name for m in metrics.resolve(list(task.metrics))]


def describe() -> list[dict[str, Any]]:
    """Every registered task as a row: name, languages, metrics, what it trains or scores."""
    rows = []
    for name in available():
        task = get_task(name)
        rows.append(
            {
                "name": task.name,
                "summary": task.summary,
                "languages": list(task.languages),
                "metrics": metric_names(task),
                "trains": task.trains,
                "model_of": task.model_of,
                "examples": task.examples,
                "input": task.input_field if task.trains else "",
                "target": task.target_field if task.trains else "",
                "serves": task.serves,
                "published": task.published,
            }
        )
    return rows
