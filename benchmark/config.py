"""Run configuration: plain dataclasses, presets as small TOML files, `key=value` overrides.

Each setting is declared once with `setting(...)`: its default, its help and its range. The range
is checked by `make_config` before anything loads, so a bad value stops a run at the boundary
instead of crashing it after training (or, worse, being taken as something else).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The harness's callers have always found these here; they live in core, below every layer.
from core.errors import UsageError  # noqa: F401
from core.settings import build_dataclass, check_ranges, coerce, range_text, setting  # noqa: F401

PRESET_DIR = Path(__file__).parent / "presets"
KNOWN_LANGUAGES = ("python", "javascript")


@dataclass
class DataConfig:
    source: str = setting(
        "sample",
        "'sample' (bundled, offline), 'hub' (CodeXGLUE's parquet copy on the Hugging Face hub) "
        "or a local file or folder of CodeSearchNet files",
    )
    hub_dataset: str = setting(
        "google/code_x_glue_ct_code_to_text", "the hub data set read when source=hub"
    )
    hub_revision: str = setting("", "the hub data set's revision (empty: main)")
    train_size: int = setting(1000, "training examples per language", minimum=1)
    val_size: int = setting(200, "validation examples per language (validation loss)", minimum=0)
    eval_size: int = setting(200, "evaluation examples per language (generation)", minimum=1)
    eval_split: str = setting(
        "test", "the split the generation metrics are computed on", choices=("validation", "test")
    )
    selection_seed: int = setting(42, "shuffles each split before selection", minimum=0)
    # 0 would be read by the tokenizer as "no truncation": a length of at least one token.
    max_source_length: int = setting(64, "docstring tokens kept", minimum=1)
    max_target_length: int = setting(128, "code tokens kept for training", minimum=1)
    # A target cut at max_target_length loses its end-of-sequence token, so the model is never
    # taught to stop mid-function; true keeps it (CodeXGLUE's recipe).
    eos_after_cut: bool = setting(False, "keep the end token on targets cut at the length cap")
    # Leave training pairs whose code does not fit in max_target_length tokens (end token
    # included) out of training, so every target the model learns from ends; the validation
    # loss and the evaluation keep every example.
    skip_long_targets: bool = setting(
        False, "train only on pairs whose code fits max_target_length with its end token"
    )
    apply_csn_filters: bool = setting(True, "apply CodeSearchNet's own filters")
    skip_bad_rows: bool = setting(
        False, "skip (and count) malformed or undecodable rows instead of refusing the file"
    )


@dataclass
class ModelConfig:
    name: str = setting(
        "Salesforce/codet5-small",
        "a hub id, a local directory, 'demo' (the bundled pretrained small T5), 'demo-causal' "
        "(its Llama-style counterpart), 'tiny' (a small T5 built at random) or "
        "'config:<path.json>' (built at random from a transformers config)",
    )
    revision: str = setting("", "the hub model's revision (empty: main)")
    tokenizer: str = setting(
        "", "tokenizer (empty: the model's own, or the bundled one for built models)"
    )
    init_seed: int = setting(0, "seed of a built model's random weights", minimum=0)


@dataclass
class TrainConfig:
    epochs: int = setting(2, "passes over the training examples", minimum=1)
    batch_size: int = setting(8, "examples per optimizer micro-batch", minimum=1)
    learning_rate: float = setting(1e-4, "AdamW's learning rate", above=0)
    weight_decay: float = setting(0.0, "AdamW's weight decay", minimum=0)
    warmup_ratio: float = setting(0.06, "share of steps with a linear warm-up", minimum=0, below=1)
    max_grad_norm: float = setting(1.0, "gradient clipping norm", above=0)
    grad_accum_steps: int = setting(1, "micro-batches per optimizer step", minimum=1)
    seed: int = setting(42, "training seed", minimum=0)
    mixed_precision: str = setting("no", "autocast precision", choices=("no", "bf16", "fp16"))
    compile: bool = setting(False, "torch.compile the training forward and backward")
    max_steps: int = setting(0, "cap on optimizer steps (0: no cap)", minimum=0)
    max_consecutive_skips: int = setting(
        20, "non-finite steps in a row before the run stops as diverged", minimum=1
    )
    length_bucketing: bool = setting(True, "batch examples of similar length together")
    val_batch_size: int = setting(32, "batch size of the validation loss", minimum=1)
    log_every: int = setting(1, "log the training loss every N optimizer steps", minimum=1)
    # Checkpoints under <checkpoint_dir>/<run id>/<language>/ ("" = none): every
    # `checkpoint_every` optimizer steps (0 = epoch ends only) and at each epoch end; the last
    # `keep_checkpoints` are kept. They change no number; `run --resume <run id>` uses them.
    checkpoint_dir: str = setting("checkpoints", "checkpoint folder (empty: no checkpoints)")
    checkpoint_every: int = setting(
        500, "optimizer steps between checkpoints (0: epoch ends only)", minimum=0
    )
    keep_checkpoints: int = setting(2, "checkpoints kept per language", minimum=1)


@dataclass
class EvalConfig:
    batch_size: int = setting(32, "generation batch size", minimum=1)
    max_new_tokens: int = setting(128, "generation length cap", minimum=1)
    num_beams: int = setting(1, "beam search width (1: greedy)", minimum=1)
    # The loss before and after adaptation on held-out code and pretraining text (retention.py).
    retention_examples: int = setting(
        100, "examples per retention set: held-out code, pretraining text (0: none)", minimum=0
    )
    # Beam search only: a beam's score is its log-probability over its length to this power,
    # so above 1 longer beams win more often (transformers' `length_penalty`).
    length_penalty: float = setting(1.0, "beam search's length penalty")
    # The merged model evaluated beside the model as trained, and the inference cost against the
    # base (benchmark/inference.py; docs/inference.md).
    merged_check: bool = setting(
        True, "also evaluate the merged model of a method that merges (merged/* scores)"
    )
    merged_examples: int = setting(
        0, "evaluation examples the merged model is evaluated on (0: all)", minimum=0
    )
    inference_prompts: int = setting(
        8, "evaluation inputs timed against the base (0: no inference measurement)", minimum=0
    )
    inference_new_tokens: int = setting(
        16, "tokens each timed generation produces (greedy, end token suppressed)", minimum=1
    )
    metrics: list[str] = setting(
        help="metrics to compute ('all': each task's own, or names)",
        default_factory=lambda: ["all"],
    )
    # Evaluation-only tasks (humaneval): samples drawn per problem for pass@k, and how.
    samples: int = setting(10, "samples per problem of evaluation-only tasks", minimum=1)
    temperature: float = setting(0.8, "sampling temperature of those samples", above=0)
    problem_limit: int = setting(
        0, "problems of an evaluation-only task scored (0: all)", minimum=0
    )


@dataclass
class RunConfig:
    method: str = setting("lora", "the registered method")
    preset: str = setting("demo", "the settings preset")
    languages: list[str] = setting(
        help="languages, in order", default_factory=lambda: ["python", "javascript"]
    )
    tasks: list[str] = setting(
        help="registered tasks (`python -m benchmark tasks`), in order",
        default_factory=lambda: ["generation"],
    )
    protocol: str = setting(
        "fresh",
        "fresh (a new model per language) or sequential (one model trained on each in turn)",
        choices=("fresh", "sequential"),
    )
    experiment: str = setting("adaptbench", "the MLflow experiment")
    bundle_base: bool = setting(
        False, "store the base weights in the logged model even for hub bases"
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Method settings, validated by the method's own config dataclass.
    method_options: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """Every setting as `section.key -> value`, for logging as MLflow params."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for g in dataclasses.fields(value):
                    out[f"{f.name}.{g.name}"] = getattr(value, g.name)
            elif f.name == "method_options":
                continue
            else:
                out[f"run.{f.name}"] = value
        return out


def parse_overrides(items: list[str], whole: bool = False) -> dict[str, str]:
    """`["train.epochs=3", "method.r=8"]` -> `{"train.epochs": "3", "method.r": "8"}`.

    Each item may hold several space-separated settings (MLproject's `overrides`), unless
    `whole`: then each item is one setting whose value may hold spaces (`--set`, e.g. inline
    JSON)."""
    out: dict[str, str] = {}
    for item in items:
        for token in [item.strip()] if whole else item.split():
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise UsageError(
                    f"override {token!r} is not key=value (for example train.epochs=3 or "
                    "method.r=8)"
                )
            out[key.strip()] = value.strip()
    return out


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name: str) -> dict[str, Any]:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise UsageError(
            f"unknown preset {name!r}. Available presets: {', '.join(available_presets())}"
        )
    with path.open("rb") as fh:
        return tomllib.load(fh)


def make_config(method: str, preset: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Preset values, then overrides (`section.key`, `method.<field>`, or a top-level key)."""
    values = load_preset(preset)
    sections: dict[str, dict[str, Any]] = {
        "data": dict(values.get("data", {})),
        "model": dict(values.get("model", {})),
        "train": dict(values.get("train", {})),
        "eval": dict(values.get("eval", {})),
        "method": dict(values.get("method", {}).get(method, {})),
    }
    top = {k: v for k, v in values.items() if not isinstance(v, dict)}
    top.update(method=method, preset=preset)
    for key, value in (overrides or {}).items():
        section, dot, name = key.partition(".")
        if dot and section in sections:
            sections[section][name] = value
        elif not dot:
            top[key] = value
        else:
            raise UsageError(
                f"unknown setting {key!r}: use data.*, model.*, train.*, eval.*, method.* or a "
                "top-level key (languages, tasks, protocol, experiment)"
            )
    config = build_dataclass(
        RunConfig,
        {
            **top,
            "data": build_dataclass(DataConfig, sections["data"], "data"),
            "model": build_dataclass(ModelConfig, sections["model"], "model"),
            "train": build_dataclass(TrainConfig, sections["train"], "train"),
            "eval": build_dataclass(EvalConfig, sections["eval"], "eval"),
            "method_options": sections["method"],
        },
        "run",
    )
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    """Every setting's declared range, then the checks that span settings."""
    check_ranges(config, "run")
    for section in ("data", "model", "train", "eval"):
        check_ranges(getattr(config, section), section)
    checks = [
        (
            config.eval.length_penalty == 1.0 or config.eval.num_beams > 1,
            f"eval.length_penalty={config.eval.length_penalty} only acts in beam search: set "
            "eval.num_beams above 1, or leave the penalty at 1.0",
        ),
        (bool(config.languages), "languages must name at least one language"),
        (
            len(set(config.languages)) == len(config.languages),
            f"languages {','.join(config.languages)} names a language twice: name each once",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    unknown = [lang for lang in config.languages if lang not in KNOWN_LANGUAGES]
    if unknown:
        raise UsageError(
            f"languages: unknown {', '.join(unknown)}; known: {', '.join(KNOWN_LANGUAGES)}"
        )
    import tasks  # here, not at the top: the served model reads this module without tasks

    for task in tasks.resolve(config.tasks):
        if not any(task.covers(lang) for lang in config.languages):
            raise UsageError(
                f"tasks: {task.name} covers {', '.join(task.languages)}, none of the run's "
                f"languages ({', '.join(config.languages)}): add one, or leave {task.name} out"
            )
