"""The README's results tables are generated from runs: scripts/docs_results.py.

The committed tables must be what --render makes of the committed JSON (a hand edit or a stale
table fails here), and --collect must write the numbers the runs give, unchanged on the way.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from core import record as rec
from metrics import get_metric

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import docs_results  # noqa: E402

N = 30
LANGUAGES = ("python", "javascript")


# The committed README and JSON


def test_readme_tables_are_what_render_makes_of_the_committed_json():
    results = docs_results.load_results()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert docs_results.readme_blocks(readme) == docs_results.rendered_blocks(results)
    assert docs_results.render(readme, results) == readme


def test_a_hand_edit_of_a_table_is_caught():
    results = docs_results.load_results()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = docs_results.readme_blocks(readme)["demo-table"]
    row = next(line for line in block.splitlines() if line.startswith("| javascript | lora |"))
    edited = readme.replace(row, row.replace("| javascript | lora | ", "| javascript | lora | 9"))
    assert edited != readme
    assert docs_results.render(edited, results) == readme


def _cell_numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", cell)]


def test_every_number_of_the_demo_table_is_the_json_number_rounded():
    results = docs_results.load_results()
    block = docs_results.readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    rows = [
        line for line in block["demo-table"].splitlines() if re.match(r"\| (python|java)", line)
    ]
    entries = [(lang, e) for lang, es in results["languages"].items() for e in es]
    assert len(rows) == len(entries) == 10  # the base and four methods on two languages
    for row, (language, entry) in zip(rows, entries):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == language
        assert entry["method"] in cells[1]
        for metric, cell in zip(docs_results.TABLE_SCORES, cells[2:]):
            score = entry["scores"][metric]
            expected = [score["logged"]]
            if metric in docs_results.TABLE_INTERVALS:
                expected += [score["low"], score["high"]]
            digits = 2 if metric in docs_results.TWO_DECIMALS else 3
            assert _cell_numbers(cell) == pytest.approx(expected, abs=0.51 * 10**-digits)
        differences = cells[2 + len(docs_results.TABLE_SCORES) :]
        for metric, cell in zip(docs_results.TABLE_DIFFERENCES, differences):
            difference = entry["vs_reference"].get(metric)
            if difference is None:
                assert entry["method"] == results["reference"] and cell == ""
                continue
            digits = 2 if metric in docs_results.TWO_DECIMALS else 3
            expected = [difference["value"], difference["low"], difference["high"]]
            assert _cell_numbers(cell) == pytest.approx(expected, abs=0.51 * 10**-digits)
            assert cell.endswith("*") == (difference["p_value"] < 0.05)


def test_the_committed_json_says_when_where_and_from_what_it_was_measured():
    results = docs_results.load_results()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", results["measured"])
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]
    commits = results["git_commit"]  # a list when HEAD moved while the suite ran
    for commit in commits if isinstance(commits, list) else [commits]:
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
    assert results["preset"] == "demo" and results["reference"] == "none"
    text = (REPO / "docs" / "results" / "demo.json").read_text(encoding="utf-8")
    assert json.dumps(json.loads(text), indent=2) + "\n" == text  # as write_results writes it


# --collect on a store built here


def _examples(language: str, method: str) -> tuple[list[str], list[str]]:
    if language == "python":
        refs = [f"def f{i}(x):\n    return x + {i} * x\n" for i in range(N)]
    else:
        refs = [f"function f{i}(x) {{\n  return x + {i} * x;\n}}" for i in range(N)]
    # The base gets a third right, lora those and a third more: a difference a bootstrap sees.
    right = (lambda i: i % 3 == 0) if method == "none" else (lambda i: i % 3 != 2)
    preds = [ref if right(i) else "return None" for i, ref in enumerate(refs)]
    return preds, refs


def _log_child(client: MlflowClient, experiment_id: str, parent: str, method: str, tmp: Path):
    tags = {
        "mlflow.parentRunId": parent,
        rec.METHOD: method,
        rec.PRESET: "demo",
        rec.PROTOCOL: "fresh",
        rec.GIT_COMMIT: "0123456789abcdef0123456789abcdef01234567",
    }
    run_id = client.create_run(experiment_id, run_name=f"{method} seed 42", tags=tags).info.run_id
    params = {
        rec.LANGUAGES: rec.languages_param(list(LANGUAGES)),
        rec.TASKS: rec.tasks_param({"generation": list(LANGUAGES)}),
        rec.SEED: "42",
        "version.torch": "2.13.0",
        "eval.num_beams": "4",
    }
    metrics = {rec.WALL_TIME: 30.0 if method == "none" else 60.0}
    for language in LANGUAGES:
        preds, refs = _examples(language, method)
        columns = {
            "id": [f"{language}-{i}" for i in range(N)],
            "language": [language] * N,
            "docstring": [f"Scale x by {i}." for i in range(N)],
            "reference": refs,
            "prediction": preds,
        }
        for name in docs_results.TABLE_SCORES:
            result = get_metric(name).compute(preds, refs, language)
            columns[name] = list(result.per_example)
            metrics[rec.metric("generation", language, name)] = result.corpus
            params[rec.signature_param(name)] = get_metric(name).signature()
        params[rec.fingerprint_param(language)] = language[0] * 64
        folder = tmp / run_id
        folder.mkdir(exist_ok=True)
        table = {"columns": list(columns), "data": [list(r) for r in zip(*columns.values())]}
        (folder / f"{language}_examples.json").write_text(json.dumps(table))
        client.log_artifact(run_id, str(folder / f"{language}_examples.json"), "eval/generation")
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A demo suite of two methods (the base and lora) on both languages, in a sqlite store."""
    tmp = tmp_path_factory.mktemp("docs-results")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("adaptbench", artifact_location=str(tmp / "art"))
    suite_tags = {rec.KIND: rec.SUITE_KIND, rec.PRESET: "demo"}
    parent = client.create_run(experiment_id, run_name="suite demo", tags=suite_tags)
    parent_id = parent.info.run_id
    children = {m: _log_child(client, experiment_id, parent_id, m, tmp) for m in ("none", "lora")}
    client.set_terminated(parent_id)
    return uri, children | {"suite": parent_id}


def test_collect_writes_the_runs_numbers_and_they_survive_the_json(store, tmp_path):
    uri, ids = store
    results = docs_results.collect(uri)
    assert results["suite_run_id"] == ids["suite"]
    assert results["git_commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert results["machine"]["torch"] == "2.13.0"
    assert results["times_s"]["none"] == 30.0 and results["times_s"]["lora"] == 60.0
    for language in LANGUAGES:
        base, lora = results["languages"][language]
        assert (base["method"], lora["method"]) == ("none", "lora")
        assert (base["run_id"], lora["run_id"]) == (ids["none"], ids["lora"])
        assert base["examples"] == lora["examples"] == N
        for entry in (base, lora):
            preds, refs = _examples(language, entry["method"])
            for name in docs_results.TABLE_SCORES:
                score = entry["scores"][name]
                result = get_metric(name).compute(preds, refs, language)
                assert score["logged"] == result.corpus
                assert score["low"] <= score["point"] <= score["high"]
                # The report recomputes BLEU from the texts and averages the pass rates: both
                # give back what the run logged. CodeBLEU's corpus value is not its mean.
                if name in ("bleu", "pass_rate"):
                    assert score["point"] == pytest.approx(result.corpus, rel=1e-9, abs=1e-12)
                else:
                    mean = sum(result.per_example) / N
                    assert score["point"] == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert base["vs_reference"] == {}
        for name in docs_results.TABLE_SCORES:
            difference = lora["vs_reference"][name]
            expected = lora["scores"][name]["point"] - base["scores"][name]["point"]
            assert difference["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
            assert 0 <= difference["p_value"] <= 1
        # Twice as many right on the same examples: the pass rate rises, significantly.
        assert lora["scores"]["pass_rate"]["point"] > base["scores"]["pass_rate"]["point"]
        assert lora["vs_reference"]["pass_rate"]["p_value"] < 0.05

    path = tmp_path / "demo.json"
    docs_results.write_results(results, path)
    assert docs_results.load_results(path) == results  # every float exactly as collected


def test_render_puts_the_collected_numbers_between_the_markers(store):
    uri, ids = store
    results = docs_results.collect(uri)
    text = (
        "# Title\n\nkept\n<!-- results:demo-table -->\nold table\n<!-- /results:demo-table -->\n"
        "also kept\n"
    )
    rendered = docs_results.render(text, results)
    assert rendered.startswith("# Title\n\nkept\n<!-- results:demo-table -->\n")
    assert rendered.endswith("\n<!-- /results:demo-table -->\nalso kept\n")
    assert "old table" not in rendered
    lora = results["languages"]["python"][1]
    pass_rate = lora["scores"]["pass_rate"]
    assert f"| python | lora | {lora['scores']['bleu']['logged']:.2f} [" in rendered
    assert f"{pass_rate['logged']:.3f} [{pass_rate['low']:.3f}, {pass_rate['high']:.3f}]" in (
        rendered
    )
    assert f"suite run `{ids['suite'][:8]}`" in rendered
    assert "(the method 1 min 0 s, the base's own run 30 s)" in rendered
    assert docs_results.render(rendered, results) == rendered  # rendering twice changes nothing


def test_a_readme_without_the_markers_is_refused_with_what_to_add():
    with pytest.raises(docs_results.ResultsError, match="<!-- results:demo-table -->"):
        docs_results.render("# no markers here\n", {})


def test_collect_without_a_finished_suite_says_to_run_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("adaptbench", str(tmp_path / "art"))
    with pytest.raises(docs_results.ResultsError, match="suite --preset demo"):
        docs_results.collect(uri)
