"""MLflow 3's models, natively: each language's logged model holds its scores, linked to the
evaluation dataset; `--register-as` sets `latest-<preset>`; `compare --promote` points an alias
at the best method's model by a metric and tags the version with the comparison run."""

from __future__ import annotations

from pathlib import Path

import mlflow
import mlflow.tracking._tracking_service.utils as tracking_utils
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient, fluent

from benchmark import cli
from benchmark.config import UsageError
from core import record as rec
from metrics import get_metric
from tests.conftest import SMALL_RUN
from tests.test_boundary import refused

LANGUAGES = ("python", "javascript")
METRICS = ("bleu", "exact_match", "edit_distance")
N = 40
REFS = {
    "python": [f"def f{i}(x):\n    return x + {i} * x\n" for i in range(N)],
    "javascript": [f"function f{i}(x) {{\n  return x + {i} * x;\n}}" for i in range(N)],
}
# Right on every second example and nothing like it on the others, against one token off on
# every example: the first has the better exact_match, the second the better (lower)
# edit_distance, so the metric and its direction decide which method is best.
PREDICTIONS = {
    "half_exact": lambda refs: [r if i % 2 else "return None" for i, r in enumerate(refs)],
    "all_close": lambda refs: [r.replace("return x", "return y") for r in refs],
}


def test_each_model_holds_its_scores_on_its_dataset_and_latest_alias_follows_registration(
    mlflow_store: str, csn_tree: Path
):
    from benchmark.config import make_config
    from benchmark.runner import run

    client = MlflowClient()
    overrides = {**SMALL_RUN, "data.source": str(csn_tree)}
    first = run(make_config("none", "demo", overrides), register_as="codegen")
    record = client.get_run(first)
    experiment = record.info.experiment_id
    models = {
        m.name: m for m in client.search_logged_models([experiment], f"source_run_id = '{first}'")
    }
    assert set(models) == {_model_name(lang) for lang in LANGUAGES}
    datasets = {i.dataset.name: i.dataset.digest for i in record.inputs.dataset_inputs}
    signed = [n for p in record.data.params if (n := rec.signature_of(p))]
    for lang in LANGUAGES:
        scores = [n for n in signed if rec.metric("generation", lang, n) in record.data.metrics]
        assert {"bleu", "pass_rate", "edit_distance"} <= set(scores)
        linked = models[_model_name(lang)].metrics
        # Its own language's scores, each once, on its evaluation dataset; nothing else (the
        # run's other metrics, the other language's among them, are not this model's).
        assert sorted(m.key for m in linked) == sorted(
            rec.metric("generation", lang, n) for n in scores
        )
        for m in linked:
            assert m.value == record.data.metrics[m.key]
            assert m.dataset_name == rec.dataset_name(lang, "evaluation")
            assert m.dataset_digest == datasets[m.dataset_name]
        # The run's own metric is as it was: one entry, not a second one for the link.
        assert len(client.get_metric_history(first, rec.metric("generation", lang, "bleu"))) == 1
    alias = rec.latest_alias("demo")
    assert alias == "latest-demo"
    python_name = rec.registered_name("codegen", "generation/python")
    version = client.get_model_version_by_alias(python_name, alias)
    assert (str(version.version), version.run_id) == ("1", first)
    assert version.source == f"models:/{models['generation_python_model'].model_id}"

    second = run(make_config("none", "demo", overrides), register_as="codegen")
    for lang in LANGUAGES:
        moved = client.get_model_version_by_alias(
            rec.registered_name("codegen", rec.scope("generation", lang)), alias
        )
        assert (str(moved.version), moved.run_id) == ("2", second)
    # What the Models tab ranks by: the Python models, by their linked python/bleu.
    ranked = client.search_logged_models(
        [experiment],
        filter_string="metrics.`generation/python/bleu` >= 0",
        order_by=[{"field_name": "metrics.generation/python/bleu", "ascending": False}],
    )
    assert sorted(m.source_run_id for m in ranked) == sorted([first, second])
    assert {m.name for m in ranked} == {"generation_python_model"}


def _model_name(language: str) -> str:
    return rec.model_name("generation", language)  # the runner's


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _log_run(method: str, predictions: str, register_as: str = "") -> str:
    """A finished method run as the runner records it, with a tiny logged model per language
    (registered as `<register_as>-<lang>` when given)."""
    signatures = {rec.signature_param(n): get_metric(n).signature() for n in METRICS}
    with mlflow.start_run(run_name=f"{method} seed 42") as run:
        mlflow.set_tags({rec.METHOD: method, rec.PRESET: "demo", rec.PROTOCOL: "fresh"})
        mlflow.log_params(
            {
                rec.LANGUAGES: rec.languages_param(list(LANGUAGES)),
                rec.TASKS: rec.tasks_param({"generation": list(LANGUAGES)}),
                rec.SEED: "42",
                rec.TRAINABLE_PARAMS: "1000",
                rec.TRAINABLE_SHARE: "0.01",
                rec.METHOD_NAME: method,
                **signatures,
                **{rec.fingerprint_param(lang): "f" * 64 for lang in LANGUAGES},
            }
        )
        for lang in LANGUAGES:
            scope = rec.scope("generation", lang)
            registered = rec.registered_name(register_as, scope) if register_as else None
            refs = REFS[lang]
            preds = PREDICTIONS[predictions](refs)
            table = pd.DataFrame(
                {"id": [f"{lang}-{i}" for i in range(N)], "reference": refs, "prediction": preds}
            )
            for name in METRICS:
                result = get_metric(name).compute(preds, refs, lang)
                table[name] = result.per_example
                mlflow.log_metric(rec.metric("generation", lang, name), result.corpus)
            mlflow.log_table(table, artifact_file=rec.examples_table("generation", lang))
            info = mlflow.pyfunc.log_model(
                name=_model_name(lang),
                python_model=_Echo(),
                step=rec.MODEL_STEP,
                registered_model_name=registered,
            )
            mlflow.set_tag(rec.model_uri_tag("generation", lang), info.model_uri)
    return run.info.run_id


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory):
    """Two methods' runs whose models are registered as codegen-generation-<lang>, one store."""
    tmp = tmp_path_factory.mktemp("promote")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking_utils, "_tracking_uri", None)
        patch.setattr(fluent, "_active_experiment_id", None)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("promote")
        runs = {
            "lora": _log_run("lora", "half_exact", register_as="codegen"),
            "ffn_expansion": _log_run("ffn_expansion", "all_close", register_as="codegen"),
        }
        yield {"runs": runs, "tmp": tmp, "uri": uri}


def _compare(store: dict, *options: str) -> None:
    out = store["tmp"] / "report"
    assert cli.main(["compare", "--experiment", "promote", "--out", str(out), *options]) == 0


def _promoted(client: MlflowClient, lang: str, alias: str):
    return client.get_model_version_by_alias(
        rec.registered_name("codegen", rec.scope("generation", lang)), alias
    )


def _newest_comparison(client: MlflowClient) -> str:
    experiment = client.get_experiment_by_name("promote").experiment_id
    found = client.search_runs(
        [experiment],
        f"tags.`{rec.KIND}` = '{rec.COMPARISON_KIND}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0].info.run_id


def test_promote_points_the_alias_at_the_best_method_by_the_metric(compared: dict, capsys):
    client = MlflowClient()
    runs = compared["runs"]
    # By exact_match (higher is better) lora is best, by edit_distance (lower is better) the
    # other: the alias moves, and each time the version says which comparison chose it.
    for metric, best in (("exact_match", "lora"), ("edit_distance", "ffn_expansion")):
        _compare(compared, "--promote", "production", "--promote-metric", metric)
        comparison = _newest_comparison(client)
        for lang in LANGUAGES:
            version = _promoted(client, lang, "production")
            assert version.run_id == runs[best], (metric, lang)
            assert version.tags[rec.PROMOTED_BY] == comparison
            assert version.tags[rec.PROMOTED_METRIC].startswith(f"{metric}=")
        assert (
            f"codegen-generation-python@production -> version {version.version}"
            in capsys.readouterr().out
        )
    # Without --promote-metric: the report's primary metric, BLEU.
    _compare(compared, "--promote", "candidate")
    by_bleu = {
        method: client.get_run(run_id).data.metrics[rec.metric("generation", "python", "bleu")]
        for method, run_id in runs.items()
    }
    assert by_bleu["lora"] != by_bleu["ffn_expansion"]
    assert _promoted(client, "python", "candidate").run_id == runs[max(by_bleu, key=by_bleu.get)]
    # Another alias stays where its own promotion put it.
    assert _promoted(client, "python", "production").run_id == runs["ffn_expansion"]


def test_an_unregistered_best_model_is_registered_only_under_a_given_name(
    mlflow_store: str, tmp_path: Path, capsys
):
    mlflow.set_experiment("promote")
    run_id = _log_run("lora", "half_exact")  # its models are not in the registry
    client = MlflowClient()
    out = ["--experiment", "promote", "--out", str(tmp_path / "report")]
    line = refused(["compare", *out, "--promote", "production"], capsys)
    assert "is not in the Model Registry: pass --register-as NAME" in line
    assert client.search_registered_models() == []
    assert len(_all_runs(client)) == 1  # no comparison run was logged either
    assert cli.main(["compare", *out, "--promote", "production", "--register-as", "codegen"]) == 0
    assert "(registered now)" in capsys.readouterr().out
    for lang in LANGUAGES:
        version = _promoted(client, lang, "production")
        assert (str(version.version), version.run_id) == ("1", run_id)
    # Promoted again under the same name: the version it has, not a second one.
    assert cli.main(["compare", *out, "--promote", "staging", "--register-as", "codegen"]) == 0
    assert str(_promoted(client, "python", "staging").version) == "1"
    assert len(client.search_model_versions("name = 'codegen-generation-python'")) == 1


def _all_runs(client: MlflowClient) -> list:
    return client.search_runs([client.get_experiment_by_name("promote").experiment_id])


@pytest.mark.parametrize(
    "options, named",
    [
        (["--promote", "latest"], "'latest' and v<number> are MLflow's own names"),
        (["--promote", "v2"], "'latest' and v<number> are MLflow's own names"),
        (["--promote", "in production"], "an alias is 1-255 letters, digits"),
        (["--promote", "production", "--promote-metric", "bleuu"], "did you mean 'bleu'"),
        (["--promote", "production", "--promote-metric", "meteor"], "table has no meteor"),
        (["--promote-metric", "bleu"], "--promote-metric is an option of --promote ALIAS"),
        (["--register-as", "codegen"], "--register-as is an option of --promote ALIAS"),
    ],
)
def test_bad_promotions_are_refused_in_one_line_and_change_nothing(
    compared: dict, capsys, options: list[str], named: str
):
    client = MlflowClient()
    before = (len(_all_runs(client)), _registry(client))
    line = refused(
        ["compare", "--experiment", "promote", "--out", str(compared["tmp"] / "r")] + options,
        capsys,
    )
    assert named in line
    assert (len(_all_runs(client)), _registry(client)) == before


def _registry(client: MlflowClient) -> list:
    return sorted(
        (v.name, v.version, tuple(sorted(v.aliases)), tuple(sorted(v.tags.items())))
        for v in client.search_model_versions()
    )


def test_a_run_without_a_logged_model_cannot_be_promoted(mlflow_store: str):
    from benchmark.model_registry import model_id_of

    mlflow.set_experiment("promote")
    with mlflow.start_run() as run:
        mlflow.set_tag(rec.METHOD, "lora")
    with pytest.raises(UsageError, match="has no logged python model"):
        model_id_of(MlflowClient(), run.info.run_id, "python")
