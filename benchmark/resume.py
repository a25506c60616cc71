"""Resuming a killed run: where a run keeps its checkpoints and finished languages, and the checks
that decide whether `--resume` may continue it (made before the run is reopened)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from benchmark import distributed
from benchmark.checkpoint import Checkpointer
from benchmark.config import RunConfig, UsageError
from benchmark.evaluation import EvalResult
from core import record as rec  # the run record's names


@dataclass
class Progress:
    """Where a run keeps its checkpoints and marks its finished languages (for `--resume`).

    `<checkpoint_dir>/<run id>/config.json` is the run's config; `<language>/step-*` are the
    training checkpoints and `<language>/done.json` the language's scores once it is evaluated
    and its model logged. Without a checkpoint folder nothing is kept and nothing resumes.
    """

    root: Path | None
    resumed: bool = False

    def checkpointer(self, language: str, config: RunConfig, accelerator) -> Checkpointer | None:
        if self.root is None:
            return None
        return Checkpointer(
            self.root / language,
            config.train.checkpoint_every,
            config.train.keep_checkpoints,
            accelerator,
        )

    def done(self, language: str) -> dict[str, Any] | None:
        path = self.root / language / "done.json" if self.root else None
        return json.loads(path.read_text()) if path and path.is_file() else None

    def mark_done(self, language: str, steps: int, result: EvalResult) -> None:
        if self.root is None or not distributed.is_main():
            return
        scores = {name: r.corpus for name, r in result.scores.items()}
        folder = self.root / language
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "done.json.tmp"
        tmp.write_text(json.dumps({"steps": steps, "scores": scores}, indent=2))
        tmp.rename(folder / "done.json")

    def latest_weights(self, language: str) -> Path | None:
        """The newest complete checkpoint of `language` (its trained weights), if any."""
        if self.root is None:
            return None
        found = Checkpointer(self.root / language, 0, 1).latest()
        return found.path if found else None


def progress_for(config: RunConfig, run_id: str, resume: bool) -> Progress:
    """The run's checkpoint folder; on resume, checks it holds a run with the same settings."""
    if not config.train.checkpoint_dir:
        if resume:
            raise UsageError(
                "--resume needs checkpoints: the run must have been started with a "
                "train.checkpoint_dir (the default is checkpoints/)"
            )
        return Progress(None)
    root = Path(config.train.checkpoint_dir) / run_id
    saved = root / "config.json"
    current = {k: _jsonable(v) for k, v in config.flat().items()}
    current["method_options"] = _jsonable(config.method_options)
    if resume:
        if not saved.is_file():
            raise UsageError(
                f"no checkpoints of run {run_id} in {root}: pass the train.checkpoint_dir the run "
                "was started with, from the folder it was started in"
            )
        before = json.loads(saved.read_text())
        changed = sorted(k for k in set(before) | set(current) if before.get(k) != current.get(k))
        if changed:
            detail = ", ".join(
                f"{k} (was {before.get(k)!r}, now {current.get(k)!r})" for k in changed
            )
            raise UsageError(
                f"run {run_id} was started with other settings: {detail}. Resume with the same "
                "method, preset and overrides"
            )
    elif distributed.is_main():
        root.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(current, indent=2, sort_keys=True))
    return Progress(root, resumed=resume)


def check_resumable(config: RunConfig, run_id: str) -> None:
    """Refuse a `--resume` that cannot go on, leaving the run's status and tags as they are.

    Reopening a run marks it RUNNING and its end marks it again, so every check that can refuse
    runs before: a refused resume must not turn a finished run into a failed one, nor replace
    the error a failed run recorded.
    """
    try:
        found = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise UsageError(
            f"--resume {run_id}: no such run in the tracking store {mlflow.get_tracking_uri()}: "
            "give the id of a killed or failed run (and the same MLFLOW_TRACKING_URI)"
        ) from None
    status = found.info.status
    if status == "FINISHED":
        raise UsageError(
            f"--resume {run_id}: the run finished; there is nothing to resume. Start a new run "
            "for new results"
        )
    kind = found.data.tags.get(rec.KIND)
    if kind:
        raise UsageError(
            f"--resume {run_id}: that is a {kind} run, not a method's run: give the id of the "
            "method's own (child) run"
        )
    progress_for(config, run_id, resume=True)  # reads only: same settings, checkpoints present


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
