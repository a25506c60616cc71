"""The task registry: what is registered, how a run picks tasks, and a new task as one new file."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import tasks
from benchmark.config import make_config
from core import record as rec
from core.errors import UsageError
from tests.conftest import REPO, SMALL_RUN


def test_the_tasks_are_registered_with_their_languages_and_metrics():
    assert {"generation", "humaneval"} <= set(tasks.available())
    generation, humaneval = tasks.get_task("generation"), tasks.get_task("humaneval")
    assert generation.trains and generation.languages == ("python", "javascript")
    assert (generation.input_field, generation.target_field) == ("docstring", "code")
    assert not humaneval.trains and humaneval.model_of == "generation"
    assert humaneval.languages == ("python",) and humaneval.evaluate is not None
    rows = {row["name"]: row for row in tasks.describe()}
    assert "bleu" in rows["generation"]["metrics"] and "all" not in rows["generation"]["metrics"]
    assert rows["humaneval"]["metrics"] == ["pass_at_1", "pass_at_10"]


def test_the_tasks_command_lists_every_task_with_languages_and_metrics():
    out = subprocess.run(
        [sys.executable, "-m", "benchmark", "tasks", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert set(rows) == set(tasks.available())
    assert rows["humaneval"]["languages"] == ["python"]
    assert rows["generation"]["trains"] and not rows["humaneval"]["trains"]


def test_a_run_picks_its_tasks_and_is_refused_one_it_cannot_run():
    assert make_config("lora", "demo").tasks == ["generation"]  # the default: today's task
    config = make_config("lora", "demo", {"tasks": "generation,humaneval"})
    assert config.tasks == ["generation", "humaneval"]
    from benchmark.runner import task_plan

    # A task covering only some of the run's languages runs on those (the rest is logged).
    assert task_plan(config) == {
        "generation": ["python", "javascript"],
        "humaneval": ["python"],
    }
    refusals = {
        "generaton": "unknown task 'generaton'. Registered tasks: ",
        "humaneval": "humaneval scores the model trained by generation: add it",
    }
    for value, message in refusals.items():
        with pytest.raises(UsageError, match=message):
            make_config("lora", "demo", {"tasks": value})
    with pytest.raises(UsageError, match="none of the run's languages"):
        make_config("lora", "demo", {"tasks": "generation,humaneval", "languages": "javascript"})


def test_a_task_covers_the_fields_it_names():
    from benchmark.cleaning import Example

    example = Example("7", "python", "Add one.", "def f(x):\n    return x + 1\n", func_name="f")
    task = tasks.Task(
        name="t", summary="", languages=("python",), metrics=("bleu",), prompt="# {input}"
    )
    assert (task.source(example), task.target(example)) == ("# Add one.", example.code)


# A task is one file: this one, in a module of its own, registered when imported.
NEW_TASK = '''
"""Test task: the function's name from its code."""

from tasks import Task, register

register(
    Task(
        name="name_from_code",
        summary="a function's name from its code",
        languages=("python",),
        metrics=("exact_match", "edit_similarity"),
        input_field="code",
        target_field="func_name",
        prompt="name: {input}",
        serves="name",
    )
)
'''


@pytest.fixture
def new_task(tmp_path: Path):
    path = tmp_path / "name_from_code.py"
    path.write_text(textwrap.dedent(NEW_TASK))
    spec = importlib.util.spec_from_file_location("tasks.name_from_code", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield tasks.get_task("name_from_code")
    tasks.TASKS._entries.pop("name_from_code")


@pytest.mark.slow
def test_a_new_task_file_trains_and_is_logged_under_its_name(
    new_task, mlflow_store: str, csn_tree: Path, tmp_path: Path
):
    from benchmark.runner import run

    overrides = {
        **SMALL_RUN,
        "data.source": str(csn_tree),
        "languages": "python",
        "tasks": "name_from_code",
        "eval.max_new_tokens": "6",
    }
    run_id = run(make_config("lora", "demo", overrides))
    client = MlflowClient()
    record = client.get_run(run_id)
    metrics, params = record.data.metrics, record.data.params
    assert rec.tasks(params) == {"name_from_code": ["python"]}
    for name in ("exact_match", "edit_similarity", "train_time_s", "trained_weights_bytes"):
        assert rec.metric("name_from_code", "python", name) in metrics
    assert not any(key.startswith("generation/") for key in metrics)  # only the chosen task
    assert "metric.bleu.signature" not in params  # the task's metrics, not every one
    path = client.download_artifacts(
        run_id, rec.examples_table("name_from_code", "python"), str(tmp_path)
    )
    payload = json.loads(Path(path).read_text())
    table = pd.DataFrame(payload["data"], columns=payload["columns"])
    assert table["code"].str.startswith("name: ").all()  # the prompt, formed from the code
    assert table["exact_match"].mean() == pytest.approx(
        metrics[rec.metric("name_from_code", "python", "exact_match")]
    )
    assert record.data.tags[rec.model_uri_tag("name_from_code", "python")]  # its model, logged
