"""End to end: a run trains, evaluates and leaves a complete record in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchmark.config import make_config
from benchmark.runner import run
from core import record as rec
from tests.conftest import CODET5_CONFIG

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _table(client: MlflowClient, run_id: str, language: str, tmp: Path) -> pd.DataFrame:
    path = client.download_artifacts(run_id, f"eval/generation/{language}_examples.json", str(tmp))
    payload = json.loads(Path(path).read_text())
    return pd.DataFrame(payload["data"], columns=payload["columns"])


def test_demo_run_logs_metrics_params_datasets_table_and_model(demo_run: dict, tmp_path: Path):
    mlflow.set_tracking_uri(demo_run["uri"])
    run_id = demo_run["run_id"]
    client = MlflowClient()
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED"
    assert mlflow.get_experiment(record.info.experiment_id).name == "adaptbench"
    metrics, params, tags = record.data.metrics, record.data.params, record.data.tags
    assert tags[rec.CPU_THREADS] == str(torch.get_num_threads())  # the rounding depends on it
    for lang in ("python", "javascript"):
        for key in (
            "bleu",
            "exact_match",
            "tokens_per_s",
            "train_time_s",
            "peak_memory_mb",
            "skipped_steps",
            "final_val_loss",
            "trained_weights_bytes",
        ):
            assert f"generation/{lang}/{key}" in metrics, f"generation/{lang}/{key}"
        assert len(params[f"data.{lang}.fingerprint"]) == 64
        assert params[f"data.{lang}.train_examples"] == "32"
        # the demo trains on whole functions only; the fixture's are all shorter than 128 tokens
        assert params[f"generation.{lang}.trained_examples"] == "32"
        history = client.get_metric_history(run_id, f"generation/{lang}/train/loss")
        assert [m.step for m in history] == [1, 2, 3, 4]
    assert len(client.get_metric_history(run_id, "train/loss")) == 8
    for key in (
        "train.epochs",
        "train.learning_rate",
        "data.source",
        "model.name",
        "method.name",
        "method.r",
        "trainable_params",
        "total_params",
        "trainable_share",
        "version.torch",
        "version.transformers",
        "model.resolved_revision",
        "metric.bleu.signature",
    ):
        assert key in params, key
    assert 0 < float(params["trainable_share"]) < 1
    # the demo decodes with 4 beams and a length penalty: the logged model below must too
    assert (params["eval.num_beams"], params["eval.length_penalty"]) == ("4", "1.2")
    assert tags["preset"] == "demo" and tags["protocol"] == "fresh" and tags["git_commit"]
    inputs = {(d.dataset.name, t.value) for d in record.inputs.dataset_inputs for t in d.tags}
    assert ("python-training", "training") in inputs
    assert ("javascript-evaluation", "evaluation") in inputs

    table = _table(client, run_id, "python", tmp_path)
    assert len(table) == 6
    assert {"docstring", "reference", "prediction", "bleu", "exact_match"} <= set(table.columns)
    assert not any('"""' in ref for ref in table["reference"])

    # The logged model carries the project's code, but not a second copy of the demo's weights
    # and tokenizer: the bundle holds the base and tokenizer it needs.
    local = Path(
        mlflow.artifacts.download_artifacts(
            tags["generation.python.model_uri"], dst_path=str(tmp_path)
        )
    )
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"code/benchmark/runner.py", "code/methods/lora.py", "code/tasks/generation.py"} <= files
    assert not any(f.startswith("code/benchmark/assets/") or "__pycache__" in f for f in files)
    assert {
        "artifacts/bundle/base/model.safetensors",
        "artifacts/bundle/tokenizer/tokenizer.json",
    } <= files

    # The logged model, rebuilt in this process, generates exactly what training generated.
    model = mlflow.pyfunc.load_model(tags["generation.python.model_uri"])
    predicted = model.predict(pd.DataFrame({"prompt": table["docstring"].tolist()}))
    assert predicted["code"].tolist() == table["prediction"].tolist()

    # It also loads where the project is not installed, from its own copy of the code.
    script = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path = [p for p in sys.path if p not in ("", {str(ROOT)!r})]
try:
    import benchmark
    sys.exit("the project is still importable: the check would prove nothing")
except ImportError:
    pass
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model({str(local)!r})
import benchmark
assert benchmark.__file__.startswith({str(local)!r}), benchmark.__file__
prompts = pd.DataFrame({{"prompt": {table["docstring"].tolist()[:2]!r}}})
print(model.predict(prompts)["code"].tolist())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == repr(table["prediction"].tolist()[:2])


def test_seed_preset_path_on_local_hf_parquet_and_codet5_shape(mlflow_store: str, hf_parquet: Path):
    overrides = {
        "data.source": str(hf_parquet),
        "model.name": f"config:{CODET5_CONFIG}",
        "languages": "python",
        "train.max_steps": "2",
        "data.train_size": "16",
        "data.val_size": "4",
        "data.eval_size": "2",
        "eval.max_new_tokens": "4",
    }
    config = make_config("lora", "seed", overrides)
    assert config.train.batch_size == 8 and config.train.learning_rate == pytest.approx(1e-4)
    run_id = run(config)
    record = MlflowClient().get_run(run_id)
    assert record.data.metrics["generation/python/train_steps"] == 2
    assert record.data.params["trainable_params"] == "1769472"
    assert record.data.params["total_params"] == str(60_492_288 + 1_769_472)
    assert "generation/python/bleu" in record.data.metrics


def test_humaneval_task_and_model_registration(mlflow_store: str, csn_tree: Path, tmp_path: Path):
    from tests.conftest import SMALL_RUN

    overrides = {
        **SMALL_RUN,
        "data.source": str(csn_tree),
        "languages": "python",
        "tasks": "generation,humaneval",
        "eval.problem_limit": "3",
        "eval.samples": "2",
        "eval.max_new_tokens": "8",
    }
    run_id = run(make_config("lora", "demo", overrides), register_as="codegen")
    client = MlflowClient()
    record = client.get_run(run_id)
    version = client.get_latest_versions("codegen-generation-python")[0]
    assert version.run_id == run_id
    metrics = record.data.metrics
    assert metrics["humaneval/python/problems"] == 3
    assert 0.0 <= metrics["humaneval/python/pass_at_1"] <= 1.0
    assert "pass_at_10" not in " ".join(metrics)  # k > n is not estimable
    assert "sandbox" in record.data.params["metric.humaneval.signature"]
    assert json.loads(record.data.params["run.tasks"]) == {
        "generation": ["python"],
        "humaneval": ["python"],
    }
    path = client.download_artifacts(run_id, "eval/humaneval/python_examples.json", str(tmp_path))
    payload = json.loads(Path(path).read_text())
    problems = pd.DataFrame(payload["data"], columns=payload["columns"])
    assert problems["id"].tolist() == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert problems["pass_at_1"].mean() == pytest.approx(metrics["humaneval/python/pass_at_1"])


def test_long_targets_are_left_out_of_training_but_not_of_evaluation(
    mlflow_store: str, tmp_path: Path
):
    from benchmark.config import UsageError
    from benchmark.data import load_languages
    from benchmark.models import DEMO_MODEL, _tokenizer
    from benchmark.training import fitting
    from tests.conftest import SMALL_RUN

    overrides = {
        **SMALL_RUN,
        "languages": "python",
        "data.train_size": "24",
        "data.max_target_length": "64",
    }
    config = make_config("lora", "demo", overrides)
    assert config.data.skip_long_targets  # the demo preset's setting
    train = load_languages(["python"], config.data)["python"].train
    kept = fitting(train, _tokenizer(str(DEMO_MODEL)), 64)
    assert 0 < len(kept) < len(train) == 24  # the bundled sample has both kinds
    run_id = run(config)
    client = MlflowClient()
    params = client.get_run(run_id).data.params
    assert params["data.python.train_examples"] == "24"
    assert params["generation.python.trained_examples"] == str(len(kept))
    steps = client.get_metric_history(run_id, "generation/python/train/loss")
    assert len(steps) == -(-len(kept) // 8)  # one epoch of batches of 8 over the kept pairs
    assert len(_table(client, run_id, "python", tmp_path)) == 6  # every eval example

    with pytest.raises(UsageError, match="no generation/python training pair fits"):
        run(make_config("lora", "demo", {**overrides, "data.max_target_length": "2"}))


def test_generate_command_decodes_as_the_run_evaluated(demo_run: dict, tmp_path: Path, capsys):
    from benchmark.cli import main

    mlflow.set_tracking_uri(demo_run["uri"])
    client = MlflowClient()
    uri = client.get_run(demo_run["run_id"]).data.tags["generation.python.model_uri"]
    row = _table(client, demo_run["run_id"], "python", tmp_path).iloc[0]
    # No decoding flags: the model's own (4 beams, length penalty 2, the run's token cap), so the
    # code is the one the evaluation scored.
    assert main(["generate", "--model-uri", uri, row["docstring"]]) == 0
    assert capsys.readouterr().out == row["prediction"] + "\n"
    assert main(["generate", "--model-uri", uri, "--num-beams", "1", row["docstring"]]) == 0
    greedy = capsys.readouterr().out
    assert (
        main(["generate", "--model-uri", uri, "--num-beams", "1", "--length-penalty", "2", "x"])
        == 2
    )
    assert "--length-penalty 2.0 only acts in beam search" in capsys.readouterr().err
    assert greedy != row["prediction"] + "\n"  # the flags reach the model


def test_none_trains_nothing_and_scores_the_base_as_it_is(mlflow_store: str, tmp_path: Path):
    from benchmark.data import load_languages
    from benchmark.evaluation import generate
    from benchmark.models import load_base
    from tests.conftest import SMALL_RUN

    config = make_config("none", "demo", {**SMALL_RUN, "languages": "python"})
    run_id = run(config)
    client = MlflowClient()
    record = client.get_run(run_id)
    assert record.data.params["trainable_params"] == "0"
    assert not client.get_metric_history(run_id, "generation/python/train/loss")
    assert "generation/python/train_time_s" not in record.data.metrics  # no training cost to report
    # Its predictions are the untouched base's, decoded as the preset decodes.
    base, tokenizer, _ = load_base(config.model)
    examples = load_languages(["python"], config.data)["python"].evaluation
    expected = generate(
        base,
        tokenizer,
        [ex.docstring for ex in examples],
        config.data.max_source_length,
        max_new_tokens=config.eval.max_new_tokens,
        num_beams=config.eval.num_beams,
        progress=False,
        length_penalty=config.eval.length_penalty,
    )
    assert _table(client, run_id, "python", tmp_path)["prediction"].tolist() == expected
    # The logged model serves the same base: its bundle holds no trained tensor.
    served = mlflow.pyfunc.load_model(record.data.tags["generation.python.model_uri"])
    prompts = pd.DataFrame({"prompt": [ex.docstring for ex in examples[:2]]})
    assert served.predict(prompts)["code"].tolist() == expected[:2]
