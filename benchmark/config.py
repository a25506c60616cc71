"""Run configuration: plain dataclasses, presets as small TOML files, `key=value` overrides."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"
KNOWN_LANGUAGES = ("python", "javascript")


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and how to fix it."""


@dataclass
class DataConfig:
    # "sample" (bundled, offline), "hub" (CodeXGLUE parquet on the HF hub) or a local path.
    source: str = "sample"
    hub_dataset: str = "google/code_x_glue_ct_code_to_text"
    hub_revision: str = ""
    train_size: int = 1000
    val_size: int = 200
    eval_size: int = 200
    eval_split: str = "test"  # which split the generation metrics are computed on
    selection_seed: int = 42
    max_source_length: int = 64
    max_target_length: int = 128
    # A target cut at max_target_length loses its end-of-sequence token, so the model is never
    # taught to stop mid-function; true keeps it (CodeXGLUE's recipe).
    eos_after_cut: bool = False
    # Leave training pairs whose code does not fit in max_target_length tokens (end token
    # included) out of training, so every target the model learns from ends; the validation
    # loss and the evaluation keep every example.
    skip_long_targets: bool = False
    apply_csn_filters: bool = True
    skip_bad_rows: bool = False


@dataclass
class ModelConfig:
    # A hub id, a local directory, "demo" (the bundled pretrained small T5), "tiny" (a small T5
    # built at random) or "config:<path.json>" (built at random from a transformers config).
    name: str = "Salesforce/codet5-small"
    revision: str = ""
    tokenizer: str = ""  # defaults to the model's own, or the bundled one for built models
    init_seed: int = 0


@dataclass
class TrainConfig:
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    seed: int = 42
    mixed_precision: str = "no"  # no | bf16 | fp16
    compile: bool = False  # torch.compile the training forward and backward (dynamic shapes)
    max_steps: int = 0  # 0 = no cap; a cap shortens a smoke run
    max_consecutive_skips: int = 20
    length_bucketing: bool = True
    val_batch_size: int = 32
    log_every: int = 1
    # Checkpoints under <checkpoint_dir>/<run id>/<language>/ ("" = none): every
    # `checkpoint_every` optimizer steps (0 = epoch ends only) and at each epoch end; the last
    # `keep_checkpoints` are kept. They change no number; `run --resume <run id>` uses them.
    checkpoint_dir: str = "checkpoints"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2


@dataclass
class EvalConfig:
    batch_size: int = 32
    max_new_tokens: int = 128
    num_beams: int = 1
    # Beam search only: a beam's score is its log-probability over its length to this power,
    # so above 1 longer beams win more often (transformers' `length_penalty`).
    length_penalty: float = 1.0
    metrics: list[str] = field(default_factory=lambda: ["all"])
    humaneval: bool = False  # also run HumanEval (Python tasks): pass@1 and pass@10
    humaneval_samples: int = 10
    humaneval_temperature: float = 0.8
    humaneval_limit: int = 0  # 0: all 164 problems; fewer for a quick look


@dataclass
class RunConfig:
    method: str = "lora"
    preset: str = "demo"
    languages: list[str] = field(default_factory=lambda: ["python", "javascript"])
    protocol: str = "fresh"  # fresh: a new model per language; sequential: one model, in turn
    experiment: str = "adaptbench"
    bundle_base: bool = False  # store the base weights in the logged model even for hub bases
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


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn `value` (often a string from the command line) into `annotation`'s type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, options[0], where)
    if origin is list:
        (item_type,) = typing.get_args(annotation) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where}: expected a comma-separated list, got {value!r}")
        return [coerce(v, item_type, where) for v in value]
    if origin is dict or annotation is dict or annotation is Any:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise UsageError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if annotation is float else _to_int(value)
        except (TypeError, ValueError):
            kind = "an integer" if annotation is int else "a number"
            raise UsageError(f"{where}: expected {kind}, got {value!r}") from None
        return number
    if annotation is str:
        return str(value)
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    return int(value)


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build `cls` from `values`, coercing types; an unknown key is an error naming it."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        known = f"Known fields: {', '.join(names)}" if names else "It takes no settings"
        raise UsageError(f"unknown {where} field(s): {', '.join(unknown)}. {known}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["train.epochs=3", "method.r=8"]` -> `{"train.epochs": "3", "method.r": "8"}`."""
    out: dict[str, str] = {}
    for item in items:
        for token in item.split():
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
                "top-level key (languages, protocol, experiment)"
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
    """Range checks that a type alone cannot express."""
    checks = [
        (config.train.epochs >= 1, "train.epochs must be at least 1"),
        (config.train.batch_size >= 1, "train.batch_size must be at least 1"),
        (config.train.learning_rate > 0, "train.learning_rate must be positive"),
        (config.train.grad_accum_steps >= 1, "train.grad_accum_steps must be at least 1"),
        (config.train.max_steps >= 0, "train.max_steps must be 0 (no cap) or positive"),
        (
            config.train.checkpoint_every >= 0,
            "train.checkpoint_every must be 0 (epoch ends only) or a number of steps",
        ),
        (config.train.keep_checkpoints >= 1, "train.keep_checkpoints must be at least 1"),
        (
            config.train.mixed_precision in ("no", "bf16", "fp16"),
            "train.mixed_precision must be one of: no, bf16, fp16",
        ),
        (config.data.train_size >= 1, "data.train_size must be at least 1"),
        (config.data.val_size >= 0, "data.val_size must be 0 or more"),
        (config.data.eval_size >= 1, "data.eval_size must be at least 1"),
        (
            config.data.eval_split in ("validation", "test"),
            "data.eval_split must be validation or test",
        ),
        (config.eval.max_new_tokens >= 1, "eval.max_new_tokens must be at least 1"),
        (config.eval.num_beams >= 1, "eval.num_beams must be at least 1"),
        (
            math.isfinite(config.eval.length_penalty),
            "eval.length_penalty must be a finite number",
        ),
        (
            config.eval.length_penalty == 1.0 or config.eval.num_beams > 1,
            f"eval.length_penalty={config.eval.length_penalty} only acts in beam search: set "
            "eval.num_beams above 1, or leave the penalty at 1.0",
        ),
        (
            config.protocol in ("fresh", "sequential"),
            "protocol must be fresh (a new model per language) or sequential (one model "
            "trained on each language in turn)",
        ),
        (bool(config.languages), "languages must name at least one language"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
