"""Trained models as MLflow pyfunc models: a bundle (method, trained weights, tokenizer, base).

Loading rebuilds base -> method -> trained weights rather than storing a merged copy: the
served model is then the trained one exactly, the artifact of a hub base holds only the trained
weights (megabytes, not a second copy of the base), and methods that cannot merge still serve.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import methods
from benchmark.config import ModelConfig, RunConfig
from benchmark.models import load_base

ROOT = Path(__file__).resolve().parent.parent
MODEL_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"
CODE_PACKAGES = ("benchmark", "methods", "metrics")
# Not copied with the code: the demo's weights and tokenizer (4.5 MB) are already in a bundle
# that needs them (a non-hub base is bundled), and compiled files are rebuilt where it loads.
CODE_LEFT_OUT = {ROOT / "benchmark" / "assets"}
REQUIREMENTS = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "tokenizers",
    "mlflow",
    "pandas",
    "tqdm",
)
BUNDLE_FORMAT = 1
MAX_ROWS = 64


def pip_requirements() -> list[str]:
    """The packages serving needs, pinned to the versions that trained the model."""
    pins = []
    for name in REQUIREMENTS:
        version = importlib.metadata.version(name).split("+")[0]  # drop local tags like +cpu
        pins.append(f"{name}=={version}")
    return pins


def signature(config: RunConfig) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string", "code")]),
        params=ParamSchema(
            [
                ParamSpec("max_new_tokens", "long", config.eval.max_new_tokens),
                ParamSpec("num_beams", "long", config.eval.num_beams),
                ParamSpec("length_penalty", "double", config.eval.length_penalty),
                ParamSpec("do_sample", "boolean", False),
                ParamSpec("temperature", "double", 1.0),
                ParamSpec("top_p", "double", 1.0),
            ]
        ),
    )


def write_bundle(
    model: torch.nn.Module,
    method: methods.Method,
    tokenizer: Any,
    config: RunConfig,
    base_revision: str,
    base_source: str,
    target: Path,
    bundle_base: bool = False,
) -> Path:
    """Write everything a fresh process needs to rebuild the trained model into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    method.save_trained(model, target / "trained.safetensors")
    tokenizer.save_pretrained(target / "tokenizer")
    bundled = bundle_base or base_source != "hub"
    if bundled:
        # A fresh copy of the base: the trained model's own modules are adapted in place.
        base, _, _ = load_base(config.model)
        base.save_pretrained(target / "base")
    meta = {
        "format": BUNDLE_FORMAT,
        "method": method.name,
        "method_config": method.config_dict(),
        "base": {
            "model": dataclasses.asdict(config.model),
            "source": base_source,
            "revision": base_revision,
            "bundled": bundled,
        },
        "max_source_length": config.data.max_source_length,
        "batch_size": config.eval.batch_size,
        "max_rows": MAX_ROWS,
        "generation": {
            "max_new_tokens": config.eval.max_new_tokens,
            "num_beams": config.eval.num_beams,
            "length_penalty": config.eval.length_penalty,
            "do_sample": False,
            "temperature": 1.0,
            "top_p": 1.0,
        },
    }
    (target / "adaptbench.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return target


def load_bundle(bundle: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Rebuild the trained model from a bundle: base, then the method, then its weights."""
    meta = json.loads((bundle / "adaptbench.json").read_text())
    base_info = meta["base"]
    base_config = ModelConfig(**base_info["model"])
    if base_info["bundled"]:
        base = AutoModelForSeq2SeqLM.from_pretrained(bundle / "base")
        base_name = f"{base_config.name} (bundled)"
    else:
        revision = base_info["revision"] or base_config.revision
        kwargs = {"revision": revision} if revision else {}
        base = AutoModelForSeq2SeqLM.from_pretrained(
            base_config.name, dtype=torch.float32, **kwargs
        )
        base_name = f"{base_config.name}@{revision or 'main'}"
    tokenizer = AutoTokenizer.from_pretrained(bundle / "tokenizer")
    method = methods.get_method(meta["method"], meta["method_config"])
    model = method.apply(base)
    method.load_trained(model, bundle / "trained.safetensors", base_name=base_name)
    model.eval()
    return model, tokenizer, meta


def _left_out(folder: str, names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if name == "__pycache__" or Path(folder, name).resolve() in CODE_LEFT_OUT
    ]


def log_pyfunc(
    bundle: Path, name: str, config: RunConfig, example_prompt: str, register_as: str = ""
) -> str:
    """Log the bundle as a pyfunc model on the active run; returns its model URI."""
    with tempfile.TemporaryDirectory() as staging:
        code_paths = []
        for package in CODE_PACKAGES:
            shutil.copytree(ROOT / package, Path(staging, package), ignore=_left_out)
            code_paths.append(str(Path(staging, package)))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),
            artifacts={"bundle": str(bundle)},
            code_paths=code_paths,
            signature=signature(config),
            input_example=pd.DataFrame({"prompt": [example_prompt]}),
            pip_requirements=pip_requirements(),
            registered_model_name=register_as or None,
        )
    return info.model_uri
