"""Shared fixtures: small CodeSearchNet files in both schemas, written to a temp folder."""

from __future__ import annotations

import gzip
import json
import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")

REPO = Path(__file__).resolve().parent.parent
CODET5_CONFIG = REPO / "tests" / "fixtures" / "codet5-small-config.json"


def python_function(i: int) -> tuple[str, str]:
    """(code with its docstring, the docstring) for a distinct small Python function."""
    doc = f"Return the sum of the first {i} squares of the values.\n\n    Extra details here."
    code = (
        f"def sum_squares_{i}(values):\n"
        f'    """{doc}"""\n'
        "    total = 0\n"
        f"    for v in values[:{i}]:\n"
        "        total += v * v\n"
        "    return total\n"
    )
    return code, doc


def javascript_function(i: int) -> tuple[str, str]:
    doc = f"Multiply every element of the array by {i} and return the result."
    code = textwrap.dedent(
        f"""\
        function scale{i}(items) {{
          var out = [];
          for (var j = 0; j < items.length; j++) {{
            out.push(items[j] * {i});
          }}
          return out;
        }}"""
    )
    return code, doc


def raw_row(language: str, i: int, split: str) -> dict:
    maker = python_function if language == "python" else javascript_function
    code, doc = maker(i)
    return {
        "repo": f"example/{language}",
        "path": f"src/module_{i % 7}.{'py' if language == 'python' else 'js'}",
        "func_name": f"fn_{i}",
        "original_string": code,
        "language": language,
        "code": code,
        "code_tokens": code.split(),
        "docstring": textwrap.dedent(doc),
        "docstring_tokens": doc.split(),
        "sha": "0" * 40,
        "url": f"https://example.invalid/{language}/{i}",
        "partition": {"train": "train", "validation": "valid", "test": "test"}[split],
    }


def hf_row(language: str, i: int, split: str) -> dict:
    raw = raw_row(language, i, split)
    return {
        "repository_name": raw["repo"],
        "func_path_in_repository": raw["path"],
        "func_name": raw["func_name"],
        "whole_func_string": raw["original_string"],
        "language": language,
        "func_code_string": raw["code"],
        "func_code_tokens": raw["code_tokens"],
        "func_documentation_string": raw["docstring"],
        "func_documentation_tokens": raw["docstring_tokens"],
        "split_name": raw["partition"],
        "func_code_url": raw["url"],
    }


SIZES = {"train": 40, "validation": 12, "test": 12}


def _ids(split: str) -> range:
    offset = {"train": 0, "validation": 1000, "test": 2000}[split]
    return range(offset + 3, offset + 3 + SIZES[split])


def write_csn_tree(root: Path, languages=("python", "javascript")) -> Path:
    """The original release layout: <lang>/final/jsonl/{train,valid,test}/*.jsonl.gz."""
    for language in languages:
        for split, folder in (("train", "train"), ("validation", "valid"), ("test", "test")):
            target = root / language / "final" / "jsonl" / folder
            target.mkdir(parents=True, exist_ok=True)
            with gzip.open(target / f"{language}_{folder}_0.jsonl.gz", "wt") as fh:
                for i in _ids(split):
                    fh.write(json.dumps(raw_row(language, i, split)) + "\n")
    return root


def write_hf_parquet(root: Path, languages=("python", "javascript")) -> Path:
    """Hugging Face schema, one parquet file per language and split."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    for language in languages:
        for split in SIZES:
            rows = [hf_row(language, i, split) for i in _ids(split)]
            pd.DataFrame(rows).to_parquet(root / f"{language}-{split}.parquet")
    return root


@pytest.fixture
def csn_tree(tmp_path: Path) -> Path:
    return write_csn_tree(tmp_path / "csn")


@pytest.fixture
def hf_parquet(tmp_path: Path) -> Path:
    return write_hf_parquet(tmp_path / "hf")


_MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)


def _mlflow_state() -> tuple[dict, object, object]:
    """MLflow's process-wide choices: its env variables, tracking URI and active experiment."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    env = {name: os.environ.get(name) for name in _MLFLOW_ENV}
    return env, utils._tracking_uri, fluent._active_experiment_id


def _restore_mlflow_state(state: tuple[dict, object, object]) -> None:
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    env, utils._tracking_uri, fluent._active_experiment_id = state
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True, scope="module")
def _isolated_mlflow_state_per_module():
    """The same for a module's own module-scoped fixtures (set up before any test's snapshot):
    what they set, `mlflow.set_experiment`'s exported MLFLOW_EXPERIMENT_ID among it, ends with
    the module."""
    saved = _mlflow_state()
    yield
    _restore_mlflow_state(saved)


@pytest.fixture(autouse=True)
def _isolated_mlflow_state():
    """Each test leaves MLflow's global choices as it found them.

    `mlflow.set_tracking_uri` and `mlflow.set_experiment` (which also exports
    MLFLOW_EXPERIMENT_ID) outlive the test that calls them; a later test on a fresh store then
    starts its runs in an experiment id that store does not have, or reads the wrong store.
    """
    import mlflow

    saved = _mlflow_state()
    yield
    while mlflow.active_run():
        mlflow.end_run()
    _restore_mlflow_state(saved)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite tracking store for one test."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run():
        mlflow.end_run()


SMALL_RUN = {
    "data.train_size": "32",
    "data.val_size": "8",
    "data.eval_size": "6",
    "train.epochs": "1",
    "train.batch_size": "8",
    "eval.max_new_tokens": "12",
}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    """One small lora run on both languages, shared by the tests that read a finished run."""
    import mlflow

    from benchmark.config import make_config
    from benchmark.runner import run

    root = tmp_path_factory.mktemp("demo_run")
    tree = write_csn_tree(root / "csn")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    saved = _mlflow_state()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        config = make_config("lora", "demo", {**SMALL_RUN, "data.source": str(tree)})
        run_id = run(config)
    finally:
        os.chdir(cwd)
        # The run made its experiment active (and exported MLFLOW_EXPERIMENT_ID): left so, the
        # next test's fresh store would start its runs in an experiment it does not have.
        _restore_mlflow_state(saved)
    yield {"uri": uri, "run_id": run_id, "root": root}
