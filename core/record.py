"""The run record: the names of the tags, params and metrics a benchmark run is written with and
read back by, in one place.

The runner and the suite write through these names, the report and `compare` read through them,
and the tests build their runs with them, so renaming one renames it everywhere (a rename used
to leave the report reading a key nobody wrote, silently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# ---------------------------------------------------------------- tags

KIND = "adaptbench.kind"  # "suite" or "comparison"; a method's own run has none
SUITE_KIND = "suite"
COMPARISON_KIND = "comparison"
METHOD = "method"
PRESET = "preset"
PROTOCOL = "protocol"
GIT_COMMIT = "git_commit"
# The CPU threads torch computed with: a sum over other threads rounds otherwise, so the same run
# on 1 and on 2 threads differs in the last digits. A tag: a resumed run may have other threads.
CPU_THREADS = "cpu_threads"
ERROR = "error"  # why a FAILED run failed: "<ExceptionType>: <message>"
RESUMES = "resumes"  # how often `--resume` continued the run
COMPARED_RUNS = "compared_runs"  # a comparison run's inputs, comma-separated ids


def model_uri_tag(task: str, language: str) -> str:
    """The tag holding the URI of the model a task trained on `language`."""
    return f"{task}.{language}.model_uri"


def model_name(task: str, language: str) -> str:
    """The logged model's name (`runs:/<run id>/<name>`) of a task's model of `language`."""
    return f"{task}_{language}_model"


def examples_table(task: str, language: str, prefix: str = "") -> str:
    """The artifact holding a task's evaluated examples of `language` (`prefix`: `final_` for
    the sequential protocol's last model)."""
    return f"eval/{task}/{prefix}{language}_examples.json"


# ---------------------------------------------------------------- params

LANGUAGES = "run.languages"  # a JSON list, in training order
TASKS = "run.tasks"  # a JSON object: each task the run evaluated -> its languages, in order
SEED = "train.seed"
METHOD_NAME = "method.name"
TRAINABLE_PARAMS = "trainable_params"
TRAINABLE_SHARE = "trainable_share"
TOTAL_PARAMS = "total_params"  # the model as trained: the base and what the method added
# A suite's sweep axes (`--train-sizes`, `--models`): runs that differ only in these are a sweep.
TRAIN_SIZE = "data.train_size"
MODEL_NAME = "model.name"
MODEL_FAMILY = "model.family"  # core.families: t5, llama or gpt2, read from the base's config
SWEEP_AXES = (TRAIN_SIZE, MODEL_NAME)


def signature_param(metric_name: str) -> str:
    """The param stating every setting that changes a metric's number (sacrebleu's signature)."""
    return f"metric.{metric_name}.signature"


def signature_of(param: str) -> str | None:
    """The metric whose signature `param` is, or None for any other param."""
    if param.startswith("metric.") and param.endswith(".signature"):
        return param[len("metric.") : -len(".signature")]
    return None


def fingerprint_param(language: str) -> str:
    """sha256 of the exact examples a language was trained and evaluated on."""
    return f"data.{language}.fingerprint"


def source_param(language: str) -> str:
    return f"data.{language}.source"


def trained_examples_param(task: str, language: str) -> str:
    """The training pairs a task trained on for `language` (after `data.skip_long_targets`)."""
    return f"{task}.{language}.trained_examples"


def train_examples_param(language: str) -> str:
    """The training examples selected for a language (fewer than data.train_size when the
    split holds fewer)."""
    return f"data.{language}.train_examples"


# ---------------------------------------------------------------- metrics

WALL_TIME = "wall_time_s"
LOAD_AVERAGE = "train/load_avg"  # under the language: the machine's load while training
CPU_COUNT = "train/cpu_count"


def metric(task: str, language: str, name: str) -> str:
    """A task's metric on a language (`generation/python/bleu`, `.../train/load_avg`)."""
    return f"{task}/{language}/{name}"


def scope(task: str, language: str) -> str:
    """`<task>/<language>`: what the report's sections, the checkpoints and the console group by."""
    return f"{task}/{language}"


def split_scope(text: str) -> tuple[str, str]:
    """(task, language) of a `scope`."""
    task, _, language = text.partition("/")
    return task, language


def final_metric(task: str, language: str, name: str) -> str:
    """Sequential protocol: the last model's score on an earlier language."""
    return f"final/{task}/{language}/{name}"


def forgetting_metric(task: str, language: str, name: str) -> str:
    """Sequential protocol: the drop from a language's own model to the last (positive: lost)."""
    return f"forgetting/{task}/{language}/{name}"


def forward_transfer_metric(task: str, language: str, name: str) -> str:
    """Sequential protocol: the score after a language's training minus a fresh run's."""
    return f"fwt/{task}/{language}/{name}"


def backward_transfer_metric(task: str, name: str) -> str:
    """Sequential protocol: minus the mean forgetting of a metric over the earlier languages."""
    return f"bwt/{task}/{name}"


def split_forgetting(key: str) -> tuple[str, str, str] | None:
    """(task, language, metric) of a `forgetting_metric` key, else None."""
    head, task, language, name = ([*key.split("/", 3)] + ["", "", ""])[:4]
    return (task, language, name) if head == "forgetting" and task and language and name else None


def split_backward_transfer(key: str) -> tuple[str, str] | None:
    """(task, metric) of a `backward_transfer_metric` key, else None."""
    head, task, name = ([*key.split("/", 2)] + ["", ""])[:3]
    return (task, name) if head == "bwt" and task and name else None


# ---------------------------------------------------------------- readers


def is_method_run(tags: Mapping[str, str]) -> bool:
    """A method's own run (not a suite parent or a comparison run)."""
    return not tags.get(KIND) and METHOD in tags


def languages(params: Mapping[str, str]) -> list[str]:
    """The run's languages in training order ([] when unreadable)."""
    try:
        found = json.loads(params.get(LANGUAGES, "[]"))
    except json.JSONDecodeError:
        return []
    return [str(lang) for lang in found] if isinstance(found, list) else []


def languages_param(names: list[str]) -> str:
    """The `run.languages` value as the runner logs it (a JSON list)."""
    return json.dumps(list(names))


def tasks(params: Mapping[str, str]) -> dict[str, list[str]]:
    """Each task the run evaluated -> its languages ({} when unreadable)."""
    try:
        found = json.loads(params.get(TASKS, "{}"))
    except json.JSONDecodeError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {str(k): [str(lang) for lang in v] for k, v in found.items() if isinstance(v, list)}


def tasks_param(by_task: Mapping[str, list[str]]) -> str:
    """The `run.tasks` value as the runner logs it (a JSON object)."""
    return json.dumps({task: list(languages) for task, languages in by_task.items()})


def scopes(params: Mapping[str, str]) -> list[str]:
    """Every `<task>/<language>` the run evaluated, tasks in order, languages in training order."""
    return [scope(task, lang) for task, langs in tasks(params).items() for lang in langs]


# ---------------------------------------------------------------- deployment (benchmark.inference)

# Under a scope (`<task>/<language>`, what `metric` puts before a name): the merged model's
# scores and the inference cost of the base, the model as trained and the merged one.
MERGE_UNAVAILABLE = "merge.unavailable"  # param: why the method's model is not merged and checked
MAX_LOGIT_DIFF = "max_logit_diff"  # the largest |logit| difference from the unmerged model
CHANGED_PREDICTIONS = "changed_predictions"  # evaluated examples predicted otherwise when merged
CHECKED_EXAMPLES = "examples"  # the evaluation examples the merged model was evaluated on
UNMERGED = "unmerged_"  # `merged/unmerged_<metric>`: the model as trained on those (fewer)
MERGED_TIME = "merged/time_s"  # what the merged check took
INFERENCE_TIME = "inference/time_s"  # what the inference measurement took
INFERENCE_MEMORY_PARAM = "inference.memory_kind"  # how peak memory was measured
BASE_MODEL, ADAPTED_MODEL, MERGED_MODEL = "base", "adapted", "merged"
LATENCY_P50 = "latency_p50_ms"  # per generated token, batch 1
LATENCY_P95 = "latency_p95_ms"
TOKENS_PER_S = "tokens_per_s"  # at the evaluation batch size
PEAK_MEMORY = "peak_memory_mb"
SIZE_BYTES = "size_bytes"  # save_pretrained's folder (base, merged)
TRAINED_BYTES = "trained_bytes"  # the method's saved trained weights (adapted)


def merged_name(name: str) -> str:
    """A merged-model figure's name under a scope (`merged/bleu`)."""
    return f"merged/{name}"


def inference_name(model: str, figure: str) -> str:
    """An inference figure's name under a scope (`inference/adapted/latency_p50_ms`)."""
    return f"inference/{model}/{figure}"


def merged_metric(scope: str, name: str) -> str:
    """`<scope>/merged/<name>`."""
    return f"{scope}/{merged_name(name)}"


def inference_metric(scope: str, model: str, figure: str) -> str:
    """`<scope>/inference/<model>/<figure>`."""
    return f"{scope}/{inference_name(model, figure)}"


# ---------------------------------------------------------------- logged models and the registry

# Each language's model is logged at a step of its own: MLflow links to a logged model every
# metric the run logs at the model's step, and the run's metrics are at step 0 and up (the
# other language's among them), so a model holds only the metrics linked to it on purpose.
MODEL_STEP = -1
PROMOTED_BY = "adaptbench.promoted_by"  # a model version's tag: the comparison run that chose it
PROMOTED_METRIC = "adaptbench.promoted_metric"  # and by which metric: "bleu=2.73 (higher ...)"


def dataset_name(language: str, context: str) -> str:
    """A dataset input of the run (`python-evaluation`, `javascript-training`)."""
    return f"{language}-{context}"


def registered_name(name: str, scope: str) -> str:
    """The Model Registry name `--register-as NAME` gives a task's model of a language (a
    `<task>/<language>` scope): `NAME-<task>-<language>`."""
    return f"{name}-{scope.replace('/', '-')}"


def latest_alias(preset: str) -> str:
    """The alias `--register-as` points at the newest registered version of a preset's model."""
    return "latest-" + "".join(c if c.isalnum() or c in "_-" else "-" for c in preset)


# ---------------------------------------------------------------- retention

RETENTION_STATS = ("loss_before", "loss_after", "loss_delta")  # delta = after - before


def retention_metric(scope: str, held_out: str, stat: str) -> str:
    """The loss of the model trained on `scope` (its language) on a held-out set, before or
    after adaptation, or the delta (`retention/python/code-javascript/loss_delta`)."""
    return f"retention/{scope}/{held_out}/{stat}"


def split_retention(key: str) -> tuple[str, str, str] | None:
    """(scope, held-out set, stat) of a `retention_metric` key, else None."""
    head, _, rest = key.partition("/")
    scope, _, tail = rest.rpartition("/")
    scope, _, held_out = scope.rpartition("/")
    if head != "retention" or not scope or not held_out or tail not in RETENTION_STATS:
        return None
    return scope, held_out, tail


def retention_examples_param(held_out: str) -> str:
    """How many examples a held-out set scored."""
    return f"retention.{held_out}.examples"


def retention_fingerprint_param(held_out: str) -> str:
    """sha256 of the token ids a held-out set scored (equal across runs: the same set)."""
    return f"retention.{held_out}.fingerprint"


def retention_objective_param(held_out: str) -> str:
    """What a held-out set's pairs are (`docstring -> code`, `T5 span corruption of code`)."""
    return f"retention.{held_out}.objective"
