"""One benchmark run: config -> data -> method on the base -> training -> evaluation -> MLflow."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from accelerate.utils import set_seed

import methods
from benchmark import tracking
from benchmark.config import RunConfig
from benchmark.data import TaskData, load_tasks
from benchmark.evaluation import EvalResult, evaluate, examples_table
from benchmark.models import load_base
from benchmark.training import TrainResult, encode, make_accelerator, train

log = logging.getLogger("adaptbench")


@dataclass
class TaskOutcome:
    language: str
    train: TrainResult
    eval: EvalResult
    trainable: int
    total: int
    weights_bytes: int


def run(config: RunConfig, register_as: str = "") -> str:
    """Run `config` inside an MLflow run (the active one, e.g. from `mlflow run`); its run id."""
    method = methods.get_method(config.method, config.method_options)  # fail before any loading
    tasks = load_tasks(config.languages, config.data)
    active = mlflow.active_run()
    if active is None:
        mlflow.set_experiment(config.experiment)
    with mlflow.start_run(
        run_id=active.info.run_id if active else None, log_system_metrics=True
    ) as run:
        _log_run_header(config, method, tasks)
        try:
            steps_done = 0  # the run-wide `train/loss` curve continues across languages
            for language in config.languages:
                outcome = _run_task(config, method, tasks[language], steps_done)
                steps_done += outcome.train.steps
        except Exception as err:
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            raise
        return run.info.run_id


def _log_run_header(config: RunConfig, method: methods.Method, tasks: dict[str, TaskData]) -> None:
    mlflow.set_tags(
        {
            "preset": config.preset,
            "protocol": config.protocol,
            "method": config.method,
            "git_commit": tracking.git_commit(),
            "mlflow.runName": f"{config.method}-{config.preset}",
        }
    )
    params = dict(config.flat())
    params["method.name"] = method.name
    params.update({f"method.{k}": v for k, v in method.config_dict().items()})
    params.update({f"version.{k}": v for k, v in tracking.package_versions().items()})
    for language, task in tasks.items():
        params[f"data.{language}.source"] = task.source
        params[f"data.{language}.fingerprint"] = task.fingerprint()
        params[f"data.{language}.train_examples"] = len(task.train)
        params[f"data.{language}.val_examples"] = len(task.validation)
        params[f"data.{language}.eval_examples"] = len(task.evaluation)
    tracking.log_params(params)
    for language, task in tasks.items():
        for split, examples, context in (
            ("train", task.train, "training"),
            ("validation", task.validation, "validation"),
            (config.data.eval_split, task.evaluation, "evaluation"),
        ):
            if examples:
                tracking.log_dataset(
                    examples, f"{language}-{context}", task.source, language, split, context
                )
        mlflow.log_metrics(task.stats.as_metrics(f"{language}/data"))


def _run_task(
    config: RunConfig, method: methods.Method, task: TaskData, step_offset: int = 0
) -> TaskOutcome:
    """Fresh base model, adapted, trained and evaluated on one language; everything logged."""
    lang = task.language
    set_seed(config.train.seed)
    base, tokenizer, info = load_base(config.model)
    model = method.apply(base)
    trainable, total = methods.count_parameters(model)
    tracking.log_params(
        {
            "model.source": info.source,
            "model.resolved_revision": info.revision,
            "trainable_params": trainable,
            "total_params": total,
            "trainable_share": round(trainable / total, 6),
        }
    )
    accelerator = make_accelerator(config.train)
    data = config.data
    train_features = encode(task.train, tokenizer, data.max_source_length, data.max_target_length)
    val_features = encode(
        task.validation, tokenizer, data.max_source_length, data.max_target_length
    )
    buffer = tracking.MetricBuffer()

    def log_step(values: dict[str, float], step: int) -> None:
        buffer.log(values, step, prefix=f"{lang}/")
        if "train/loss" in values:  # the run-wide curve, for the UI's default chart
            buffer.log({"train/loss": values["train/loss"]}, step_offset + step)

    start = time.perf_counter()
    train_result = train(
        model,
        train_features,
        val_features,
        tokenizer.pad_token_id,
        config.train,
        accelerator,
        log=log_step,
        desc=f"{lang} train",
    )
    buffer.flush()
    eval_result = evaluate(
        model, tokenizer, task.evaluation, lang, config.eval, data.max_source_length
    )
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "trained.safetensors"
        weights_bytes = method.save_trained(model, weights)
        mlflow.log_artifact(str(weights), artifact_path=f"{lang}")
        tracking.log_table(
            examples_table(task.evaluation, eval_result), f"eval/{lang}_examples.json"
        )
    tracking.log_params(
        {f"metric.{name}.signature": sig for name, sig in eval_result.signatures.items()}
        | {"train.memory_kind": train_result.memory_kind}
    )
    values = {**train_result.as_metrics(), **eval_result.as_metrics()}
    values["trained_weights_bytes"] = weights_bytes
    values["task_time_s"] = time.perf_counter() - start
    mlflow.log_metrics({f"{lang}/{k}": v for k, v in values.items()})
    log.info("%s: %s", lang, {k: round(v, 4) for k, v in eval_result.as_metrics().items()})
    return TaskOutcome(lang, train_result, eval_result, trainable, total, weights_bytes)
