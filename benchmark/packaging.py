"""Trained models as MLflow pyfunc models: a bundle (method, trained weights, tokenizer, base).

Loading rebuilds base -> method -> trained weights rather than storing a merged copy: the
served model is then the trained one exactly, the artifact of a hub base holds only the trained
weights (megabytes, not a second copy of the base), and methods that cannot merge still serve.
A manifest (size and sha256 of every file) is written last and checked before anything loads, so
a damaged or incomplete bundle is refused by name instead of serving whatever its bytes decode to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_STATE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from transformers import AutoTokenizer

import methods
from benchmark.config import ModelConfig, RunConfig, UsageError
from benchmark.model_registry import set_latest_alias
from benchmark.models import auto_class_for, load_base
from core import record as rec  # the run record's names

ROOT = Path(__file__).resolve().parent.parent
MODEL_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"
CODE_PACKAGES = ("core", "benchmark", "methods", "metrics", "tasks")
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
# 2: the bundle has a manifest. Format 1 bundles (logged before it) load unchecked, with a warning.
BUNDLE_FORMAT = 2
META = "adaptbench.json"
MANIFEST = "manifest.json"
META_KEYS = (
    "method",
    "method_config",
    "base",
    "max_source_length",
    "batch_size",
    "max_rows",
    "generation",
)
BASE_KEYS = ("model", "revision", "bundled")
MAX_ROWS = 64
LOG_AGAIN = "the model must be logged again (rerun the run that trained it)"

logger = logging.getLogger(__name__)


class BundleError(MlflowException):
    """A logged model that cannot be rebuilt as logged: a damaged file, or a base out of reach.

    An MlflowException: MLflow passes it on from `load_context` as it is, so `load_model`'s caller,
    the `generate` CLI and the server's log all get this one line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_STATE)


def pip_requirements() -> list[str]:
    """The packages serving needs, pinned to the versions that trained the model."""
    pins = []
    for name in REQUIREMENTS:
        version = importlib.metadata.version(name).split("+")[0]  # drop local tags like +cpu
        pins.append(f"{name}=={version}")
    return pins


def signature(config: RunConfig, serves: str = "code") -> ModelSignature:
    """A prompt column in, the task's output column (`serves`: code, docstring, ...) out."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string", serves)]),
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
    task: dict[str, Any] | None = None,
) -> Path:
    """Write everything a fresh process needs to rebuild the trained model into `target`;
    `task`: what the served model does (`name`, `prompt` template, the column it `serves`, and
    its input's `max_source_length`), generation's docstring -> code without one."""
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
        "max_source_length": (task or {}).get("max_source_length", config.data.max_source_length),
        "task": {k: v for k, v in (task or {}).items() if k != "max_source_length"},
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
    (target / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    write_manifest(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(bundle: Path) -> list[str]:
    return sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.relative_to(bundle).as_posix() != MANIFEST
    )


def write_manifest(bundle: Path) -> Path:
    """Record the size and sha256 of every file in `bundle` in its manifest (written last)."""
    files = {
        name: {"size": (bundle / name).stat().st_size, "sha256": _sha256(bundle / name)}
        for name in _bundle_files(bundle)
    }
    path = bundle / MANIFEST
    path.write_text(json.dumps({"format": 1, "files": files}, indent=2, sort_keys=True))
    return path


def _damaged(name: str, problem: str) -> BundleError:
    return BundleError(f"the logged model's file {name} {problem}: {LOG_AGAIN}")


def verify_bundle(bundle: Path) -> None:
    """Refuse a bundle whose files differ from its manifest: missing, cut, changed or added."""
    try:
        manifest = json.loads((bundle / MANIFEST).read_text())
        listed = manifest["files"]
        expected = {name: (int(f["size"]), str(f["sha256"])) for name, f in listed.items()}
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as err:
        problem = f"is not the manifest adaptbench writes ({type(err).__name__}: {err})"
        raise _damaged(MANIFEST, problem.replace("\n", " ")) from None
    for name, (size, sha256) in expected.items():
        path = bundle / name
        if not path.is_file():
            raise _damaged(name, "is missing")
        actual = path.stat().st_size
        if actual != size:
            raise _damaged(name, f"is {actual:,} bytes, {size:,} when logged (cut or replaced)")
        if _sha256(path) != sha256:
            raise _damaged(name, "does not match the sha256 recorded when logged (corrupted)")
    # The loaders pick files by name from these folders: a file the manifest does not list (a
    # second weights file, an added_tokens.json) could change the model that loads.
    extra = [name for name in _bundle_files(bundle) if name not in expected]
    if extra:
        raise BundleError(
            f"the logged model holds {extra[0]}, a file not in its manifest ({len(extra)} such "
            f"in all): remove it, or {LOG_AGAIN}"
        )


def read_meta(bundle: Path) -> dict[str, Any]:
    """The bundle's adaptbench.json, checked for the keys loading needs."""
    path = bundle / META
    if not path.is_file():
        raise _damaged(META, "is missing")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(META, f"is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("base"), dict):
        raise _damaged(META, "is not the metadata adaptbench writes (no base object)")
    absent = [k for k in META_KEYS if k not in meta]
    absent += [f"base.{k}" for k in BASE_KEYS if k not in meta["base"]]
    if absent:
        raise _damaged(META, f"lacks {', '.join(absent)}")
    return meta


def check_bundle(bundle: Path) -> dict[str, Any]:
    """Verify the bundle against its manifest and return its metadata; one-line BundleErrors."""
    if (bundle / MANIFEST).exists():
        verify_bundle(bundle)
    meta = read_meta(bundle)
    written = meta.get("format", 1)
    if not isinstance(written, int) or written > BUNDLE_FORMAT:
        raise BundleError(
            f"the logged model's bundle has format {written!r}; this adaptbench reads formats "
            f"1 to {BUNDLE_FORMAT}: load it with the adaptbench version that logged it"
        )
    if not (bundle / MANIFEST).exists():
        if written >= 2:
            raise _damaged(MANIFEST, "is missing (the bundle was written with one)")
        # Format 1 predates the manifest: such a model was whole when logged, and refusing it
        # would leave retraining as the only way to use a run logged before this check existed.
        logger.warning(
            "this model was logged before adaptbench wrote a manifest (bundle format 1): its "
            "files cannot be checked, so damage would show only as wrong output; log it again "
            "to have it verified when it loads"
        )
    return meta


def _hub_base(name: str, revision: str) -> torch.nn.Module:
    from benchmark import hub

    kwargs = {"revision": revision} if revision else {}
    if not hub.hub_offline():  # an unreachable hub: one line now, not minutes of retries
        try:
            hub.require_hub(f"the logged model's base {name!r}")
        except UsageError as err:
            raise BundleError(f"{err}; or log it with --set bundle_base=true") from None
    try:
        auto = auto_class_for(name, f"the logged model's base {name!r}", **kwargs)
        return auto.from_pretrained(name, dtype=torch.float32, **kwargs)
    except OSError as err:
        said = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BundleError(
            f"this model's base, {name} at revision {revision or 'main'}, is not in the bundle "
            f"and could not be loaded ({said}): the Hugging Face hub, or a Hugging Face cache "
            "holding that revision (HF_HOME, with HF_HUB_OFFLINE=1 to use it without the hub), "
            "must be reachable where the model loads; log it with --set bundle_base=true for a "
            "self-contained model"
        ) from None


def load_bundle(bundle: Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Rebuild the trained model from a bundle: base, then the method, then its weights."""
    meta = check_bundle(bundle)
    base_info = meta["base"]
    base_config = ModelConfig(**base_info["model"])
    if base_info["bundled"]:
        base = auto_class_for(bundle / "base", "the bundled base").from_pretrained(bundle / "base")
        base_name = f"{base_config.name} (bundled)"
    else:
        revision = base_info["revision"] or base_config.revision
        base = _hub_base(base_config.name, revision)
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
    bundle: Path,
    name: str,
    config: RunConfig,
    example_prompt: str,
    register_as: str = "",
    serves: str = "code",
) -> str:
    """Log the bundle as a pyfunc model on the active run; returns its model URI. With
    `register_as`, registered under that name, with alias `latest-<preset>` on the version."""
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
            signature=signature(config, serves),
            input_example=pd.DataFrame({"prompt": [example_prompt]}),
            pip_requirements=pip_requirements(),
            registered_model_name=register_as or None,
            step=rec.MODEL_STEP,  # only the metrics linked to it on purpose (core.record)
        )
    if register_as:
        set_latest_alias(register_as, info.registered_model_version, config.preset)
    return info.model_uri
