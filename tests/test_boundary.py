"""Bad input at the CLI boundary: one line naming the input and what to do, exit code 2, no
traceback, and the tracking store's existing runs unchanged."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from benchmark import cli
from benchmark.data import DataError, LoadStats, read_file
from tests.conftest import raw_row

TINY = [
    "--languages", "python", "--train-size", "4", "--eval-size", "2",
    "--set", "data.val_size=2", "--set", "train.max_steps=1", "--set", "eval.max_new_tokens=4",
]  # fmt: skip


def store_snapshot(uri: str) -> dict:
    """Every run of every experiment: status, params, metrics, tags (MLflow's own
    bookkeeping tags left out: none of them is written by a refusal either) and artifacts."""
    client = MlflowClient(uri)
    out = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
            out[run.info.run_id] = (
                run.info.status,
                run.info.end_time,
                dict(run.data.params),
                dict(run.data.metrics),
                dict(run.data.tags),
                artifacts,
            )
    return out


def refused(argv: list[str], capsys) -> str:
    """Run the CLI; assert it refused with one `error:` line and exit code 2; that line."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("error: "), err
    assert len([line for line in lines if line.startswith("error")]) == 1, err
    return lines[-1]


@pytest.fixture
def store(mlflow_store: str) -> str:
    """The test's store holding one earlier run, so that "unchanged" has something to keep."""
    mlflow.set_experiment("adaptbench")
    with mlflow.start_run() as run:
        mlflow.log_param("method", "lora")
        mlflow.log_metric("python/bleu", 1.5)
        mlflow.set_tag("method", "lora")
    assert MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"
    return mlflow_store


@pytest.mark.parametrize(
    "setting, named",
    [
        ("eval.batch_size=0", "eval.batch_size must be at least 1, got 0"),
        ("train.val_batch_size=0", "train.val_batch_size must be at least 1"),
        ("data.max_source_length=0", "data.max_source_length must be at least 1"),
        ("train.warmup_ratio=-0.5", "train.warmup_ratio must be at least 0 and below 1"),
        ("train.learning_rate=inf", "train.learning_rate must be a finite number"),
        ("train.max_grad_norm=0", "train.max_grad_norm must be above 0"),
        ("eval.problem_limit=-1", "eval.problem_limit must be at least 0"),
        ("tasks=generaton", "unknown task 'generaton'. Registered tasks: "),
        ("tasks=humaneval", "humaneval scores the model trained by generation: add it"),
        ("languages=python,python", "names a language twice"),
        ("languages=cobol", "languages: unknown cobol"),
    ],
)
def test_a_bad_setting_is_refused_before_any_run(store: str, capsys, setting: str, named: str):
    before = store_snapshot(store)
    tiny = TINY[2:] if setting.startswith("languages=") else TINY  # --languages would win
    line = refused(["run", "--method", "lora", *tiny, "--set", setting], capsys)
    assert named in line
    assert store_snapshot(store) == before  # no run was even started


def test_every_numeric_setting_declares_a_range():
    import dataclasses

    from benchmark.config import DataConfig, EvalConfig, ModelConfig, TrainConfig

    for cls in (DataConfig, ModelConfig, TrainConfig, EvalConfig):
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float") and f.name != "length_penalty":  # any finite penalty
                bounds = [f.metadata.get(k) for k in ("minimum", "maximum", "above", "below")]
                assert any(b is not None for b in bounds), f"{cls.__name__}.{f.name}"
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = json.dumps(raw_row("python", 1, "train")) + "\n"
    whole = gzip.compress((good * 400).encode())
    files = {
        "cut gzip": ("cut_train.jsonl.gz", whole[: len(whole) // 2], "not a complete, valid gzip"),
        "not gzip": ("plain_train.jsonl.gz", good.encode(), "not a complete, valid gzip"),
        "not parquet": ("rows_train.parquet", b"PAR1 this is no parquet", "not a readable parquet"),
        "random bytes": ("noise_train.jsonl", bytes(range(128, 256)) * 4, ":1: not UTF-8 text"),
        "latin-1": (
            "latin_train.jsonl",
            good.encode() + good.replace("Return", "R\u00e9turn").encode("latin-1"),
            ":2: not UTF-8 text",
        ),
    }
    out = {}
    for kind, (name, data, message) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        out[kind] = (path, message)
    return out


@pytest.mark.parametrize("kind", ["cut gzip", "not gzip", "not parquet", "random bytes", "latin-1"])
def test_an_unreadable_data_file_is_named(store: str, tmp_path: Path, capsys, kind: str):
    path, message = _bad_files(tmp_path)[kind]
    before = store_snapshot(store)
    line = refused(["run", "--method", "lora", *TINY, "--set", f"data.source={path}"], capsys)
    assert str(path) in line and message in line
    # The refusal is a new failed run that says why; the earlier run is as it was.
    after = store_snapshot(store)
    assert {k: after[k] for k in before} == before
    (new,) = set(after) - set(before)
    status, *_, tags, _ = after[new]
    assert status == "FAILED" and message in tags["error"]


def test_skip_bad_rows_skips_and_counts_undecodable_lines(tmp_path: Path):
    path, _ = _bad_files(tmp_path)["latin-1"]
    with pytest.raises(DataError, match="skip_bad_rows"):
        list(read_file(path, skip_bad_rows=False, stats=LoadStats()))
    stats = LoadStats()
    rows = list(read_file(path, skip_bad_rows=True, stats=stats))
    assert len(rows) == 1 and stats.bad_rows == 1


def test_a_byte_order_mark_is_not_data(tmp_path: Path):
    path = tmp_path / "bom_train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(raw_row("python", 1, "train")) + "\n").encode())
    (row,) = read_file(path, skip_bad_rows=False, stats=LoadStats())
    assert row.split == "train"


@pytest.mark.parametrize(
    "content, named",
    [
        (
            "{not json",
            "is not valid JSON (Expecting property name enclosed in double quotes at line 1",
        ),
        ("[1, 2]", "holds a JSON list, not an object"),
        (
            '{"d_model": "wide", "num_heads": 4}',
            "not a usable T5 config (Validation error for field 'd_model'",
        ),
        ('{"d_model": -8}', "cannot build a model from this config"),
    ],
)
def test_a_bad_model_config_file_is_named(store: str, tmp_path: Path, capsys, content, named):
    path = tmp_path / "model.json"
    path.write_text(content)
    line = refused(["run", "--method", "lora", *TINY, "--set", f"model.name=config:{path}"], capsys)
    assert str(path) in line and named in line


@pytest.mark.parametrize(
    "content, named",
    [
        ("{not json", "is not valid JSON"),
        ('{"n_embd": 64}', "has no model_type"),
        ('{"model_type": "bart"}', "model type 'bart', which no supported family covers: use"),
        ('{"model_type": "no-such-model"}', "transformers cannot read it"),
    ],
)
def test_methods_model_config_errors_are_one_line(tmp_path: Path, capsys, content, named):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert named in refused(["methods", "--model-config", str(path)], capsys)


def test_compare_on_a_missing_experiment_is_one_line(store: str, capsys):
    line = refused(["compare", "--experiment", "no-such-experiment"], capsys)
    assert "no experiment 'no-such-experiment'" in line


@pytest.mark.parametrize(
    "config_json, named",
    [
        ('{"peft_type": "NOPE"}', "unknown peft_type 'NOPE'; PEFT knows"),
        ('{"peft_type": "LORA", "r": 4, "target_modules": ["nowhere"]}', "nowhere"),
        ('{"peft_type": "LORA", "r": -3, "target_modules": ["q"]}', "r"),
        ('{"peft_type": "LORA", "lora_alfa": 3}', "invalid PEFT config"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_a_peft_config_peft_refuses_is_one_line(store: str, capsys, config_json, named):
    before = store_snapshot(store)
    argv = ["run", "--method", "peft", *TINY, "--set", "model.name=tiny"]
    line = refused([*argv, "--set", f"method.config_json={config_json}"], capsys)
    assert line.startswith("error: method peft") and named in line
    after = store_snapshot(store)
    assert {k: after[k] for k in before} == before


def test_an_unforeseen_crash_is_one_line_and_debug_shows_it(monkeypatch, capsys):
    def crash(args):
        raise RuntimeError("something deep\nover two lines")

    monkeypatch.setattr(cli, "cmd_methods", crash)
    code = cli.main(["methods"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: unexpected RuntimeError: something deep over two lines")
    assert "rerun with --debug" in line
    with pytest.raises(RuntimeError, match="something deep"):
        cli.main(["methods", "--debug"])


def test_a_refusal_under_mlflow_run_is_recorded_on_its_run(store: str, capsys, monkeypatch):
    """`mlflow run` opens the run before the command starts: the error belongs on it."""
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("adaptbench")
    opened = client.create_run(experiment.experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", opened.info.run_id)
    assert cli.main(["run", "--epochs", "many"]) == 2  # argparse's refusal, in its own form
    assert "Traceback" not in capsys.readouterr().err
    assert (
        "--epochs: expected a positive integer"
        in client.get_run(opened.info.run_id).data.tags["error"]
    )
    second = client.create_run(experiment.experiment_id)
    monkeypatch.setenv("MLFLOW_RUN_ID", second.info.run_id)
    refused(["run", "--set", "eval.batch_size=0"], capsys)
    assert "eval.batch_size" in client.get_run(second.info.run_id).data.tags["error"]
    assert os.environ["MLFLOW_RUN_ID"] == second.info.run_id
