"""One benchmark run: config -> data -> method on the base -> training -> evaluation -> MLflow."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
from accelerate.utils import set_seed

import methods
from benchmark import continual, packaging, tracking
from benchmark.config import RunConfig
from benchmark.data import TaskData, load_tasks
from benchmark.evaluation import EvalResult, evaluate, examples_table, generate
from benchmark.models import BaseModelInfo, load_base
from benchmark.training import encode, make_accelerator, train

log = logging.getLogger("adaptbench")


@dataclass
class Adapted:
    """A base model with the method applied, and what identifies it."""

    model: torch.nn.Module
    tokenizer: Any
    info: BaseModelInfo


def run(config: RunConfig, register_as: str = "", nested: bool = False) -> str:
    """Run `config` in an MLflow run and return its id.

    The run is the active one, or the one `mlflow run` opened (MLFLOW_RUN_ID), or a new one in
    `config.experiment`; with `nested`, a child of the active run (the suite's runs).
    """
    method = methods.get_method(config.method, config.method_options)  # fail before any loading
    active = mlflow.active_run()
    if nested:
        context = mlflow.start_run(nested=True, log_system_metrics=True)
    elif active is not None:
        context = contextlib.nullcontext(active)
    else:
        if not os.environ.get("MLFLOW_RUN_ID"):  # `mlflow run` chose the experiment already
            mlflow.set_experiment(config.experiment)
        context = mlflow.start_run(log_system_metrics=True)
    start = time.perf_counter()
    with context as run:
        try:
            # Inside the run: a data error leaves a failed run that says what went wrong.
            tasks = load_tasks(config.languages, config.data)
            _log_run_header(config, method, tasks)
            if config.protocol == "sequential":
                _run_sequential(config, method, tasks, register_as)
            else:
                _run_fresh(config, method, tasks, register_as)
            mlflow.log_metric("wall_time_s", time.perf_counter() - start)
        except Exception as err:
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            err.mlflow_run_id = run.info.run_id  # the suite records which run failed
            raise
        return run.info.run_id


def _run_fresh(
    config: RunConfig, method: methods.Method, tasks: dict[str, TaskData], register_as: str
) -> None:
    """A new base model per language (the research notes' protocol: no continual learning)."""
    steps_done = 0  # the run-wide `train/loss` curve continues across languages
    for language in config.languages:
        adapted = _adapt(config, method)
        steps_done += _train_task(config, adapted, tasks[language], steps_done)
        _evaluate_task(config, adapted, tasks[language], f"{language}/", f"eval/{language}")
        _log_model(config, method, adapted, tasks[language], register_as)


def _run_sequential(
    config: RunConfig, method: methods.Method, tasks: dict[str, TaskData], register_as: str
) -> None:
    """One adapted model trained on each language in turn; forgetting measured at the end.

    `<lang>/<metric>` is the score right after training on that language (its model is logged
    as `<lang>_model`), `final/<lang>/<metric>` the score of the last model, and
    `forgetting/<lang>/<metric>` the drop between the two (positive = forgotten).
    """
    adapted = _adapt(config, method)
    steps_done = 0
    after_own: dict[str, EvalResult] = {}
    for language in config.languages:
        steps_done += _train_task(config, adapted, tasks[language], steps_done)
        after_own[language] = _evaluate_task(
            config, adapted, tasks[language], f"{language}/", f"eval/{language}"
        )
        _log_model(config, method, adapted, tasks[language], register_as)
    final = {config.languages[-1]: after_own[config.languages[-1]]}
    for language in config.languages[:-1]:
        final[language] = _evaluate_task(
            config, adapted, tasks[language], f"final/{language}/", f"eval/final_{language}"
        )
    values = continual.forgetting(after_own, final, config.languages)
    values.update(continual.forward_transfer(after_own, config))
    mlflow.log_metrics(values)


def _adapt(config: RunConfig, method: methods.Method) -> Adapted:
    """A fresh base model with the method applied; its parameter counts logged."""
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
    return Adapted(model, tokenizer, info)


def _train_task(config: RunConfig, adapted: Adapted, task: TaskData, step_offset: int) -> int:
    """Train on one language; logs the curves and costs under `<lang>/`; returns the steps."""
    lang, data, tokenizer = task.language, config.data, adapted.tokenizer
    set_seed(config.train.seed)
    train_features = encode(task.train, tokenizer, data.max_source_length, data.max_target_length)
    val_features = encode(
        task.validation, tokenizer, data.max_source_length, data.max_target_length
    )
    buffer = tracking.MetricBuffer()

    def log_step(values: dict[str, float], step: int) -> None:
        buffer.log(values, step, prefix=f"{lang}/")
        if "train/loss" in values:  # the run-wide curve, for the UI's default chart
            buffer.log({"train/loss": values["train/loss"]}, step_offset + step)

    result = train(
        adapted.model,
        train_features,
        val_features,
        tokenizer.pad_token_id,
        config.train,
        make_accelerator(config.train),
        log=log_step,
        desc=f"{lang} train",
    )
    buffer.flush()
    tracking.log_params({"train.memory_kind": result.memory_kind})
    mlflow.log_metrics({f"{lang}/{k}": v for k, v in result.as_metrics().items()})
    return result.steps


def _evaluate_task(
    config: RunConfig, adapted: Adapted, task: TaskData, prefix: str, table: str
) -> EvalResult:
    """Generate and score the language's evaluation examples; log under `prefix`."""
    result = evaluate(
        adapted.model,
        adapted.tokenizer,
        task.evaluation,
        task.language,
        config.eval,
        config.data.max_source_length,
    )
    tracking.log_table(examples_table(task.evaluation, result), f"{table}_examples.json")
    tracking.log_params(
        {f"metric.{name}.signature": sig for name, sig in result.signatures.items()}
    )
    mlflow.log_metrics({f"{prefix}{k}": v for k, v in result.as_metrics().items()})
    if config.eval.humaneval and task.language == "python" and not prefix.startswith("final/"):
        _humaneval(config, adapted, prefix)
    log.info("%s%s", prefix, {k: round(v, 4) for k, v in result.as_metrics().items()})
    return result


def _humaneval(config: RunConfig, adapted: Adapted, prefix: str) -> None:
    """HumanEval pass@k of the trained model (docstring -> whole function, sampled)."""
    from metrics.humaneval import evaluate_humaneval, signature

    samples, temperature = config.eval.humaneval_samples, config.eval.humaneval_temperature

    def generate_samples(prompts: list[str], n: int) -> list[list[str]]:
        repeated = [p for p in prompts for _ in range(n)]
        codes = generate(
            adapted.model,
            adapted.tokenizer,
            repeated,
            config.data.max_source_length,
            max_new_tokens=config.eval.max_new_tokens,
            batch_size=config.eval.batch_size,
            desc="humaneval",
            do_sample=n > 1,
            temperature=temperature,
            top_p=0.95,
        )
        return [codes[i * n : (i + 1) * n] for i in range(len(prompts))]

    results = evaluate_humaneval(
        generate_samples, num_samples=samples, ks=(1, 10), limit=config.eval.humaneval_limit or None
    )
    tracking.log_params({"metric.humaneval.signature": signature(samples, "function", 5.0)})
    mlflow.log_metrics({f"{prefix}humaneval/{k}": v for k, v in results.items()})


def _log_model(
    config: RunConfig, method: methods.Method, adapted: Adapted, task: TaskData, register_as: str
) -> str:
    """Log the model as trained so far as the pyfunc model `<lang>_model`; its URI."""
    lang = task.language
    with tempfile.TemporaryDirectory() as tmp:
        bundle = packaging.write_bundle(
            adapted.model,
            method,
            adapted.tokenizer,
            config,
            adapted.info.revision,
            adapted.info.source,
            Path(tmp) / "bundle",
            bundle_base=config.bundle_base,
        )
        weights_bytes = (bundle / "trained.safetensors").stat().st_size
        register_name = f"{register_as}-{lang}" if register_as else ""
        model_uri = packaging.log_pyfunc(
            bundle, f"{lang}_model", config, task.evaluation[0].docstring, register_name
        )
    mlflow.set_tag(f"{lang}.model_uri", model_uri)
    mlflow.log_metric(f"{lang}/trained_weights_bytes", weights_bytes)
    return model_uri


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
