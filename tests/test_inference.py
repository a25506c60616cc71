"""Merged = unmerged, checked, and the inference cost against the base (benchmark/inference.py),
then the report's Inference cost section (reports/inference.py)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

import methods
from benchmark import data, inference
from benchmark.config import make_config
from benchmark.evaluation import evaluate
from benchmark.models import load_base
from core import record as rec
from reports import inference as report_inference
from reports import plots
from tests.methods.util import SMALL, tiny

# The run's examples by language (`load_tasks` before the task plugins).
load_languages = getattr(data, "load_languages", None) or data.load_tasks
# What a run logs its metrics under: `<task>/<lang>` (a bare language before the task plugins).
SCOPE = rec.scope if hasattr(rec, "scope") else (lambda task, language: language)
FIGURES = {rec.LATENCY_P50, rec.LATENCY_P95, rec.TOKENS_PER_S, rec.PEAK_MEMORY}
# Greedy, short, a few examples: the merged model must predict exactly what the unmerged did.
GREEDY = {
    "languages": "python",
    "data.eval_size": "8",
    "eval.num_beams": "1",
    "eval.length_penalty": "1.0",
    "eval.max_new_tokens": "16",
    "eval.batch_size": "4",
    "eval.metrics": "bleu,edit_similarity,pass_rate",
}
PROMPT_TUNING = '{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4}'


class _Tokenizer:
    """Whitespace words -> ids, enough for `measure` on a tiny model."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, texts, max_length, truncation, padding=False, return_tensors=None):
        ids = [[2 + len(w) % 90 for w in t.split()][:max_length] + [1] for t in texts]
        if return_tensors is None:
            return {"input_ids": ids}
        width = max(len(x) for x in ids)
        return {
            "input_ids": torch.tensor([x + [0] * (width - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
        }


def test_measure_gives_every_figure_for_every_model_with_sane_values():
    base, other = tiny(0), tiny(1)
    prompts = ["return the sum", "sort a list of numbers", "read a file", "x"]
    figures = inference.measure(
        {"base": base, "other": other}, _Tokenizer(), prompts, 16, new_tokens=5, batch_size=6
    )
    assert set(figures) == {"base", "other"}
    weights_mb = sum(p.numel() * p.element_size() for p in base.parameters()) / 2**20
    for values in figures.values():
        assert set(values) == FIGURES
        assert all(math.isfinite(v) and v > 0 for v in values.values())
        assert values[rec.LATENCY_P50] <= values[rec.LATENCY_P95]
        assert values[rec.PEAK_MEMORY] >= weights_mb  # the weights at least
    # Exactly the asked-for tokens per row, the end token suppressed.
    seconds, tokens = inference.timed_generate(base, _Tokenizer()(prompts, 16, 1, 1, "pt"), 5)
    assert tokens == 4 * 5 and seconds > 0


def _trained(name: str, options: dict, seed: int = 0) -> tuple[methods.Method, torch.nn.Module]:
    """The method on the demo base, its trained weights moved off their (often zero) init."""
    config = make_config(name, "demo", GREEDY)
    base, tokenizer, _ = load_base(config.model)
    method = methods.get_method(name, {**config.method_options, **options})
    model = method.apply(base).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return method, model


MERGEABLE = [name for name in methods.available() if name != "none"]


@pytest.mark.parametrize("name", MERGEABLE)
def test_merged_scores_equal_unmerged_on_the_demo_model(name: str):
    config = make_config(name, "demo", GREEDY)
    method, model = _trained(name, SMALL[name] if name == "peft" else {})
    _, tokenizer, _ = load_base(config.model)
    examples = load_languages(["python"], config.data)["python"].evaluation
    result = evaluate(
        model, tokenizer, examples, "python", config.eval, config.data.max_source_length
    )
    merged, reason = inference.merge_copy(method, model)
    assert merged is not None, reason
    assert type(merged).__name__ == "T5ForConditionalGeneration"  # a plain model
    values = inference.merged_scores(config, merged, model, tokenizer, examples, result)
    assert values[rec.merged_name(rec.CHANGED_PREDICTIONS)] == 0
    for metric, score in result.scores.items():
        assert values[rec.merged_name(metric)] == score.corpus
    assert 0 <= values[rec.merged_name(rec.MAX_LOGIT_DIFF)] < 1e-4
    # On the first 3 examples only: beside the unmerged scores of those 3.
    config.eval.merged_examples = 3
    values = inference.merged_scores(config, merged, model, tokenizer, examples, result)
    assert values[rec.merged_name(rec.CHECKED_EXAMPLES)] == 3
    assert values[rec.merged_name("bleu")] == values[rec.merged_name(rec.UNMERGED + "bleu")]
    # Merging a copy leaves the model as trained as it was: its predictions again.
    again = evaluate(
        model, tokenizer, examples, "python", config.eval, config.data.max_source_length
    )
    assert again.predictions == result.predictions


def test_a_method_that_cannot_merge_logs_why_and_no_merged_figure(mlflow_store: str):
    options = {"config_json": PROMPT_TUNING}
    config = make_config("peft", "demo", {**GREEDY, "method.config_json": PROMPT_TUNING})
    config.eval.inference_prompts = 2
    method, model = _trained("peft", options)
    _, tokenizer, _ = load_base(config.model)
    examples = load_languages(["python"], config.data)["python"].evaluation
    result = evaluate(
        model, tokenizer, examples, "python", config.eval, config.data.max_source_length
    )
    assert inference.merge_copy(method, model)[0] is None
    with mlflow.start_run() as run:
        inference.check_deployment(config, model, tokenizer, examples, result, "g/python")
    logged = MlflowClient().get_run(run.info.run_id).data
    assert "PROMPT_TUNING PEFT adapter cannot be merged" in logged.params[rec.MERGE_UNAVAILABLE]
    assert not [k for k in logged.metrics if "merged" in k]
    for model_name in (rec.BASE_MODEL, rec.ADAPTED_MODEL):
        assert logged.metrics[rec.inference_metric("g/python", model_name, rec.LATENCY_P50)] > 0
    assert logged.metrics[rec.inference_metric("g/python", rec.ADAPTED_MODEL, rec.TRAINED_BYTES)]
    none = methods.get_method("none")
    assert "trains nothing" in inference.merge_copy(none, none.apply(tiny()))[1]


def _run(scope: str, method: str, base: float, adapted: float, drift: float, diff: float):
    metrics = {f"{scope}/bleu": 2.0, rec.merged_metric(scope, "bleu"): 2.0 + drift}
    metrics[rec.merged_metric(scope, rec.MAX_LOGIT_DIFF)] = diff
    metrics[rec.merged_metric(scope, rec.CHANGED_PREDICTIONS)] = 0.0 if drift == 0 else 3.0
    for model, value in (("base", base), ("adapted", adapted), ("merged", base)):
        for figure in FIGURES:
            metrics[rec.inference_metric(scope, model, figure)] = value
    metrics[rec.inference_metric(scope, "base", rec.SIZE_BYTES)] = 1000.0
    metrics[rec.inference_metric(scope, "merged", rec.SIZE_BYTES)] = 1000.0
    metrics[rec.inference_metric(scope, "adapted", rec.TRAINED_BYTES)] = 50.0
    run = SimpleNamespace(metrics=metrics, params={rec.INFERENCE_MEMORY_PARAM: "cpu kind"})
    return SimpleNamespace(method=method, runs=[run])


def test_the_report_section_gives_ratios_to_the_base_and_flags_a_drifting_merge(tmp_path: Path):
    scope = "generation/python"
    section = SimpleNamespace(
        language=scope,
        title=scope,  # a report of one family: its scope (reports.summary.LanguageSection.title)
        key=scope,
        metrics=["bleu"],
        rows=[
            _run(scope, "lora", base=10.0, adapted=20.0, drift=0.0, diff=2e-6),
            _run(scope, "halfway", base=10.0, adapted=10.0, drift=0.5, diff=0.3),
            SimpleNamespace(method="old", runs=[SimpleNamespace(metrics={}, params={})]),
        ],
    )
    images = plots.inference_overhead([section], tmp_path)
    assert Path(images[report_inference.image_key(scope)]).is_file()
    blocks = report_inference.blocks([section], images)
    assert blocks[0] == ("h2", "Inference cost")
    assert f"{100 * report_inference.SCORE_TOLERANCE:g} %" in blocks[1][1]  # tolerance stated
    tables = [b for b in blocks if b[0] == "table"]
    rows = {row[0]: row for row in tables[0][2]}
    assert set(rows) == {"lora", "halfway"}  # a run without figures is left out
    assert rows["lora"][1] == "2.00× / 1.00×"  # latency p50: unmerged / merged over the base
    assert rows["lora"][5] == "5.0 %" and rows["lora"][6] == "1.00×"
    assert rows["lora"][7].startswith("yes")
    assert rows["halfway"][7].startswith("**no**")
    assert any(b[0] == "img" for b in blocks)
    assert (
        report_inference.blocks(
            [SimpleNamespace(language=scope, title=scope, key=scope, metrics=[], rows=[])], {}
        )
        == []
    )


@pytest.mark.slow
def test_a_run_logs_merged_scores_and_inference_cost_and_the_report_shows_them(
    demo_run: dict, tmp_path: Path
):
    from reports.compare import build_report

    client = MlflowClient(tracking_uri=demo_run["uri"])
    logged = client.get_run(demo_run["run_id"]).data.metrics
    for language in ("python", "javascript"):
        scope = SCOPE("generation", language)
        assert logged[rec.merged_metric(scope, "bleu")] == logged[f"{scope}/bleu"]
        assert logged[rec.merged_metric(scope, rec.MAX_LOGIT_DIFF)] < 1e-4
        for model in (rec.BASE_MODEL, rec.ADAPTED_MODEL, rec.MERGED_MODEL):
            for figure in FIGURES:
                assert logged[rec.inference_metric(scope, model, figure)] > 0
    out = build_report(
        experiment="adaptbench",
        out_dir=tmp_path / "report",
        tracking_uri=demo_run["uri"],
        n_boot=20,
        log_to_mlflow=False,
    )
    text = (out / "comparison.md").read_text()
    assert "## Inference cost" in text and f"{SCOPE('generation', 'python')}: inference" in text
    assert list(out.glob("inference_*.png"))
