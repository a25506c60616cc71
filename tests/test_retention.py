"""Retention: held-out losses before and after adaptation, their sets, the report's columns."""

from __future__ import annotations

import gzip
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import T5Config, T5ForConditionalGeneration

from benchmark import retention
from benchmark.config import make_config
from benchmark.data import load_languages
from benchmark.models import DEMO_MODEL, load_base
from benchmark.runner import run
from benchmark.training import Feature, fitting
from core import record as rec
from tests.conftest import SMALL_RUN, write_csn_tree

SETS = ("code-javascript", "pretraining-text")


def _keys(examples) -> set[str]:
    return {retention.code_key(ex.code) for ex in examples}


def test_mean_loss_is_the_token_mean_cross_entropy_computed_by_hand():
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=40,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = T5ForConditionalGeneration(config).train()  # dropout on: the loss must switch it off
    features = [
        Feature([5, 6, 7, 8, 1], [9, 10, 1]),
        Feature([11, 12, 1], [13, 14, 15, 16, 17, 1]),
        Feature([18, 1], [19, 1]),
    ]
    total, tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for f in features:  # one at a time: no padding, -log softmax of each label token
            labels = torch.tensor([f.labels])
            logits = model(input_ids=torch.tensor([f.input_ids]), labels=labels).logits[0]
            log_probs = logits.double().log_softmax(-1)
            total -= sum(log_probs[i, t].item() for i, t in enumerate(f.labels))
            tokens += len(f.labels)
    model.train()
    assert retention.mean_loss(model, features, pad_id=0) == pytest.approx(total / tokens, abs=1e-5)
    assert model.training  # left as it was found


def test_span_corruption_hides_spans_that_the_target_gives_back():
    config = make_config("lora", "demo")
    _, tokenizer, _ = load_base(config.model)
    examples = load_languages(["python"], config.data)["python"].train[:40]
    features = retention.span_corruption(examples, tokenizer, 48, 128)
    assert features == retention.span_corruption(examples, tokenizer, 48, 128)  # fixed seed
    marks = set(retention.sentinels(tokenizer, 48))
    shares = []
    for example, f in zip(examples, features):
        original = tokenizer(example.code, max_length=48, truncation=True)["input_ids"][:-1]
        spans: dict[int, list[int]] = {}
        for token in f.labels[:-1]:
            if token in marks:
                current = spans.setdefault(token, [])
            else:
                current.append(token)
        rebuilt = [t for mark in f.input_ids[:-1] for t in spans.get(mark, [mark])]
        assert rebuilt == original
        assert f.input_ids[-1] == f.labels[-1] == tokenizer.eos_token_id
        shares.append(sum(map(len, spans.values())) / len(original))
    assert 0.12 < sum(shares) / len(shares) < 0.18  # T5's 15 % noise


def test_the_demos_held_out_sets_are_disjoint_from_everything_it_trains_and_evaluates_on():
    config = make_config("lora", "demo", {"eval.retention_examples": "100"})
    data = load_languages(config.languages, config.data)
    _, tokenizer, _ = load_base(config.model)
    trained, evaluated, loaded_train = set(), set(), set()
    for examples in data.values():
        trained |= _keys(fitting(examples.train, tokenizer, config.data.max_target_length))
        evaluated |= _keys(examples.validation + examples.evaluation)
        loaded_train |= _keys(examples.train)
    with gzip.open(DEMO_MODEL / "pretraining_fingerprints.txt.gz", "rt") as fh:
        pretrained = set(fh.read().split())
    sizes = {}
    for language, other in (("python", "javascript"), ("javascript", "python")):
        sets = {s.name: s for s in retention.held_out_sets(config, data, tokenizer, [language])}
        assert list(sets) == [f"code-{other}", "pretraining-text"]
        code = sets[f"code-{other}"]
        assert {ex.language for ex in code.examples} == {other}
        # Docstring -> code pairs of the other language, from splits the run leaves over.
        assert not _keys(code.examples) & (loaded_train | evaluated)
        assert not _keys(code.examples) & pretrained  # never seen by the base either
        text = sets["pretraining-text"]
        assert _keys(text.examples) <= pretrained  # text the base was pretrained on
        assert not _keys(text.examples) & (trained | evaluated)  # never trained on by the run
        assert {ex.language for ex in text.examples} == {"python", "javascript"}
        assert len(text.features) == len(text.examples)
        sizes[code.name], sizes[text.name] = len(code.examples), len(text.examples)
    # 100 a set; JavaScript's validation split has 70 left after the run's 100.
    assert sizes == {"code-javascript": 70, "code-python": 100, "pretraining-text": 100}
    # The sequential protocol's last model, trained on both: only the pretraining text is left.
    both = retention.held_out_sets(config, data, tokenizer, ["python", "javascript"])
    assert [s.name for s in both] == ["pretraining-text"]


@pytest.mark.slow
def test_a_run_logs_before_after_and_delta_and_none_keeps_the_base(
    demo_run: dict, mlflow_store: str, tmp_path: Path
):
    lora = MlflowClient(tracking_uri=demo_run["uri"]).get_run(demo_run["run_id"]).data
    retention._BASE_LOSSES.clear()  # the base's losses computed again, not remembered
    tree = write_csn_tree(tmp_path / "csn")  # the demo run's data, written again
    # The same setup as the demo run's, with the method none.
    none_id = run(make_config("none", "demo", {**SMALL_RUN, "data.source": str(tree)}))
    none = MlflowClient().get_run(none_id).data
    for language, other in (("python", "javascript"), ("javascript", "python")):
        scope = rec.scope("generation", language)
        for name in (f"code-{other}", "pretraining-text"):
            key = {stat: rec.retention_metric(scope, name, stat) for stat in rec.RETENTION_STATS}
            for values in (lora.metrics, none.metrics):
                assert values[key["loss_delta"]] == pytest.approx(
                    values[key["loss_after"]] - values[key["loss_before"]]
                )
            # Before is the base's, whatever the method; none leaves it as it was.
            assert none.metrics[key["loss_before"]] == pytest.approx(
                lora.metrics[key["loss_before"]], abs=1e-6
            )
            assert none.metrics[key["loss_after"]] == pytest.approx(
                none.metrics[key["loss_before"]], abs=1e-6
            )
            assert lora.metrics[key["loss_after"]] != lora.metrics[key["loss_before"]]
            fingerprint = rec.retention_fingerprint_param(name)
            assert none.params[fingerprint] == lora.params[fingerprint]  # the same set
    assert lora.params[rec.retention_examples_param("pretraining-text")] == "32"  # the preset's
    assert lora.params[rec.retention_examples_param("code-javascript")] == "10"  # 4 + 6 left
    assert lora.params[rec.retention_objective_param("pretraining-text")] == (
        "code -> docstring summary"
    )


def test_the_report_shows_the_retention_columns_and_what_they_mean(tmp_path: Path, monkeypatch):
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from mlflow.tracking import fluent

    from reports.compare import build_report
    from tests.reports.test_reports import HALF, _log_run

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("kept")
    deltas = {("none", 42): 0.0, ("lora", 42): 0.1, ("lora", 43): 0.3}
    for (method, seed), delta in deltas.items():
        run_id = _log_run(method, HALF, languages=("python",), seed=seed)
        scope = rec.scope("generation", "python")
        with mlflow.start_run(run_id=run_id):
            for name, before in (("code-javascript", 3.5), ("pretraining-text", 5.25)):
                mlflow.log_metrics(
                    {
                        rec.retention_metric(scope, name, "loss_before"): before,
                        rec.retention_metric(scope, name, "loss_after"): before + delta,
                        rec.retention_metric(scope, name, "loss_delta"): delta,
                    }
                )
    out = build_report(experiment="kept", out_dir=tmp_path / "out", n_boot=50, tracking_uri=uri)
    text = (out / "comparison.md").read_text(encoding="utf-8")
    quality = text.split("### generation/python: quality\n", 1)[1].split("\n#", 1)[0]
    lines = [line for line in quality.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split(" | ")]
    assert header[-2:] == ["retention Δ code-javascript ↓", "retention Δ pretraining-text ↓"]
    rows = {
        cells[0]: cells
        for cells in ([c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:])
    }
    assert rows["lora"][-2:] == ["+0.200 ± 0.100", "+0.200 ± 0.100"]  # mean ± std of two seeds
    assert rows["none"][-2:] == ["+0.000", "+0.000"]
    assert "positive: the method forgot" in quality
    assert "The base's loss before: code-javascript 3.500, pretraining-text 5.250." in quality


def test_retention_keys_read_back_what_the_builders_write():
    key = rec.retention_metric("generation/python", "code-javascript", "loss_delta")
    assert key == "retention/generation/python/code-javascript/loss_delta"
    assert rec.split_retention(key) == ("generation/python", "code-javascript", "loss_delta")
    assert rec.split_retention(rec.metric("generation", "python", "bleu")) is None
    assert rec.split_retention("retention/generation/python/code-javascript/loss") is None
