"""The run record, both ends: what the runner writes is what the report reads, by core.record's
names (a renamed key on one side only fails here, not silently in a report)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from core import record as rec
from reports.compare import load_runs


def test_split_helpers_read_back_what_the_builders_write():
    assert rec.split_forgetting(rec.forgetting_metric("generation", "python", "codebleu")) == (
        "generation",
        "python",
        "codebleu",
    )
    assert rec.split_forgetting(rec.metric("generation", "python", "bleu")) is None
    assert rec.split_backward_transfer(rec.backward_transfer_metric("generation", "bleu")) == (
        "generation",
        "bleu",
    )
    assert rec.split_scope(rec.scope("humaneval", "python")) == ("humaneval", "python")
    by_task = {"generation": ["python", "javascript"], "humaneval": ["python"]}
    assert rec.tasks({rec.TASKS: rec.tasks_param(by_task)}) == by_task
    assert rec.scopes({rec.TASKS: rec.tasks_param(by_task)}) == [
        "generation/python",
        "generation/javascript",
        "humaneval/python",
    ]
    assert rec.tasks({rec.TASKS: "[1]"}) == {}
    assert rec.signature_of(rec.signature_param("meteor")) == "meteor"
    assert rec.signature_of("metric.meteor") is None
    assert rec.languages({rec.LANGUAGES: rec.languages_param(["python", "javascript"])}) == [
        "python",
        "javascript",
    ]
    assert rec.languages({rec.LANGUAGES: "not json"}) == []
    assert rec.is_method_run({rec.METHOD: "lora"})
    assert not rec.is_method_run({rec.METHOD: "lora", rec.KIND: rec.SUITE_KIND})


@pytest.mark.slow
def test_a_real_run_is_read_back_by_the_report_through_the_record(demo_run: dict):
    client = MlflowClient(demo_run["uri"])
    run = client.get_run(demo_run["run_id"])
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    languages = rec.languages(params)
    assert languages == ["python", "javascript"]
    assert rec.tasks(params) == {"generation": languages}
    assert tags[rec.METHOD] == "lora" and tags[rec.PRESET] == "demo" and rec.is_method_run(tags)
    assert int(params[rec.TRAINABLE_PARAMS]) > 0 and 0 < float(params[rec.TRAINABLE_SHARE]) < 1
    assert rec.WALL_TIME in metrics
    for language in languages:
        assert len(params[rec.fingerprint_param(language)]) == 64
        assert rec.metric("generation", language, "bleu") in metrics
        assert tags[rec.model_uri_tag("generation", language)]
        assert params[rec.signature_param("bleu")].startswith("bleu|")
    experiment = client.get_experiment(run.info.experiment_id).name
    (read,) = [r for r in load_runs(client, experiment) if r.run_id == run.info.run_id]
    assert (read.method, read.preset, read.seed, read.languages) == (
        "lora",
        "demo",
        params[rec.SEED],
        languages,
    )
    assert read.fingerprint("python") == params[rec.fingerprint_param("python")]
    assert "bleu" in read.signatures()
