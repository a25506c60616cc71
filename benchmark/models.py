"""Base models and tokenizers: a hub id, a local directory, or a model built from a config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AddedToken,
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from benchmark import hub
from benchmark.config import ModelConfig, UsageError
from core import families

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_TOKENIZER = ASSETS / "demo-tokenizer"
# The demo's base: a small T5 pretrained on code by scripts/pretrain_demo_model.py (model card
# in its folder). `model.name=demo` names it.
DEMO_MODEL = ASSETS / "demo-model"
# Its decoder-only counterpart: a small Llama-style model pretrained on the same data by the same
# script (`--family llama`). `model.name=demo-causal` names it.
DEMO_CAUSAL_MODEL = ASSETS / "demo-causal-model"

# A T5 small enough to train on a CPU in seconds: the `demo` preset's base when no pretrained
# demo model is configured (`tiny`). `tiny-<family>` builds another family's tiny model.
TINY_T5 = {k: v for k, v in families.T5.tiny.items() if k != "model_type"}
TINY_PREFIX = "tiny-"


@dataclass
class BaseModelInfo:
    """What identifies the base model, for params and for rebuilding it elsewhere."""

    name: str
    source: str  # hub | local | built
    # The commit a hub model was loaded at, a digest of a local folder's files (or its
    # snapshot's commit), a config hash for built ones.
    revision: str
    family: str = "t5"  # core.families: everything downstream follows it


def _tokenizer(name_or_path: str, revision: str = "") -> PreTrainedTokenizerBase:
    kwargs = {"revision": revision} if revision else {}
    kwargs.update(_legacy_special_tokens(name_or_path, kwargs))
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Decoder-only tokenizers (GPT-2's, Llama's) often have none; padding is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _legacy_special_tokens(name_or_path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`additional_special_tokens` as AddedToken objects where the files list them as dicts.

    transformers 4.x wrote them as `{"content": ..., "lstrip": ...}` entries (codet5-small's
    special_tokens_map.json has its 100 sentinels so); transformers 5.x passes such entries on
    unconverted and fails with `TypeError: Input must be a List[Union[str, AddedToken]]`. Given
    as AddedToken objects, with their flags, they load the same tokens under either version.
    """
    from transformers.utils import cached_file

    for filename in ("special_tokens_map.json", "tokenizer_config.json"):
        path = cached_file(
            name_or_path,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **kwargs,
        )
        if not path:
            continue
        entries = json.loads(Path(path).read_text(encoding="utf-8")).get(
            "additional_special_tokens"
        )
        if not entries:
            continue
        if not any(isinstance(entry, dict) for entry in entries):
            return {}  # strings (or already the 5.x form): nothing to normalise
        tokens = []
        for entry in entries:
            if isinstance(entry, dict):
                fields = {k: v for k, v in entry.items() if k not in ("__type", "special")}
                entry = AddedToken(**fields, special=True)
            tokens.append(entry)
        return {"additional_special_tokens": tokens}
    return {}


def _built(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    # A private RNG stream: building the model must not depend on, or disturb, the global seed.
    family = families.family_of(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(transformers, family.auto_class).from_config(config)


def _read_config_json(path: Path, name: str) -> dict:
    """A `config:` file's JSON object, or a one-line error naming the file and the fault."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(
            f"model.name {name!r}: {path} is not UTF-8 text: give a transformers config.json"
        ) from None
    except json.JSONDecodeError as err:
        raise UsageError(
            f"model.name {name!r}: {path} is not valid JSON ({err.msg} at line {err.lineno}, "
            f"column {err.colno}): give a transformers config.json"
        ) from None
    if not isinstance(values, dict):
        raise UsageError(
            f"model.name {name!r}: {path} holds a JSON {type(values).__name__}, not an object: "
            "give a transformers config.json"
        )
    return values


def build_config(name: str, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The config for `tiny`, `tiny-<family>` or `config:<path.json>` (a config.json of any
    supported family; one without `model_type` is read as T5's)."""
    if name == "tiny":
        values = dict(families.T5.tiny, vocab_size=len(tokenizer))
    elif name.startswith(TINY_PREFIX):
        family = families.FAMILIES.get(name.removeprefix(TINY_PREFIX))
        if family is None:
            known = ", ".join(TINY_PREFIX + f for f in families.FAMILIES)
            raise UsageError(f"model.name {name!r}: no such tiny model; use one of tiny, {known}")
        values = dict(family.tiny, vocab_size=len(tokenizer))
    else:
        path = Path(name.removeprefix("config:")).expanduser()
        if not path.is_file():
            raise UsageError(f"model.name {name!r}: no config file at {path}")
        values = _read_config_json(path, name)
    values.setdefault("model_type", "t5")
    family = families.family_of_type(values.get("model_type"), f"model.name {name!r}")
    values.setdefault("pad_token_id", tokenizer.pad_token_id)
    values.setdefault("eos_token_id", tokenizer.eos_token_id)
    if family.causal:
        bos = tokenizer.bos_token_id
        values.setdefault("bos_token_id", tokenizer.eos_token_id if bos is None else bos)
    else:
        values.setdefault("decoder_start_token_id", tokenizer.pad_token_id)
    model_type = values.pop("model_type")
    try:
        config = AutoConfig.for_model(
            model_type, **{k: v for k, v in values.items() if k not in ("architectures",)}
        )
    except Exception as err:  # transformers' strict config fields raise their own kind
        text = " ".join(str(err).split())
        raise UsageError(
            f"model.name {name!r}: not a usable {family.label} config ({text}): fix the field it "
            "names"
        ) from None
    if config.vocab_size < len(tokenizer):
        raise UsageError(
            f"model.name {name!r}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{len(tokenizer)} tokens"
        )
    return config


def load_base(
    config: ModelConfig,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, BaseModelInfo]:
    """The base model (eval mode, fp32), its tokenizer, and what identifies it."""
    name = config.name
    if name == "tiny" or name.startswith((TINY_PREFIX, "config:")):
        tokenizer = _tokenizer(config.tokenizer or str(DEMO_TOKENIZER), _tokenizer_revision(config))
        model_config = build_config(name, tokenizer)
        try:
            model = _built(model_config, config.init_seed)
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. a negative or text size
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(
                f"model.name {name!r}: cannot build a model from this config ({first}): check "
                "its sizes (positive integers) against a transformers config.json of its family"
            ) from None
        digest = _config_digest(model_config, config.init_seed)
        info = BaseModelInfo(name=name, source="built", revision=digest, family=_family(model))
    else:
        if name == "demo":
            name = str(DEMO_MODEL)
        elif name == "demo-causal":
            name = str(DEMO_CAUSAL_MODEL)
        folder = Path(name).expanduser()
        if folder.is_dir():
            model = _from_pretrained(name, {})
            tokenizer = _tokenizer(config.tokenizer or name, _tokenizer_revision(config))
            revision = _folder_revision(folder)
            info = BaseModelInfo(name, "local", revision, _family(model))
        else:
            # Pinned to one commit, resolved before anything loads: the run logs it and a
            # logged model rebuilds its base from exactly it.
            commit = resolve_commit(name, config.revision)
            model = _from_pretrained(name, {"revision": commit})
            revision = _tokenizer_revision(config) if config.tokenizer else commit
            tokenizer = _tokenizer(config.tokenizer or name, revision)
            info = BaseModelInfo(name=name, source="hub", revision=commit, family=_family(model))
    model.eval()
    return model, tokenizer, info


def resolve_commit(
    name: str, revision: str = "", marker: str = "config.json", setting: str = "model.name"
) -> str:
    """The commit hub model `name` stands for at `revision` ("" = main): the hub cache's when
    offline, the hub's answer when online. A name that resolves to none is refused."""
    if hub.hub_offline():
        snapshot = hub.cached_snapshot(name, revision, "model", marker)
        if snapshot is None:
            at = f" at revision {revision!r}" if revision else ""
            raise UsageError(
                f"{setting} {name!r}{at} is not in the hub cache ({hub.cache_dir()}) and "
                f"HF_HUB_OFFLINE is set: fill the cache where there is internet (`hf download "
                f"{name}`{f' --revision {revision}' if revision else ''}), or point {setting} "
                "at a local folder saved with save_pretrained"
            )
        return snapshot.name
    return hub.hub_commit(name, revision, "model", setting)


def _from_pretrained(name: str, kwargs: dict[str, Any]) -> PreTrainedModel:
    """The checkpoint at `name` with its family's Auto class (read from its config first)."""
    hint = (
        "Use a hub id (needs internet, or HF_HUB_OFFLINE=1 and the hub cache filled by `hf "
        "download`), a local directory saved with save_pretrained, 'tiny', 'tiny-<family>', or "
        "'config:<path.json>'"
    )
    try:
        auto = auto_class_for(name, f"model.name {name!r}", **kwargs)
        # fp32 whatever the checkpoint's dtype (the demo model is stored in fp16): training
        # precision is train.mixed_precision's business.
        return auto.from_pretrained(name, dtype=torch.float32, **kwargs)
    except OSError as err:
        raise UsageError(f"model.name {name!r} could not be loaded ({err}). {hint}") from None


def auto_class_for(name: str | Path, what: str, **kwargs: Any) -> type:
    """The transformers Auto class of the checkpoint at `name` (hub id or folder), by the family
    its config.json names; OSError when there is no config to read, UsageError for a model type
    outside the supported families."""
    try:
        model_config = AutoConfig.from_pretrained(name, **kwargs)
    except (ValueError, KeyError) as err:  # a model type this transformers does not know
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"{what}: its config.json is not one transformers can read ({first}): use a model "
            f"of {families.supported()}"
        ) from None
    return getattr(transformers, families.family_of(model_config, what).auto_class)


def _family(model: PreTrainedModel) -> str:
    return families.family_of(model.config).name


def _tokenizer_revision(config: ModelConfig) -> str:
    """The commit of a tokenizer named apart from the model (model.tokenizer) on the hub; ""
    for none or a folder."""
    if not config.tokenizer or Path(config.tokenizer).expanduser().is_dir():
        return ""
    return resolve_commit(config.tokenizer, "", "tokenizer_config.json", "model.tokenizer")


def _folder_revision(folder: Path) -> str:
    """What identifies a local model folder: the commit when it is a hub cache snapshot, else a
    digest of its files (names and contents), so two different folders never log the same."""
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and hub.COMMIT.fullmatch(resolved.name):
        return resolved.name
    digest = hashlib.sha256()
    for path in sorted(p for p in resolved.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return "local-" + digest.hexdigest()[:12]


def _config_digest(config: PretrainedConfig, seed: int) -> str:
    text = json.dumps(config.to_diff_dict(), sort_keys=True) + f"|seed={seed}"
    return "built-" + hashlib.sha256(text.encode()).hexdigest()[:12]
