"""The sequential protocol: scores after each task match the saved per-task models."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import metrics
from benchmark.config import make_config
from benchmark.runner import run
from tests.conftest import SMALL_RUN

pytestmark = pytest.mark.slow


def _examples(client: MlflowClient, run_id: str, name: str, tmp: Path) -> pd.DataFrame:
    path = client.download_artifacts(run_id, f"eval/generation/{name}_examples.json", str(tmp))
    payload = json.loads(Path(path).read_text())
    return pd.DataFrame(payload["data"], columns=payload["columns"])


def test_sequential_scores_and_forgetting_are_recomputable(
    mlflow_store: str, csn_tree: Path, tmp_path: Path
):
    overrides = {**SMALL_RUN, "data.source": str(csn_tree), "protocol": "sequential"}
    run_id = run(make_config("lora", "demo", overrides))
    client = MlflowClient()
    record = client.get_run(run_id)
    logged = record.data.metrics
    assert record.data.tags["protocol"] == "sequential"

    python_eval = _examples(client, run_id, "python", tmp_path)
    prompts = pd.DataFrame({"prompt": python_eval["docstring"].tolist()})
    references = python_eval["reference"].tolist()
    bleu = metrics.get_metric("bleu")

    after_python = mlflow.pyfunc.load_model(f"runs:/{run_id}/generation_python_model").predict(
        prompts
    )
    recomputed_after = bleu.compute(after_python["code"].tolist(), references, "python").corpus
    assert recomputed_after == pytest.approx(logged["generation/python/bleu"], abs=1e-9)

    after_all = mlflow.pyfunc.load_model(f"runs:/{run_id}/generation_javascript_model").predict(
        prompts
    )
    recomputed_final = bleu.compute(after_all["code"].tolist(), references, "python").corpus
    assert recomputed_final == pytest.approx(logged["final/generation/python/bleu"], abs=1e-9)

    assert logged["forgetting/generation/python/bleu"] == pytest.approx(
        recomputed_after - recomputed_final
    )
    assert logged["bwt/generation/bleu"] == pytest.approx(
        -logged["forgetting/generation/python/bleu"]
    )
    # The last language is scored once, right after its own training: nothing to forget.
    assert "forgetting/generation/javascript/bleu" not in logged
    assert "generation/javascript/bleu" in logged


def test_forward_transfer_uses_the_fresh_run_of_the_same_method(mlflow_store: str, csn_tree: Path):
    base = {**SMALL_RUN, "data.source": str(csn_tree), "languages": "javascript,python"}
    fresh_id = run(make_config("lora", "demo", base))
    seq_id = run(make_config("lora", "demo", {**base, "protocol": "sequential"}))
    client = MlflowClient()
    fresh = client.get_run(fresh_id).data.metrics
    seq = client.get_run(seq_id)
    assert seq.data.params["fwt.reference_run"] == fresh_id
    for lang in ("javascript", "python"):
        expected = seq.data.metrics[f"generation/{lang}/bleu"] - fresh[f"generation/{lang}/bleu"]
        assert seq.data.metrics[f"fwt/generation/{lang}/bleu"] == pytest.approx(expected)
    # The first language sees the same seed, data and model either way: no transfer yet.
    assert seq.data.metrics["fwt/generation/javascript/bleu"] == pytest.approx(0.0, abs=1e-9)
