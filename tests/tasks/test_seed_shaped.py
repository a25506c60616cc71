"""A seed-shaped run of every task (the seed preset, a tiny model from a config, local files):
each task and language logged under its name, and the report showing a section per task."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from benchmark.config import make_config
from benchmark.models import DEMO_TOKENIZER, TINY_T5
from core import record as rec

pytestmark = pytest.mark.slow

TASKS = "generation,summarization,humaneval,humaneval-js"


@pytest.fixture
def runs(mlflow_store: str, csn_tree: Path, tmp_path: Path) -> dict[str, str]:
    from transformers import AutoTokenizer

    from benchmark.runner import run

    config = tmp_path / "tiny-t5.json"
    vocab = len(AutoTokenizer.from_pretrained(str(DEMO_TOKENIZER)))
    config.write_text(json.dumps({**TINY_T5, "model_type": "t5", "vocab_size": vocab}))
    overrides = {
        "model.name": f"config:{config}",
        "data.source": str(csn_tree),
        "data.train_size": "16",
        "data.val_size": "4",
        "data.eval_size": "6",
        "train.epochs": "1",
        "train.checkpoint_dir": "",
        "eval.max_new_tokens": "8",
        "eval.samples": "2",
        "eval.problem_limit": "3",
        "tasks": TASKS,
    }
    return {m: run(make_config(m, "seed", overrides)) for m in ("none", "lora")}


def test_every_task_is_logged_under_its_name_and_reported_by_task(
    runs: dict[str, str], mlflow_store: str, tmp_path: Path
):
    from reports.compare import build_report

    client = MlflowClient()
    record = client.get_run(runs["lora"])
    metrics, params, tags = record.data.metrics, record.data.params, record.data.tags
    assert rec.tasks(params) == {
        "generation": ["python", "javascript"],
        "summarization": ["python", "javascript"],
        "humaneval": ["python"],
        "humaneval-js": ["javascript"],
    }
    for language in ("python", "javascript"):
        assert rec.metric("generation", language, "bleu") in metrics
        assert rec.metric("summarization", language, "smoothed_bleu") in metrics
        assert rec.metric("summarization", language, "train/loss") in metrics  # it trains
        for task in ("generation", "summarization"):  # a model per training task and language
            assert tags[rec.model_uri_tag(task, language)]
    for task, language in (("humaneval", "python"), ("humaneval-js", "javascript")):
        assert metrics[rec.metric(task, language, "problems")] == 3
        assert 0 <= metrics[rec.metric(task, language, "pass_at_1")] <= 1
        assert rec.signature_param(task) in params
    assert "codebleu" not in " ".join(k for k in metrics if k.startswith("summarization/"))
    # Retention: each training task's model of each language, on the code of the other language
    # and on text of the base's pretraining objective, before and after adaptation.
    for task in ("generation", "summarization"):
        for language, other in (("python", "javascript"), ("javascript", "python")):
            scope = rec.scope(task, language)
            for held_out in (f"code-{other}", "pretraining-text"):
                before, after, delta = (
                    metrics[rec.retention_metric(scope, held_out, stat)]
                    for stat in rec.RETENTION_STATS
                )
                assert before > 0 and after > 0 and delta == pytest.approx(after - before)

    # Summarisation reads the code and is scored against the docstring.
    path = client.download_artifacts(
        runs["lora"], rec.examples_table("summarization", "python"), str(tmp_path)
    )
    payload = json.loads(Path(path).read_text())
    table = pd.DataFrame(payload["data"], columns=payload["columns"])
    assert (
        table["code"].str.contains("def ").all()
        and not table["reference"].str.contains("def ").any()
    )
    assert table["smoothed_bleu"].mean() == pytest.approx(
        metrics[rec.metric("summarization", "python", "smoothed_bleu")]
    )

    # The served summarization model reads code and returns its task's column.
    served = mlflow.pyfunc.load_model(tags[rec.model_uri_tag("summarization", "python")])
    answer = served.predict(pd.DataFrame({"prompt": ["def add(a, b):\n    return a + b\n"]}))
    assert list(answer.columns) == ["docstring"] and len(answer) == 1

    experiment = client.get_experiment(record.info.experiment_id).name
    out = build_report(experiment=experiment, out_dir=tmp_path / "report", n_boot=50)
    text = (out / "comparison.md").read_text()
    for scope in (
        "generation/python",
        "generation/javascript",
        "summarization/python",
        "summarization/javascript",
        "humaneval/python",
        "humaneval-js/javascript",
    ):
        assert f"## {scope}\n" in text, scope
        quality = text.split(f"### {scope}: quality", 1)[1].split("\n### ", 1)[0]
        assert "[" in quality  # each score with its interval
    humaneval = text.split("### humaneval/python: quality", 1)[1].split("\n### ", 1)[0]
    assert "pass_at_1" in humaneval
    summarization = text.split("### summarization/python: quality", 1)[1].split("\n### ", 1)[0]
    assert "smoothed_bleu" in summarization
    assert "retention Δ code-javascript" in text.split("### generation/python: quality", 1)[1]
