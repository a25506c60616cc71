"""The comparison report end to end on synthetic runs in a temporary sqlite tracking store."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import mlflow.tracking._tracking_service.utils as tracking_utils
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import fluent

from core import record as rec
from metrics import get_metric
from reports.compare import build_report

N = 40
REFS = {
    "python": [f"def f{i}(x):\n    return x + {i} * x\n" for i in range(N)],
    "javascript": [f"function f{i}(x) {{\n  return x + {i} * x;\n}}" for i in range(N)],
}
HALF = [1.0 if i % 2 else 0.0 for i in range(N)]
ALL_RIGHT = [1.0] * N
SIGNATURES = {
    "metric.bleu.signature": get_metric("bleu").signature(),
    "metric.exact_match.signature": get_metric("exact_match").signature(),
    "metric.edit_distance.signature": get_metric("edit_distance").signature(),
}


def _table(language: str, correct: list[float]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-example table as the harness logs it, and the corpus values of its metrics."""
    refs = REFS[language]
    preds = [r if ok else "return None" for r, ok in zip(refs, correct)]
    table = pd.DataFrame(
        {
            "id": [f"{language}-{i}" for i in range(N)],
            "language": language,
            "docstring": [f"Scale x by {i}." for i in range(N)],
            "reference": refs,
            "prediction": preds,
        }
    )
    corpus = {}
    for name in ("bleu", "exact_match", "edit_distance"):
        result = get_metric(name).compute(preds, refs, language)
        table[name] = result.per_example
        corpus[name] = result.corpus
    return table, corpus


def _log_run(
    method: str,
    correct: list[float],
    *,
    languages: tuple[str, ...] = ("python", "javascript"),
    seed: int = 42,
    fingerprint: str = "f" * 64,
    signatures: dict[str, str] | None = None,
    preset: str = "demo",
    protocol: str = "fresh",
    status: str = "FINISHED",
    train_time: float = 10.0,
    extra_tags: dict[str, str] | None = None,
    load: tuple[float, float] | None = None,
    family: str = "",  # "": not logged, as by runs from before `model.family` was recorded
) -> str:
    with mlflow.start_run(run_name=f"{method}-{preset}") as run:
        # The run record as the runner writes it (core.record names every key).
        mlflow.set_tags(
            {rec.METHOD: method, rec.PRESET: preset, rec.PROTOCOL: protocol, rec.GIT_COMMIT: "abc"}
            | (extra_tags or {})
        )
        params = {
            rec.LANGUAGES: rec.languages_param(list(languages)),
            rec.TASKS: rec.tasks_param({"generation": list(languages)}),
            rec.SEED: str(seed),
            rec.TRAINABLE_PARAMS: "49152",
            rec.TRAINABLE_SHARE: "0.0247",
            rec.METHOD_NAME: method,
            **(signatures or SIGNATURES),
        }
        params |= {rec.fingerprint_param(lang): fingerprint for lang in languages}
        if family:
            params[rec.MODEL_FAMILY] = family
        mlflow.log_params(params)
        if status == "FAILED":
            mlflow.set_tag(rec.ERROR, "RuntimeError: CUDA out of memory")
    if status == "FAILED":
        mlflow.tracking.MlflowClient().set_terminated(run.info.run_id, "FAILED")
        return run.info.run_id
    with mlflow.start_run(run_id=run.info.run_id):
        for lang in languages:
            table, corpus = _table(lang, correct)
            mlflow.log_table(table, artifact_file=rec.examples_table("generation", lang))
            values = {rec.metric("generation", lang, name): value for name, value in corpus.items()}
            values |= {
                rec.metric("generation", lang, "train_time_s"): train_time,
                rec.metric("generation", lang, "peak_memory_mb"): 1400.0,
                rec.metric("generation", lang, "tokens_per_s"): 9800.0,
                rec.metric("generation", lang, "samples_per_s"): 60.0,
                rec.metric("generation", lang, "skipped_steps"): 0.0,
                rec.metric("generation", lang, "trained_weights_bytes"): 203_000.0,
                rec.metric("generation", lang, "generation_time_s"): 4.0,
            }
            if load is not None:  # the machine's load average during training, and its CPUs
                values |= {
                    rec.metric("generation", lang, rec.LOAD_AVERAGE): load[0],
                    rec.metric("generation", lang, rec.CPU_COUNT): load[1],
                }
            if protocol == "sequential" and lang == "python":
                values |= {
                    rec.final_metric("generation", "python", "bleu"): corpus["bleu"] / 2,
                    rec.forgetting_metric("generation", "python", "bleu"): corpus["bleu"] / 2,
                    rec.backward_transfer_metric("generation", "bleu"): -corpus["bleu"] / 2,
                }
            mlflow.log_metrics(values)
            for step in range(1, 6):
                key = rec.metric("generation", lang, "train/loss")
                mlflow.log_metric(key, 4.0 / step + 0.1 * seed % 3, step=step)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A tracking store holding every kind of run the report must handle, and the report."""
    tmp = tmp_path_factory.mktemp("cmp")
    with pytest.MonkeyPatch.context() as patch:
        # Leave the session's tracking URI and active experiment as they were.
        patch.setattr(tracking_utils, "_tracking_uri", None)
        patch.setattr(fluent, "_active_experiment_id", None)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("cmp")
        other_signatures = SIGNATURES | {"metric.exact_match.signature": "exact_match|strip:no"}
        ids = {
            "lora": _log_run("lora", HALF),
            # Clearly better than lora everywhere.
            "ffn_expansion": _log_run("ffn_expansion", ALL_RIGHT),
            # Exactly lora's predictions, two seeds with different train times.
            "full_layer": _log_run("full_layer", HALF, train_time=10.0),
            "full_layer_43": _log_run("full_layer", HALF, seed=43, train_time=12.0),
            # Python only, same data: in the python table only.
            "hybrid_python": _log_run("hybrid", HALF, languages=("python",)),
            "other_data": _log_run("hybrid", ALL_RIGHT, fingerprint="0" * 64),
            "other_signature": _log_run("hybrid", ALL_RIGHT, signatures=other_signatures),
            "other_preset": _log_run("hybrid", ALL_RIGHT, preset="seed"),
            "failed": _log_run("hybrid", HALF, status="FAILED"),
            "sequential": _log_run("lora", HALF, protocol="sequential"),
            # An earlier report's run: never read as a benchmark run.
            "old_comparison": _log_run(
                "bogus", ALL_RIGHT, extra_tags={"adaptbench.kind": "comparison"}
            ),
        }
        out = build_report(experiment="cmp", out_dir=tmp / "out", n_boot=300, tracking_uri=uri)
        yield {"uri": uri, "ids": ids, "out": out, "tmp": tmp}


def _section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]


def _table_rows(section: str) -> list[list[str]]:
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no header
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_one_row_per_method_per_language(store):
    text = (store["out"] / "comparison.md").read_text()
    expected = {
        "python": ["ffn_expansion", "full_layer", "hybrid", "lora"],
        "javascript": ["ffn_expansion", "full_layer", "lora"],
    }
    for language, methods in expected.items():
        for table in ("costs", "quality"):
            rows = _table_rows(_section(text, f"### generation/{language}: {table}"))
            assert [r[0] for r in rows] == methods, (language, table)
    assert "bogus" not in text and store["ids"]["old_comparison"] not in text


def test_every_metric_has_an_interval_and_the_corpus_value(store):
    text = (store["out"] / "comparison.md").read_text()
    rows = _table_rows(_section(text, "### generation/python: quality"))
    for row in rows:
        assert len(row) == 4  # method, bleu, edit_distance, exact_match
        for cell in row[1:]:
            point, low, high = map(float, re.match(r"(\S+) \[(\S+), (\S+)\]", cell).groups())
            assert low <= point <= high
    lora = next(r for r in rows if r[0] == "lora")
    assert float(lora[3].split()[0]) == pytest.approx(0.5)  # exact_match of HALF
    assert "recomputed from the examples" not in text  # corpus BLEU matches the logged one


def test_seeds_are_pooled_with_mean_and_std(store):
    text = (store["out"] / "comparison.md").read_text()
    costs = _table_rows(_section(text, "### generation/python: costs"))
    full = next(r for r in costs if r[0] == "full_layer")
    assert full[1] == "42, 43" and "11 ± 1" in full
    quality = _table_rows(_section(text, "### generation/python: quality"))
    assert "seeds" in next(r for r in quality if r[0] == "full_layer")[1]


def test_significance_marks_a_clear_difference_and_not_an_identical_one(store):
    text = (store["out"] / "comparison.md").read_text()
    for language in ("python", "javascript"):
        quality = {
            r[0]: r for r in _table_rows(_section(text, f"### generation/{language}: quality"))
        }
        assert all("▲*" in cell for cell in quality["ffn_expansion"][1:])  # all 3 metrics
        assert not any("*" in cell for cell in quality["full_layer"][1:])
        assert not any("*" in cell for cell in quality["lora"][1:])  # the reference itself
        diffs = {
            r[0]: r
            for r in _table_rows(_section(text, f"### generation/{language}: difference from lora"))
        }
        assert set(diffs) == set(quality) - {"lora"}
        assert "+0.5*" in diffs["ffn_expansion"][3]  # exact_match 1.0 vs 0.5
        assert re.search(r"p=0\.0", diffs["ffn_expansion"][3])
        assert all(cell.startswith("0 [0, 0] p=1.000") for cell in diffs["full_layer"][1:])


def test_left_out_runs_are_listed_with_the_reason(store):
    text = (store["out"] / "comparison.md").read_text()
    left = text.split("## Left out", 1)[1]
    ids = store["ids"]
    lines = {
        run: next(line for line in left.splitlines() if ids[run] in line)
        for run in ids
        if ids[run] in left
    }
    assert "data fingerprint of generation/python differs" in lines["other_data"]
    assert "metric signature differs: exact_match" in lines["other_signature"]
    assert "preset 'seed'" in lines["other_preset"]
    assert "FAILED" in lines["failed"] and "CUDA out of memory" in lines["failed"]
    for kept in ("lora", "ffn_expansion", "full_layer", "full_layer_43", "hybrid_python"):
        assert kept not in lines
    assert "sequential" not in lines  # in the forgetting table instead
    # A left-out run is never beside the others.
    quality = _section(text, "### generation/python: quality")
    assert quality.count("| hybrid") == 1


def test_forgetting_table_for_sequential_runs(store):
    text = (store["out"] / "comparison.md").read_text()
    rows = _table_rows(_section(text, "## Forgetting (sequential protocol)"))
    assert [r[:3] for r in rows] == [["lora", "generation/python", "1"]]
    assert "→" in rows[0][3]
    assert (store["out"] / "forgetting.png").is_file()


def test_html_is_self_contained(store):
    page = (store["out"] / "comparison.html").read_text()
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page)
    assert references, "the plots should be embedded"
    assert all(ref.startswith("data:") or ref.startswith("#") for ref in references)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert "@import" not in page
    for png in (
        "metrics_generation_python",
        "pareto_generation_python",
        "loss_generation_python",
        "metrics_generation_javascript",
    ):
        assert (store["out"] / f"{png}.png").is_file()
    # The same tables as the markdown.
    markdown = (store["out"] / "comparison.md").read_text()
    assert page.count("<table>") == markdown.count("\n|---")


def test_markdown_links_the_plots_relatively(store):
    text = (store["out"] / "comparison.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "metrics_generation_python.png" in links and "forgetting.png" in links
    assert all((store["out"] / link).is_file() for link in links)


def test_comparison_is_logged_as_its_own_run(store):
    client = mlflow.tracking.MlflowClient(store["uri"])
    experiment = client.get_experiment_by_name("cmp")
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`adaptbench.kind` = 'comparison'",
    )
    runs = [r for r in runs if "method" not in r.data.tags]  # not the planted old one
    assert len(runs) == 1
    names = {Path(a.path).name for a in client.list_artifacts(runs[0].info.run_id, "comparison")}
    assert {"comparison.md", "comparison.html", "metrics_generation_python.png"} <= names
    assert store["ids"]["ffn_expansion"] in runs[0].data.tags["compared_runs"]


def test_a_second_report_ignores_the_first_and_is_reproducible(store):
    out = build_report(
        experiment="cmp",
        out_dir=store["tmp"] / "again",
        n_boot=300,
        tracking_uri=store["uri"],
        log_to_mlflow=False,
    )
    first = (store["out"] / "comparison.md").read_text()
    assert (out / "comparison.md").read_text() == first


def test_filter_string_and_no_comparable_runs(store, tmp_path):
    out = build_report(
        experiment="cmp",
        filter_string="tags.method = 'hybrid' and tags.preset = 'nothing'",
        out_dir=tmp_path / "empty",
        tracking_uri=store["uri"],
        log_to_mlflow=False,
    )
    assert "No finished, comparable benchmark run" in (out / "comparison.md").read_text()
    assert (out / "comparison.html").is_file()


def test_unknown_experiment_is_a_clear_error(store, tmp_path):
    with pytest.raises(ValueError, match="no experiment 'missing'"):
        build_report(experiment="missing", out_dir=tmp_path, tracking_uri=store["uri"])


def test_intervals_shrink_with_more_examples_end_to_end(tmp_path):
    """The same per-example distribution on 4x the examples gives a narrower interval."""
    from reports.stats import bootstrap_ci

    values = np.array(HALF)
    _, low, high = bootstrap_ci(values, n_boot=300)
    _, low_4, high_4 = bootstrap_ci(np.tile(values, 4), n_boot=300)
    assert (high_4 - low_4) < (high - low)


def test_readme_plot_script_copies_the_main_plot(store, tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_readme_plot.py"
    spec = importlib.util.spec_from_file_location("make_readme_plot", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--experiment", "cmp", "--tracking-uri", store["uri"], "--n-boot", "50"]
    argv += ["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs")]
    assert module.main(argv) == 0
    assert (tmp_path / "docs" / "demo-metrics-python.png").read_bytes() == (
        tmp_path / "out" / "metrics_generation_python.png"
    ).read_bytes()


@pytest.fixture(scope="module")
def reruns(tmp_path_factory: pytest.TempPathFactory):
    """The base, lora run twice with the same seed (the second time on a busy machine) and
    full_layer on an idle one; the report with no reference named."""
    tmp = tmp_path_factory.mktemp("reruns")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking_utils, "_tracking_uri", None)
        patch.setattr(fluent, "_active_experiment_id", None)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("reruns")
        python = ("python",)
        ids = {
            "none": _log_run("none", HALF, languages=python),
            "lora_first": _log_run("lora", ALL_RIGHT, languages=python, train_time=35.0),
            "lora_again": _log_run(
                "lora", HALF, languages=python, train_time=409.0, load=(5.9, 2.0)
            ),
            "full_layer": _log_run("full_layer", HALF, languages=python, load=(1.2, 2.0)),
        }
        out = build_report(
            experiment="reruns",
            out_dir=tmp / "out",
            n_boot=200,
            tracking_uri=uri,
            log_to_mlflow=False,
        )
        yield {"ids": ids, "text": (out / "comparison.md").read_text(), "out": out}


def test_a_rerun_of_the_same_method_and_seed_counts_once(reruns):
    """The newest run of lora seed 42 is the one shown; the first is under Left out."""
    costs = {r[0]: r for r in _table_rows(_section(reruns["text"], "### generation/python: costs"))}
    assert costs["lora"][1] == "42"  # not "42, 42"
    assert costs["lora"][5].startswith("409")  # the newer run's train time, not a mean
    quality = {
        r[0]: r for r in _table_rows(_section(reruns["text"], "### generation/python: quality"))
    }
    assert quality["lora"][3].startswith("0.5 ")  # exact_match of the newer run (HALF)
    assert "seeds" not in quality["lora"][1]  # one seed: no mean ± std across "seeds"
    left = reruns["text"].split("## Left out", 1)[1]
    (line,) = [line for line in left.splitlines() if reruns["ids"]["lora_first"] in line]
    assert "re-run of lora seed 42" in line and reruns["ids"]["lora_again"] in line
    assert reruns["ids"]["lora_again"] not in left.replace(line, "")


def test_without_a_reference_the_methods_are_tested_against_the_base(reruns):
    assert "### generation/python: difference from none" in reruns["text"]
    assert "difference from lora" not in reruns["text"]


def test_the_default_reference_is_one_rule_for_the_suite_and_compare():
    import yaml

    from benchmark.cli import build_parser
    from reports.compare import default_reference

    assert default_reference(["lora", "none", "full_layer"]) == "none"
    assert default_reference(["lora", "full_layer"]) == "lora"
    parser = build_parser()
    assert parser.parse_args(["compare"]).reference == ""  # build_report applies the rule
    assert parser.parse_args(["suite"]).reference == ""
    project = yaml.safe_load((Path(__file__).resolve().parents[2] / "MLproject").read_text())
    assert project["entry_points"]["compare"]["parameters"]["reference"]["default"] == ""


def test_costs_measured_on_a_busy_machine_are_marked(reruns):
    costs = {r[0]: r for r in _table_rows(_section(reruns["text"], "### generation/python: costs"))}
    section = _section(reruns["text"], "### generation/python: costs")
    header = next(line for line in section.splitlines() if line.startswith("| method"))
    titles = [cell.strip() for cell in header.strip("|").split(" | ")]
    marked = [title for title, cell in zip(titles, costs["lora"]) if cell.endswith(" †")]
    assert marked == ["train time (s)", "train tokens/s"]  # load 5.9 on 2 CPUs; not the memory
    for method in ("full_layer", "none"):  # load 1.2 on 2 CPUs; none recorded no load
        assert "†" not in "".join(costs[method])
    note = next(line for line in reruns["text"].splitlines() if line.startswith("† "))
    assert "measured under contention" in note and "lora: load 5.9 on 2 CPUs" in note
    assert "full_layer" not in note
    assert (reruns["out"] / "pareto_generation_python.png").is_file()


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory):
    """Both families' demos in one store: on T5 (no `model.family`, as runs logged before it
    was recorded) lora beats its base; on the Llama-style base lora is worse than its own base,
    which is better than T5's. Paired against the other family's base, both signs would flip."""
    tmp = tmp_path_factory.mktemp("families")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking_utils, "_tracking_uri", None)
        patch.setattr(fluent, "_active_experiment_id", None)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("families")
        python = ("python",)
        causal = {"preset": "demo-causal", "family": "llama", "languages": python}
        ids = {
            "t5_none": _log_run("none", HALF, languages=python),
            "t5_lora": _log_run("lora", ALL_RIGHT, languages=python, family="t5"),
            "llama_none": _log_run("none", ALL_RIGHT, **causal),
            "llama_lora": _log_run("lora", HALF, **causal),
            # The same family on another preset: left out of the Llama-style tables only.
            "llama_seed": _log_run("lora", ALL_RIGHT, **(causal | {"preset": "seed-causal"})),
        }
        out = build_report(experiment="families", out_dir=tmp / "out", n_boot=300, tracking_uri=uri)
        yield {"uri": uri, "ids": ids, "out": out, "text": (out / "comparison.md").read_text()}


def test_each_family_has_its_own_tables_tested_against_its_own_base(families):
    text = families["text"]
    t5 = {
        r[0]: r
        for r in _table_rows(_section(text, "### generation/python (T5): difference from none"))
    }
    llama = {
        r[0]: r
        for r in _table_rows(
            _section(text, "### generation/python (Llama-style): difference from none")
        )
    }
    assert set(t5) == set(llama) == {"lora"}
    header = _section(text, "### generation/python (T5): difference from none").splitlines()
    metrics = next(line for line in header if line.startswith("| method")).strip("|").split(" | ")
    column = [m.strip() for m in metrics].index("exact_match")
    assert t5["lora"][column].startswith("+0.5*")  # ALL_RIGHT - HALF on the same examples
    assert llama["lora"][column].startswith("-0.5*")  # HALF - ALL_RIGHT: its own base
    for family in ("T5", "Llama-style"):
        costs = _table_rows(_section(text, f"### generation/python ({family}): costs"))
        assert sorted(row[0] for row in costs) == ["lora", "none"]
    assert "## generation/python\n" not in text  # no table mixes the two families
    assert "preset `demo, demo-causal`" in text
    assert "never side by side" in text


def test_each_family_has_its_own_plots_and_left_out_runs(families):
    out, ids, text = families["out"], families["ids"], families["text"]
    for family in ("t5", "llama"):
        for kind in ("metrics", "pareto", "loss"):
            assert (out / f"{kind}_{family}_generation_python.png").is_file()
    assert "(Llama-style): each metric by method" in text  # the plots' alt text
    left = text.split("## Left out", 1)[1]
    (line,) = [line for line in left.splitlines() if ids["llama_seed"] in line]
    assert "preset 'seed-causal', the compared runs use 'demo-causal'" in line
    for key in ("t5_none", "t5_lora", "llama_none", "llama_lora"):
        assert ids[key] not in left
    client = mlflow.tracking.MlflowClient(families["uri"])
    (comparison,) = client.search_runs(
        [client.get_experiment_by_name("families").experiment_id],
        f"tags.`{rec.KIND}` = '{rec.COMPARISON_KIND}'",
    )
    compared = set(comparison.data.tags[rec.COMPARED_RUNS].split(","))
    assert compared == {ids[k] for k in ("t5_none", "t5_lora", "llama_none", "llama_lora")}


def _family_section(family: str, bleu: float, fingerprint: str = "f" * 64):
    """A report table of one family's lora run with a BLEU of `bleu`, as `summarise` builds it."""
    from types import SimpleNamespace

    from reports.summary import LanguageSection, MethodRow

    run = SimpleNamespace(
        run_id=f"{family}-run",
        params={},
        metrics={rec.metric("generation", "python", "bleu"): bleu},
        start_time=1,
    )
    row = MethodRow("lora", [run], {"bleu": SimpleNamespace(point=bleu)}, {}, (1, 0), (0.1, 0))
    return LanguageSection(
        "generation/python", fingerprint, [row], ["bleu"], {}, [], False, family=family
    )


def test_promotion_takes_the_best_family_and_refuses_families_on_other_data():
    from reports.promote import Promotion
    from reports.records import ReportError

    promotion = Promotion("champion")
    for sections, best in (
        ([_family_section("t5", 3.0), _family_section("llama", 5.0)], "llama-run"),
        ([_family_section("t5", 7.0), _family_section("llama", 5.0)], "t5-run"),
    ):
        (choice,) = promotion.choose(sections)
        assert choice.run_id == best
    other_data = [_family_section("t5", 3.0), _family_section("llama", 5.0, "0" * 64)]
    with pytest.raises(ReportError, match=r"different data.*model\.family"):
        promotion.choose(other_data)
