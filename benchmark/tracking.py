"""MLflow bookkeeping: params, buffered metrics, datasets, tables, versions, tags."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from benchmark.data import SAMPLE_DIR, Example, split_hub_source, to_records
from core import record as rec  # the run record's names

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "mlflow",
    "sacrebleu",
    "nltk",
    "rapidfuzz",
    "codebleu",
    "tree-sitter",
    "numpy",
)
MAX_PARAM_CHARS = 6000
# How a store says that a unique row was written by someone else first (SQLAlchemy stores
# directly; a tracking server passes the database's words on): SQLite, PostgreSQL, MySQL.
WRITE_RACE_MARKS = (
    "IntegrityError",
    "UNIQUE constraint failed",
    "duplicate key",
    "Duplicate entry",
)
WRITE_RACE_ATTEMPTS = 6

T = TypeVar("T")


def package_versions() -> dict[str, str]:
    """Versions of the packages that can change a number, plus Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: Path | None = None) -> str:
    """The checkout's commit (with `-dirty` when it has changes), or `unknown`."""
    cwd = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def log_params(params: dict[str, Any]) -> None:
    """Log params, skipping keys the run already holds with the same value."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params if run else {}
    fresh = {k: _param_value(v) for k, v in params.items()}
    fresh = {k: v for k, v in fresh.items() if existing.get(k) != v}
    items = list(fresh.items())
    for start in range(0, len(items), 90):  # MLflow takes at most 100 params per batch
        mlflow.log_params(dict(items[start : start + 90]))


def logged_through(run_id: str, keys: list[str]) -> dict[str, int]:
    """The last step each metric already has in the run (a resumed run skips those steps)."""
    client = MlflowClient()
    out = {}
    for key in keys:
        history = client.get_metric_history(run_id, key)
        if history:
            out[key] = max(m.step for m in history)
    return out


class MetricBuffer:
    """Collects step metrics and sends them in batches (one request per `flush_every`).

    `skip_through` maps a metric to the last step the run already holds: a resumed training
    does not log those steps twice.
    """

    def __init__(self, flush_every: int = 200, skip_through: dict[str, int] | None = None) -> None:
        self.flush_every = flush_every
        self.pending: list[Metric] = []
        self.skip_through = skip_through or {}

    def log(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        now = int(time.time() * 1000)
        for key, value in values.items():
            name = f"{prefix}{key}"
            if step <= self.skip_through.get(name, -1):
                continue
            self.pending.append(Metric(name, float(value), now, step))
        if len(self.pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        run = mlflow.active_run()
        if not self.pending or run is None:
            return
        client = MlflowClient()
        for start in range(0, len(self.pending), 1000):
            client.log_batch(run.info.run_id, metrics=self.pending[start : start + 1000])
        self.pending = []


def is_write_race(error: MlflowException) -> bool:
    """Whether `error` is another process having written the same unique row first."""
    if error.error_code == ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
        return True
    text = str(error)
    return any(mark in text for mark in WRITE_RACE_MARKS)


def retry_write_races(write: Callable[[], T]) -> T:
    """Run `write`, again when another process won a race to the same row.

    MLflow reads whether a dataset or an experiment exists and then writes it: runs started
    together (a suite's children, runs side by side) can all miss it, and all but one write
    breaks the unique constraint. The store rolls the losing write back whole, and the next try
    finds the winner's row. Any other error is raised at once.
    """
    for attempt in range(WRITE_RACE_ATTEMPTS):
        try:
            return write()
        except MlflowException as error:
            if attempt == WRITE_RACE_ATTEMPTS - 1 or not is_write_race(error):
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def set_experiment(name: str) -> str:
    """Make experiment `name` the active one, creating it if need be; its id.

    `mlflow.set_experiment` by name, when another process creates the same experiment between
    its lookup and its create, returns without making it active (MLflow 3.x): the next run
    would land in "Default". Here the experiment is found or created first (a lost race finds
    the winner's), then set by id.
    """
    client = MlflowClient()

    def find_or_create() -> str:
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else client.create_experiment(name)

    experiment_id = retry_write_races(find_or_create)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_dataset(
    examples: list[Example], name: str, source: str, language: str, split: str, context: str
) -> None:
    """Record the exact examples as an MLflow dataset input (schema, digest, profile)."""
    frame = pd.DataFrame(to_records(examples))
    with warnings.catch_warnings():
        # A local path matches MLflow's local source twice over; both readings are the same.
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        dataset = mlflow.data.from_pandas(
            frame, source=_dataset_source(source, language, split), name=name
        )
    retry_write_races(lambda: mlflow.log_input(dataset, context=context))


def _dataset_source(source: str, language: str, split: str) -> DatasetSource | str:
    # A plain path string resolves to MLflow's local artifact source.
    if source.startswith("hub:"):
        path, revision, _ = split_hub_source(source)  # the route ("via hub cache") is not one
        return HuggingFaceDatasetSource(path, config_name=language, split=split, revision=revision)
    if source == "sample":
        return str(SAMPLE_DIR / language)
    return source.removeprefix("local:")


def link_scores(model_uri: str, prefix: str, dataset: str) -> int:
    """Link the scores the active run logged under `prefix` (every metric that has a signature
    param, `<prefix><metric>`) to the logged model `model_uri` (`models:/<model id>`) and to the
    run's dataset input `dataset`; how many entries were linked."""
    if not model_uri.startswith("models:/"):
        return 0
    run = MlflowClient().get_run(mlflow.active_run().info.run_id)
    names = [rec.signature_of(param) for param in run.data.params]
    keys = [f"{prefix}{name}" for name in names if name and f"{prefix}{name}" in run.data.metrics]
    return link_to_model(model_uri.removeprefix("models:/"), keys, dataset)


def link_to_model(model_id: str, keys: Iterable[str], dataset: str = "") -> int:
    """Link metrics the active run holds to its logged model `model_id`, and to its dataset
    input named `dataset`: the experiment's Models tab then lists and ranks the model by them.
    Returns how many entries were linked.

    Each entry is sent again with the model's id (what MLflow does when it logs a model): an
    entry the run holds is not stored twice, so the run's own metrics stay as they were.
    """
    client = MlflowClient()
    run = client.get_run(mlflow.active_run().info.run_id)
    name = digest = None
    if dataset:
        found = [i.dataset for i in run.inputs.dataset_inputs if i.dataset.name == dataset]
        if not found:
            raise RuntimeError(f"the run has no dataset {dataset!r} to link its metrics to")
        name, digest = found[-1].name, found[-1].digest
    linked = [
        Metric(
            m.key,
            m.value,
            m.timestamp,
            m.step,
            model_id=model_id,
            dataset_name=name,
            dataset_digest=digest,
            run_id=run.info.run_id,
        )
        for key in keys
        for m in client.get_metric_history(run.info.run_id, key)
    ]
    for start in range(0, len(linked), 1000):
        client.log_batch(run.info.run_id, metrics=linked[start : start + 1000])
    return len(linked)


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    mlflow.log_table(frame, artifact_file=artifact_file)
