"""Export a logged model as a plain Hugging Face folder: merged weights, or its PEFT adapter.

A logged model rebuilds base -> method -> trained weights through adaptbench (see packaging).
An export is what a user takes elsewhere: with `merged`, the method folded into the base by its
own `Method.merge`, saved with `save_pretrained` (`AutoModelForSeq2SeqLM.from_pretrained(out)`
loads it with transformers alone); without, a method whose every trained weight lives in a PEFT
adapter is saved as that adapter (`PeftModel.save_pretrained`: adapter_config.json and its
weights) next to the tokenizer and, when the base is not on the hub, the base itself. Every
export says where it came from in export.json and README.md.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

import methods
from core.errors import UsageError
from core.families import FAMILIES, family_of

NOTE = "export.json"
FORMAT = 1
BASE_FOLDER = "base"  # a PEFT adapter's base when it is not on the hub


def check_out(out: Path, force: bool) -> None:
    """Refuse an `out` that holds anything unless `force` and it is an earlier export."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file, not a folder: name a new folder for the export")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise UsageError(
            f"--out {out} exists and is not empty: name a new folder, or pass --force to replace "
            "an earlier export there"
        )
    if not (out / NOTE).is_file():
        raise UsageError(
            f"--out {out} holds files that are not an adaptbench export (it has no {NOTE}): "
            "--force replaces only an earlier export; name a new folder or empty this one yourself"
        )


def bundle_of(model_uri: str, into: Path) -> Path:
    """Download the logged model at `model_uri` into `into`; the folder of its adaptbench bundle."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(into))
        )
        flavor = Model.load(str(local)).flavors.get("python_function", {})
    except MlflowException as err:
        said = " ".join(err.message.split())[:300]
        raise UsageError(
            f"--model-uri {model_uri}: MLflow cannot load it ({said}): give a logged model, e.g. "
            "runs:/<run_id>/generation_python_model or models:/<name>/<version>"
        ) from None
    artifact = flavor.get("artifacts", {}).get("bundle", {}).get("path")
    if not artifact or not (local / artifact).is_dir():
        raise UsageError(
            f"--model-uri {model_uri}: not a model adaptbench logged (no bundle artifact in its "
            "MLmodel): export takes the models `python -m benchmark run` logs"
        )
    return local / artifact


def adapter_shortfall(model: nn.Module) -> tuple[int, int]:
    """(trained values outside the PEFT adapter, trained values in all); (n, n) if not PEFT."""
    trained, _ = methods.count_parameters(model)
    if not _is_peft(model):
        return trained, trained
    from peft.utils import get_peft_model_state_dict

    in_adapter = sum(t.numel() for t in get_peft_model_state_dict(model).values())
    return max(trained - in_adapter, 0), trained


def _is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _merged(method: methods.Method, model: nn.Module) -> nn.Module:
    try:
        plain = method.merge(model)
    except NotImplementedError as err:
        way_out = ""
        if adapter_shortfall(model)[0] == 0:
            way_out = ": export it without --merged, as a PEFT adapter folder"
        raise UsageError(f"--merged: {err}{way_out}") from None
    return plain.eval()


def _decoding(meta: dict[str, Any]) -> dict[str, Any]:
    """The served model's default decoding, as generation_config fields."""
    gen = meta["generation"]
    values = {"max_new_tokens": gen["max_new_tokens"], "num_beams": gen["num_beams"]}
    if gen["num_beams"] > 1:
        values["length_penalty"] = gen["length_penalty"]
    return values


def _save_plain(plain: nn.Module, tokenizer: Any, meta: dict[str, Any], target: Path) -> None:
    for name, value in _decoding(meta).items():
        setattr(plain.generation_config, name, value)
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)


def _save_adapter(
    model: nn.Module, tokenizer: Any, meta: dict[str, Any], bundle: Path, target: Path, out: Path
) -> None:
    """The PEFT adapter, pointing at its base: the hub id and commit, or a copy in base/."""
    base = meta["base"]
    config = model.peft_config[model.active_adapter]
    if base["bundled"]:
        # The live base holds the adapter's modules: the bundle's copy is the clean one.
        shutil.copytree(bundle / "base", target / BASE_FOLDER, copy_function=shutil.copyfile)
        config.base_model_name_or_path = str((out / BASE_FOLDER).resolve())
    else:
        config.base_model_name_or_path = base["model"]["name"]
        config.revision = base["revision"] or None
    # Training never resizes the vocabulary: the embeddings are the base's, not the adapter's.
    model.save_pretrained(target, save_embedding_layers=False)
    tokenizer.save_pretrained(target)


def export(
    model_uri: str, out: str | Path, merged: bool = False, force: bool = False
) -> dict[str, Any]:
    """Write `model_uri`'s model to `out` as a plain transformers folder (`merged`, or a method
    that trains nothing) or as a PEFT adapter folder; returns what export.json records."""
    from benchmark.packaging import load_bundle

    out = Path(out).expanduser()
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adaptbench-export-") as downloads:
        bundle = bundle_of(model_uri, Path(downloads))
        model, tokenizer, meta = load_bundle(bundle)
        method = methods.get_method(meta["method"], meta["method_config"])
        outside, trained = adapter_shortfall(model)
        if merged or trained == 0:
            kind = "transformers"
        elif outside == 0:
            kind = "peft_adapter"
        elif _is_peft(model):
            raise UsageError(
                f"method {method.name} trains weights outside its PEFT adapter ({outside:,} of "
                f"{trained:,} trained values, e.g. new layers): a PEFT adapter folder would lose "
                "them; pass --merged for a plain transformers folder"
            )
        else:
            raise UsageError(
                f"method {method.name} is not a PEFT adapter: its trained weights load only "
                "through adaptbench; pass --merged for a plain transformers folder"
            )
        # Beside `out` (one rename away), made like any new folder (mkdtemp's is private).
        staging = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
        staging.mkdir()
        try:
            if kind == "transformers":
                plain = _merged(method, model) if merged else model
                _save_plain(plain, tokenizer, meta, staging)
            else:
                _save_adapter(model, tokenizer, meta, bundle, staging, out)
            dtype = next(model.parameters()).dtype
            note = _note(model_uri, method, meta, kind, merged and trained > 0, dtype)
            note["family"] = family_of(model.config).name
            note["auto_class"] = family_of(model.config).auto_class
            (staging / NOTE).write_text(json.dumps(note, indent=2, sort_keys=True) + "\n")
            (staging / "README.md").write_text(readme(note))
            _replace(out, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return note


def _replace(out: Path, staging: Path) -> None:
    """Put `staging` where `out` is; an earlier export there (checked) goes only once it is."""
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.replaced")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def _note(
    model_uri: str,
    method: methods.Method,
    meta: dict[str, Any],
    kind: str,
    merged: bool,
    dtype: torch.dtype,
) -> dict[str, Any]:
    import importlib.metadata

    base = meta["base"]
    return {
        "format": FORMAT,
        "source_model_uri": model_uri,
        "method": method.name,
        "method_config": meta["method_config"],
        "merged": merged,
        "kind": kind,
        "base": {
            "name": base["model"]["name"],
            "source": base.get("source", ""),
            "revision": base["revision"],
            "in_export": kind == "peft_adapter" and base["bundled"],
        },
        "max_source_length": meta["max_source_length"],
        "generation": _decoding(meta),
        "versions": {
            name: importlib.metadata.version(name) for name in ("torch", "transformers", "peft")
        },
        "dtype": str(dtype).replace("torch.", ""),
    }


def readme(note: dict[str, Any]) -> str:
    """The export's README.md: where it came from and how to load it."""
    base = note["base"]
    base_line = f"{base['name']} ({base['source']}, revision {base['revision'] or 'main'})"
    auto = note.get("auto_class", "AutoModelForSeq2SeqLM")
    if note["kind"] == "transformers":
        what = (
            f"the {note['method']} model folded into its base by the method's own merge"
            if note["merged"]
            else "the base as it is (the method trains nothing)"
            if note["method"] == "none"
            else "the model as it is"
        )
        load = (
            f"from transformers import {auto}, AutoTokenizer\n\n"
            f'model = {auto}.from_pretrained("THIS_FOLDER")\n'
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")\n'
        )
    else:
        what = f"the {note['method']} method's PEFT adapter (not merged)"
        base_call = (
            f'{auto}.from_pretrained("THIS_FOLDER/base")'
            if base["in_export"]
            else f'{auto}.from_pretrained("{base["name"]}", revision="{base["revision"]}")'
        )
        load = (
            "from peft import PeftModel\n"
            f"from transformers import {auto}, AutoTokenizer\n\n"
            f'model = PeftModel.from_pretrained({base_call}, "THIS_FOLDER")\n'
            'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")\n'
        )
    settings = ", ".join(f"{k}={v}" for k, v in note["generation"].items())
    return (
        f"# Exported adaptbench model\n\n"
        f"- source: `{note['source_model_uri']}`\n"
        f"- what: {what}\n"
        f"- method: `{note['method']}` {json.dumps(note['method_config'], sort_keys=True)}\n"
        f"- base: {base_line}{' (copied into base/)' if base['in_export'] else ''}\n"
        f"- merged: {'yes' if note['merged'] else 'no'}\n\n"
        "Load it (transformers"
        f"{' and peft' if note['kind'] == 'peft_adapter' else ''} only):\n\n"
        f"```python\n{load}```\n\n"
        f"The served model truncates prompts to {note['max_source_length']} tokens "
        f"(`tokenizer(prompts, truncation=True, max_length={note['max_source_length']}, "
        f'padding=True, return_tensors="pt")`){_causal_layout(note)} and decodes with {settings}'
        f"{' (generation_config.json holds them)' if note['kind'] == 'transformers' else ''}.\n"
    )


def _causal_layout(note: dict[str, Any]) -> str:
    family = FAMILIES.get(note.get("family", "t5"))
    if family is None or not family.causal:
        return ""
    return (
        ", ends each with the tokenizer's end token where the tokenizer does not, pads on the "
        'left (`tokenizer.padding_side = "left"`), and keeps only the tokens after the prompt'
    )
