"""One benchmark run: config -> data -> method on the base -> training -> evaluation -> MLflow."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from accelerate.utils import set_seed
from mlflow.tracking import MlflowClient

import methods
import tasks as task_registry
from benchmark import console, continual, distributed, launchers, packaging, retention, tracking
from benchmark.checkpoint import load_trainable
from benchmark.config import DataConfig, RunConfig, UsageError
from benchmark.data import LanguageData, load_languages
from benchmark.evaluation import EvalResult, evaluate, examples_table, generate
from benchmark.inference import check_deployment
from benchmark.models import BaseModelInfo, load_base
from benchmark.resume import Progress, check_resumable, progress_for
from benchmark.training import encode, fitting, make_accelerator, train
from core import record as rec  # the run record's names
from core.families import is_causal
from metrics import MetricResult

log = logging.getLogger("adaptbench")


@dataclass
class Adapted:
    """A base model with the method applied, and what identifies it."""

    model: torch.nn.Module
    tokenizer: Any
    info: BaseModelInfo
    trainable: int  # parameters the method trains (0: `none`, the base as it is)


def run(
    config: RunConfig,
    register_as: str = "",
    nested: bool = False,
    resume: str = "",
    run_name: str = "",
) -> str:
    """Run `config` in an MLflow run named `run_name` (default '<method> seed <seed>') and
    return its id.

    The run is the active one, or the one `mlflow run` opened (MLFLOW_RUN_ID), or a new one in
    `config.experiment`; with `nested`, a child of the active run (the suite's runs); with
    `resume`, that (killed) run, continued from its checkpoints.
    Launched on several processes (`accelerate launch`), only the main process talks to MLflow
    and writes artifacts; the others train and generate their share.
    """
    method = methods.get_method(config.method, config.method_options)  # fail before any loading
    name = run_name or default_run_name(config)
    if not distributed.is_main():
        run_id = distributed.share(None)
        _execute(config, method, register_as, progress_for(config, run_id, bool(resume)))
        return run_id
    active = mlflow.active_run()
    if resume:
        check_resumable(config, resume)  # refused before the run is touched
        context = mlflow.start_run(run_id=resume, log_system_metrics=True)
    elif nested:
        context = mlflow.start_run(
            run_name=name,
            nested=True,
            description=f"{config.method}, preset {config.preset}, seed {config.train.seed}: "
            "the models under Logged models, the evaluated examples in Artifacts: "
            + _tables_text(config),
            log_system_metrics=True,
        )
    elif os.environ.get(launchers.PARENT_ENV) and active is None:
        # A suite's child launched as its own process or job: nested under the suite run.
        context = mlflow.start_run(
            experiment_id=os.environ.get("MLFLOW_EXPERIMENT_ID") or None,
            parent_run_id=os.environ[launchers.PARENT_ENV],
            run_name=name,
            tags={launchers.CHILD_TAG: os.environ.get(launchers.CHILD_ENV, "")},
            log_system_metrics=True,
        )
    elif active is not None:
        context = contextlib.nullcontext(active)
    else:
        if not os.environ.get("MLFLOW_RUN_ID"):  # `mlflow run` chose the experiment already
            tracking.set_experiment(config.experiment)
        context = mlflow.start_run(
            run_name=name,
            description=f"{config.method}, preset {config.preset}, seed {config.train.seed}: "
            "the models under Logged models, the evaluated examples in Artifacts: "
            + _tables_text(config),
            log_system_metrics=True,
        )
    start = time.perf_counter()
    with context as run:
        run_id = distributed.share(run.info.run_id)
        try:
            progress = progress_for(config, run_id, bool(resume))
            if resume:
                resumes = int(run.data.tags.get(rec.RESUMES, "0")) + 1
                mlflow.set_tag(rec.RESUMES, str(resumes))
            _execute(config, method, register_as, progress, name)
            mlflow.log_metric(rec.WALL_TIME, time.perf_counter() - start)
            if progress.root is not None:  # finished: nothing left to resume
                shutil.rmtree(progress.root, ignore_errors=True)
        except Exception as err:
            mlflow.set_tag(rec.ERROR, f"{type(err).__name__}: {err}"[:5000])
            err.mlflow_run_id = run.info.run_id  # the suite records which run failed
            raise
        return run.info.run_id


def default_run_name(config: RunConfig) -> str:
    """A run's name unless it is given one (a sweep's children also name their point)."""
    return f"{config.method} seed {config.train.seed}"


def _execute(
    config: RunConfig, method: methods.Method, register_as: str, progress: Progress, name: str = ""
) -> None:
    # Inside the run: a data error leaves a failed run that says what went wrong.
    data = load_languages(config.languages, config.data)
    plan = task_plan(config)
    for task in task_registry.resolve(config.tasks):
        skipped = [lang for lang in config.languages if lang not in plan.get(task.name, [])]
        if skipped:
            log.info(
                "%s covers %s: skipped on %s",
                task.name,
                ", ".join(task.languages),
                ", ".join(skipped),
            )
    # A resumed run logged its header before it was killed, unless it was killed before that.
    if distributed.is_main() and not (progress.resumed and _has_header()):
        _log_run_header(config, method, data, name)
    if config.protocol == "sequential":
        _run_sequential(config, method, data, register_as, progress)
    else:
        _run_fresh(config, method, data, register_as, progress)


def task_plan(config: RunConfig) -> dict[str, list[str]]:
    """Each chosen task -> the run's languages it covers, in training order (an evaluation-only
    task: those its model's task trains on). Logged as `run.tasks`."""
    chosen = task_registry.resolve(config.tasks)
    plan = {t.name: [lang for lang in config.languages if t.covers(lang)] for t in chosen}
    for task in chosen:
        if not task.trains:
            plan[task.name] = [lang for lang in plan[task.name] if lang in plan[task.model_of]]
    return {name: languages for name, languages in plan.items() if languages}


def _training_tasks(config: RunConfig) -> list[task_registry.Task]:
    return [t for t in task_registry.resolve(config.tasks) if t.trains]


def _scored_with(config: RunConfig, task: task_registry.Task, language: str) -> list:
    """The evaluation-only tasks that score `task`'s model of `language`."""
    plan = task_plan(config)
    return [
        t
        for t in task_registry.resolve(config.tasks)
        if not t.trains and t.model_of == task.name and language in plan.get(t.name, [])
    ]


def _tables_text(config: RunConfig) -> str:
    plan = task_plan(config)
    return ", ".join(rec.examples_table(t, lang) for t, langs in plan.items() for lang in langs)


def _has_header() -> bool:
    run = mlflow.active_run()
    return run is not None and rec.METHOD in MlflowClient().get_run(run.info.run_id).data.tags


def _run_fresh(
    config: RunConfig,
    method: methods.Method,
    data: dict[str, LanguageData],
    register_as: str,
    progress: Progress,
) -> None:
    """A new base model per training task and language (the research notes' protocol: no
    continual learning); the evaluation-only tasks score the model they name."""
    steps_done = 0  # the run-wide `train/loss` curve continues across tasks and languages
    plan = task_plan(config)
    for task in _training_tasks(config):
        for language in plan[task.name]:
            scope = rec.scope(task.name, language)
            done = progress.done(scope)
            if done is not None:  # resumed: finished before the interruption
                steps_done += done["steps"]
                continue
            adapted = _adapt(config, method)
            steps = _train_task(config, adapted, task, data[language], steps_done, progress)
            retention.log_retention(config, data, adapted, scope, [language])
            result = _evaluate_task(config, adapted, task, data[language])
            for scorer in _scored_with(config, task, language):
                _score_task(config, adapted, scorer, language)
            _log_model(config, method, adapted, task, data[language], register_as)
            progress.mark_done(scope, steps, result)
            steps_done += steps


def _run_sequential(
    config: RunConfig,
    method: methods.Method,
    data: dict[str, LanguageData],
    register_as: str,
    progress: Progress,
) -> None:
    """Per training task, one adapted model trained on each language in turn; forgetting
    measured at the end.

    `<task>/<lang>/<metric>` is the score right after training on that language (its model is
    logged as `<task>_<lang>_model`), `final/<task>/<lang>/<metric>` the score of the last
    model, and `forgetting/<task>/<lang>/<metric>` the drop between the two (positive =
    forgotten).
    """
    steps_done = 0
    plan = task_plan(config)
    for task in _training_tasks(config):
        languages = plan[task.name]
        adapted = _adapt(config, method)
        after_own: dict[str, EvalResult] = {}
        last_done = ""
        for language in languages:
            scope = rec.scope(task.name, language)
            done = progress.done(scope)
            if done is not None:  # resumed: finished before the interruption
                steps_done += done["steps"]
                after_own[language] = _recorded(language, done["scores"])
                last_done = scope
                continue
            if last_done:  # continue from the weights the finished languages left
                _load_weights(adapted, progress, last_done)
                last_done = ""
            steps = _train_task(config, adapted, task, data[language], steps_done, progress)
            steps_done += steps
            trained = languages[: languages.index(language) + 1]
            retention.log_retention(config, data, adapted, scope, trained)
            after_own[language] = _evaluate_task(config, adapted, task, data[language])
            for scorer in _scored_with(config, task, language):
                _score_task(config, adapted, scorer, language)
            _log_model(config, method, adapted, task, data[language], register_as)
            progress.mark_done(scope, steps, after_own[language])
        if last_done:  # every language was finished: the final model is the last one's
            _load_weights(adapted, progress, last_done)
        final = {languages[-1]: after_own[languages[-1]]}
        for language in languages[:-1]:
            final[language] = _evaluate_task(config, adapted, task, data[language], final=True)
        if distributed.is_main():
            values = continual.forgetting(task.name, after_own, final, languages)
            values.update(continual.forward_transfer(task.name, after_own, config))
            mlflow.log_metrics(values)


def _recorded(language: str, scores: dict[str, float]) -> EvalResult:
    """A finished language's scores, as `done.json` kept them (no per-example values)."""
    return EvalResult(language, [], {k: MetricResult(v, []) for k, v in scores.items()}, {}, 0.0)


def _load_weights(adapted: Adapted, progress: Progress, scope: str) -> None:
    path = progress.latest_weights(scope)
    if path is None:
        raise RuntimeError(
            f"{scope} is marked finished but has no complete checkpoint to continue from"
        )
    load_trainable(adapted.model, path)
    log.info("continuing from %s's trained weights in %s", scope, path)


def _adapt(config: RunConfig, method: methods.Method) -> Adapted:
    """A fresh base model with the method applied; its parameter counts logged."""
    set_seed(config.train.seed)
    base, tokenizer, info = load_base(config.model)
    model = method.apply(base)
    trainable, total = methods.count_parameters(model)
    if distributed.is_main():
        tracking.log_params(
            {
                "model.source": info.source,
                "model.resolved_revision": info.revision,
                rec.MODEL_FAMILY: info.family,
                rec.TRAINABLE_PARAMS: trainable,
                rec.TOTAL_PARAMS: total,
                rec.TRAINABLE_SHARE: round(trainable / total, 6),
            }
        )
    return Adapted(model, tokenizer, info, trainable)


def _train_task(
    config: RunConfig,
    adapted: Adapted,
    task: task_registry.Task,
    examples: LanguageData,
    step_offset: int,
    progress: Progress,
) -> int:
    """Train on one task and language; logs the curves and costs under `<task>/<lang>/`;
    returns the steps."""
    lang, data, tokenizer = examples.language, config.data, adapted.tokenizer
    scope = rec.scope(task.name, lang)
    if adapted.trainable == 0:  # `none`: the base as it is
        log.info("%s: the method trains no parameter; training skipped", scope)
        return 0
    set_seed(config.train.seed)
    (_, source_limit), (target_setting, target_limit) = _token_limits(task, data)
    lengths = (source_limit, target_limit, data.eos_after_cut)
    train_examples = examples.train
    if data.skip_long_targets:
        train_examples = fitting(examples.train, tokenizer, target_limit, task)
        log.info(
            "%s: %d of %d training pairs fit in %d target tokens; the rest are left out "
            "(data.skip_long_targets)",
            scope,
            len(train_examples),
            len(examples.train),
            target_limit,
        )
        if not train_examples:
            raise UsageError(
                f"no {scope} training pair fits in {target_setting}={target_limit} tokens: "
                "raise it, or set data.skip_long_targets=false"
            )
    causal = is_causal(adapted.model)
    train_features = encode(train_examples, tokenizer, *lengths, task=task, causal=causal)
    val_features = encode(examples.validation, tokenizer, *lengths, task=task, causal=causal)
    main = distributed.is_main()
    skip = {}
    if main and progress.resumed:
        keys = ["train/loss"] + [
            rec.metric(task.name, lang, k)
            for k in ("train/loss", "train/grad_norm", "train/lr", "train/skipped_steps")
        ]
        skip = tracking.logged_through(
            mlflow.active_run().info.run_id,
            keys + [rec.metric(task.name, lang, "val/loss"), rec.metric(task.name, lang, "epoch")],
        )
        # the run-wide curve's steps are offset by the languages before
    buffer = tracking.MetricBuffer(skip_through=skip)

    def log_step(values: dict[str, float], step: int) -> None:
        if not main:
            return
        buffer.log(values, step, prefix=rec.metric(task.name, lang, ""))
        if "train/loss" in values:  # the run-wide curve, for the UI's default chart
            buffer.log({"train/loss": values["train/loss"]}, step_offset + step)

    accelerator = make_accelerator(config.train)
    load = MachineLoad() if main else contextlib.nullcontext()
    with load:
        result = train(
            adapted.model,
            train_features,
            val_features,
            tokenizer.pad_token_id,
            config.train,
            accelerator,
            log=log_step,
            desc=f"{scope} train",
            checkpointer=progress.checkpointer(scope, config, accelerator),
            before_checkpoint=buffer.flush if main else None,
        )
    if main:
        buffer.flush()
        world = accelerator.num_processes
        per_process = config.train.batch_size / world
        tracking.log_params(
            {
                rec.trained_examples_param(task.name, lang): len(train_examples),
                "train.memory_kind": result.memory_kind,
                "train.num_processes": world,
                "train.per_process_batch_size": (
                    int(per_process) if per_process.is_integer() else round(per_process, 2)
                ),
                "train.global_batch_size": config.train.batch_size * config.train.grad_accum_steps,
            }
        )
        costs = {**result.as_metrics(), **load.as_metrics()}
        mlflow.log_metrics({rec.metric(task.name, lang, k): v for k, v in costs.items()})
    return result.steps


def _token_limits(task: task_registry.Task, data: DataConfig) -> tuple[tuple[str, int], ...]:
    """(setting, tokens kept) of the task's input, then of its target: a docstring keeps
    `data.max_source_length` tokens and code `data.max_target_length`, on either side (code is
    summarisation's input); any other field takes its side's setting."""
    by_field = {
        "docstring": ("data.max_source_length", data.max_source_length),
        "code": ("data.max_target_length", data.max_target_length),
    }
    return (
        by_field.get(task.input_field, by_field["docstring"]),
        by_field.get(task.target_field, by_field["code"]),
    )


class MachineLoad:
    """The machine's 1-minute load average while a block runs (sampled at its start, every
    `every_s` seconds and at its end), beside the CPUs it is spread over: a load above them
    means other work competed for the CPUs, so times measured then are slower than alone."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # no load average on this system
            self.samples.append(os.getloadavg()[0])

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._read()

    def __enter__(self) -> MachineLoad:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def as_metrics(self) -> dict[str, float]:
        """`train/load_avg` (mean of the samples) and `train/cpu_count`; none without samples."""
        if not self.samples:
            return {}
        return {
            rec.LOAD_AVERAGE: sum(self.samples) / len(self.samples),
            rec.CPU_COUNT: float(os.cpu_count() or 1),
        }


def _evaluate_task(
    config: RunConfig,
    adapted: Adapted,
    task: task_registry.Task,
    examples: LanguageData,
    final: bool = False,
) -> EvalResult:
    """Generate and score a task's evaluation examples of one language; log under
    `<task>/<lang>/` (`final/<task>/<lang>/` with `final`: the sequential protocol's last model).

    Every process generates its share; the main process scores and logs."""
    lang = examples.language
    result = evaluate(
        adapted.model,
        adapted.tokenizer,
        examples.evaluation,
        lang,
        config.eval,
        _token_limits(task, config.data)[0][1],
        task=task,
    )
    if not distributed.is_main():
        return result
    key = rec.final_metric if final else rec.metric
    table = examples_table(examples.evaluation, result, task)
    tracking.log_table(table, rec.examples_table(task.name, lang, "final_" if final else ""))
    tracking.log_params({rec.signature_param(name): sig for name, sig in result.signatures.items()})
    mlflow.log_metrics({key(task.name, lang, k): v for k, v in result.as_metrics().items()})
    # The scores are printed as a table at the end of the run (the CLI's), not one dict each.
    log.info(
        "%s: evaluated %d examples in %s",
        ("final/" if final else "") + rec.scope(task.name, lang),
        len(examples.evaluation),
        console.duration(result.generation_time_s),
    )
    if not final:  # the merged model checked, the inference cost against the base
        scope = rec.scope(task.name, lang)
        check_deployment(
            config, adapted.model, adapted.tokenizer, examples.evaluation, result, scope, task
        )
    return result


def _score_task(
    config: RunConfig, adapted: Adapted, task: task_registry.Task, language: str
) -> None:
    """An evaluation-only task on the trained model (its own problems, sampled with
    `eval.temperature` when `eval.samples` > 1); logged under `<task>/<lang>/`."""
    samples, temperature = config.eval.samples, config.eval.temperature

    def generate_samples(prompts: list[str], n: int) -> list[list[str]]:
        repeated = [p for p in prompts for _ in range(n)]
        outputs = generate(
            adapted.model,
            adapted.tokenizer,
            repeated,
            config.data.max_source_length,
            max_new_tokens=config.eval.max_new_tokens,
            batch_size=config.eval.batch_size,
            desc=rec.scope(task.name, language),
            shard=True,
            do_sample=n > 1,
            temperature=temperature,
            top_p=0.95,
        )
        return [outputs[i * n : (i + 1) * n] for i in range(len(prompts))]

    start = time.perf_counter()
    scored = task.evaluate(generate_samples, samples, config.eval.problem_limit)
    if not distributed.is_main():
        return
    values = {**scored.metrics, "generation_time_s": time.perf_counter() - start}
    tracking.log_params({rec.signature_param(task.name): scored.signature})
    mlflow.log_metrics({rec.metric(task.name, language, k): v for k, v in values.items()})
    if scored.rows:
        tracking.log_table(pd.DataFrame(scored.rows), rec.examples_table(task.name, language))
    log.info(
        "%s: scored %d problems in %s",
        rec.scope(task.name, language),
        len(scored.rows),
        console.duration(values["generation_time_s"]),
    )


def _log_model(
    config: RunConfig,
    method: methods.Method,
    adapted: Adapted,
    task: task_registry.Task,
    examples: LanguageData,
    register_as: str,
) -> str:
    """Log the model as trained so far as the pyfunc model `<task>_<lang>_model`; its URI."""
    lang = examples.language
    if not distributed.is_main():
        return ""
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
            task={
                "name": task.name,
                "prompt": task.prompt,
                "serves": task.serves,
                "max_source_length": _token_limits(task, config.data)[0][1],
            },
        )
        weights_bytes = (bundle / "trained.safetensors").stat().st_size
        scope = rec.scope(task.name, lang)
        register_name = rec.registered_name(register_as, scope) if register_as else ""
        model_uri = packaging.log_pyfunc(
            bundle,
            rec.model_name(task.name, lang),
            config,
            getattr(examples.evaluation[0], task.input_field),
            register_name,
            serves=task.serves,
        )
    mlflow.set_tag(rec.model_uri_tag(task.name, lang), model_uri)
    # The Models tab lists and ranks each model by its scores, on the dataset they were scored on.
    tracking.link_scores(
        model_uri, rec.metric(task.name, lang, ""), rec.dataset_name(lang, "evaluation")
    )
    mlflow.log_metric(rec.metric(task.name, lang, "trained_weights_bytes"), weights_bytes)
    return model_uri


def _log_run_header(
    config: RunConfig, method: methods.Method, tasks: dict[str, LanguageData], name: str = ""
) -> None:
    mlflow.set_tags(
        {
            rec.PRESET: config.preset,
            rec.PROTOCOL: config.protocol,
            rec.METHOD: config.method,
            rec.GIT_COMMIT: tracking.git_commit(),
            rec.CPU_THREADS: str(torch.get_num_threads()),
            "mlflow.runName": name or default_run_name(config),
        }
    )
    params = dict(config.flat())
    params[rec.METHOD_NAME] = method.name
    params.update({f"method.{k}": v for k, v in method.config_dict().items()})
    params.update({f"version.{k}": v for k, v in tracking.package_versions().items()})
    params[rec.TASKS] = rec.tasks_param(task_plan(config))
    for language, task in tasks.items():
        params[rec.source_param(language)] = task.source
        params[rec.fingerprint_param(language)] = task.fingerprint()
        params[rec.train_examples_param(language)] = len(task.train)
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
                    examples,
                    rec.dataset_name(language, context),
                    task.source,
                    language,
                    split,
                    context,
                )
        mlflow.log_metrics(task.stats.as_metrics(f"{language}/data"))
