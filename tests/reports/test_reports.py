"""The comparison report: intervals, paired tests, comparability, self-contained HTML."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from reports.compare import build_report
from reports.plots import pareto_front
from reports.stats import bleu_rows, bootstrap_ci, corpus_bleu, paired_bootstrap

REFS = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_examples():
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.2, 30)
    large = rng.normal(0.5, 0.2, 3000)
    point, low, high = bootstrap_ci(small, seed=0)
    assert low <= point <= high and point == pytest.approx(small.mean())
    point_l, low_l, high_l = bootstrap_ci(large, seed=0)
    assert low_l <= point_l <= high_l
    assert (high_l - low_l) < (high - low) / 4


def test_bleu_interval_is_corpus_bleu_from_sufficient_statistics():
    from metrics import get_metric

    preds = [r.replace("+", "-") if i % 3 else r for i, r in enumerate(REFS)]
    rows = bleu_rows(preds, REFS)
    assert corpus_bleu(rows) == pytest.approx(
        get_metric("bleu").compute(preds, REFS, "python").corpus
    )
    point, low, high = bootstrap_ci(rows, corpus_bleu, n_boot=200)
    assert low <= point <= high


def test_paired_bootstrap_separates_a_real_difference_from_none():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    diff, p = paired_bootstrap(base + 0.1, base, n_boot=500)
    assert diff == pytest.approx(0.1) and p < 0.01
    diff, p = paired_bootstrap(base, base.copy(), n_boot=500)
    assert diff == 0 and p == 1.0


def test_pareto_front():
    # (cost, quality): the second is dominated by the first, the last is best but costly.
    points = [(1, 0.5), (2, 0.4), (3, 0.7), (0.5, 0.1)]
    assert pareto_front(points) == [3, 0, 2]


def _log_run(
    method: str,
    per_example: list[float],
    *,
    fingerprint: str = "f" * 64,
    signature: str = "bleu|v1",
    status: str = "FINISHED",
    preset: str = "demo",
    protocol: str = "fresh",
    extra: dict | None = None,
) -> str:
    with mlflow.start_run(run_name=method) as run:
        mlflow.set_tags({"method": method, "preset": preset, "protocol": protocol})
        mlflow.log_params(
            {
                "run.languages": '["python"]',
                "train.seed": "42",
                "trainable_params": "1000",
                "trainable_share": "0.01",
                "data.python.fingerprint": fingerprint,
                "metric.exact_match.signature": signature,
                "metric.bleu.signature": "bleu|v1",
            }
        )
        preds = [r if v else "pass" for r, v in zip(REFS, per_example)]
        mlflow.log_table(
            pd.DataFrame(
                {
                    "id": [str(i) for i in range(len(REFS))],
                    "language": "python",
                    "docstring": "d",
                    "reference": REFS,
                    "prediction": preds,
                    "exact_match": per_example,
                    "bleu": [100.0 * v for v in per_example],
                }
            ),
            artifact_file="eval/python_examples.json",
        )
        values = {
            "python/exact_match": float(np.mean(per_example)),
            "python/bleu": 1.0,
            "python/train_time_s": 10.0,
            "python/peak_memory_mb": 100.0,
            "python/tokens_per_s": 50.0,
            "python/skipped_steps": 0.0,
            "python/trained_weights_bytes": 4096.0,
        }
        values.update(extra or {})
        mlflow.log_metrics(values)
        for step in range(1, 4):
            mlflow.log_metric("python/train/loss", 3.0 / step, step=step)
        if status == "FAILED":
            mlflow.set_tag("error", "RuntimeError: out of memory")
    if status != "FINISHED":
        mlflow.tracking.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("cmp")
    all_right = [1.0] * 40
    half = [1.0 if i % 2 else 0.0 for i in range(40)]
    ids = {
        "lora": _log_run("lora", half),
        "ffn_expansion": _log_run("ffn_expansion", all_right),
        "full_layer": _log_run("full_layer", half),
        "other_data": _log_run("hybrid", half, fingerprint="0" * 64),
        "other_sig": _log_run("hybrid", half, signature="exact_match|v2"),
        "failed": _log_run("hybrid", half, status="FAILED"),
        "sequential": _log_run(
            "lora",
            half,
            protocol="sequential",
            extra={"final/python/exact_match": 0.25, "forgetting/python/exact_match": 0.25},
        ),
    }
    out = build_report(experiment="cmp", out_dir=tmp_path / "out", n_boot=300)
    return out, ids


def test_report_rows_significance_and_left_out_runs(report):
    out, ids = report
    text = (out / "comparison.md").read_text()
    section = text.split("## python")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "method" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["ffn_expansion", "full_layer", "lora"]
    ffn = next(r for r in rows if r.startswith("| ffn_expansion"))
    full = next(r for r in rows if r.startswith("| full_layer"))
    assert "▲*" in ffn and "▲*" not in full and "▼*" not in full
    left = text.split("## Left out")[1]
    assert ids["other_data"] in left and "data fingerprint differs" in left
    assert ids["other_sig"] in left and "metric signature differs" in left
    assert ids["failed"] in left and "out of memory" in left
    assert "forgetting (sequential protocol)" in text


def test_every_metric_has_an_interval(report):
    out, _ = report
    text = (out / "comparison.md").read_text()
    for line in text.split("## python")[1].split("##")[0].splitlines():
        if line.startswith("| ") and "method" not in line:
            assert len(re.findall(r"\[[^\]]+, [^\]]+\]", line)) == 2  # bleu and exact_match


def test_html_is_self_contained(report):
    out, _ = report
    page = (out / "comparison.html").read_text()
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page)
    assert references, "the plots should be embedded"
    assert all(ref.startswith("data:") or ref.startswith("#") for ref in references)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    for name in ("metrics_python.png", "pareto_python.png", "loss_python.png", "forgetting.png"):
        assert (out / name).is_file()


def test_comparison_is_logged_as_its_own_run(report):
    runs = mlflow.search_runs(
        experiment_names=["cmp"], filter_string="tags.`adaptbench.kind` = 'comparison'"
    )
    assert len(runs) == 1
    artifacts = mlflow.artifacts.list_artifacts(
        run_id=runs.iloc[0].run_id, artifact_path="comparison"
    )
    assert {Path(a.path).name for a in artifacts} >= {"comparison.md", "comparison.html"}
