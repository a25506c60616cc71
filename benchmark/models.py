"""Base models and tokenizers: a hub id, a local directory, or a model built from a config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AddedToken,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from benchmark import hub
from benchmark.config import ModelConfig, UsageError

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_TOKENIZER = ASSETS / "demo-tokenizer"
# The demo's base: a small T5 pretrained on code by scripts/pretrain_demo_model.py (model card
# in its folder). `model.name=demo` names it.
DEMO_MODEL = ASSETS / "demo-model"

# A T5 small enough to train on a CPU in seconds: the `demo` preset's base when no pretrained
# demo model is configured. Same architecture family as codet5-small (ReLU FFN, tied embeddings).
TINY_T5 = {
    "d_model": 128,
    "d_kv": 32,
    "d_ff": 512,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "feed_forward_proj": "relu",
    "tie_word_embeddings": True,
}


@dataclass
class BaseModelInfo:
    """What identifies the base model, for params and for rebuilding it elsewhere."""

    name: str
    source: str  # hub | local | built
    # The commit a hub model was loaded at, a digest of a local folder's files (or its
    # snapshot's commit), a config hash for built ones.
    revision: str


def _tokenizer(name_or_path: str, revision: str = "") -> PreTrainedTokenizerBase:
    kwargs = {"revision": revision} if revision else {}
    kwargs.update(_legacy_special_tokens(name_or_path, kwargs))
    return AutoTokenizer.from_pretrained(name_or_path, **kwargs)


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


def _built(config: T5Config, seed: int) -> T5ForConditionalGeneration:
    # A private RNG stream: building the model must not depend on, or disturb, the global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T5ForConditionalGeneration(config)


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


def build_config(name: str, tokenizer: PreTrainedTokenizerBase) -> T5Config:
    """The T5Config for `tiny` or `config:<path.json>`."""
    if name == "tiny":
        values = dict(TINY_T5, vocab_size=len(tokenizer))
    else:
        path = Path(name.removeprefix("config:")).expanduser()
        if not path.is_file():
            raise UsageError(f"model.name {name!r}: no config file at {path}")
        values = _read_config_json(path, name)
    values.setdefault("pad_token_id", tokenizer.pad_token_id)
    values.setdefault("eos_token_id", tokenizer.eos_token_id)
    values.setdefault("decoder_start_token_id", tokenizer.pad_token_id)
    try:
        config = T5Config(**{k: v for k, v in values.items() if k not in ("architectures",)})
    except Exception as err:  # transformers' strict config fields raise their own kind
        text = " ".join(str(err).split())
        raise UsageError(
            f"model.name {name!r}: not a usable T5 config ({text}): fix the field it names"
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
    if name == "tiny" or name.startswith("config:"):
        tokenizer = _tokenizer(config.tokenizer or str(DEMO_TOKENIZER), _tokenizer_revision(config))
        model_config = build_config(name, tokenizer)
        try:
            model = _built(model_config, config.init_seed)
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. a negative or text size
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(
                f"model.name {name!r}: cannot build a model from this config ({first}): check "
                "its sizes (positive integers) against a transformers T5 config.json"
            ) from None
        digest = _config_digest(model_config, config.init_seed)
        info = BaseModelInfo(name=name, source="built", revision=digest)
    else:
        if name == "demo":
            name = str(DEMO_MODEL)
        folder = Path(name).expanduser()
        if folder.is_dir():
            model = _from_pretrained(name, {})
            tokenizer = _tokenizer(config.tokenizer or name, _tokenizer_revision(config))
            info = BaseModelInfo(name=name, source="local", revision=_folder_revision(folder))
        else:
            # Pinned to one commit, resolved before anything loads: the run logs it and a
            # logged model rebuilds its base from exactly it.
            commit = resolve_commit(name, config.revision)
            model = _from_pretrained(name, {"revision": commit})
            revision = _tokenizer_revision(config) if config.tokenizer else commit
            tokenizer = _tokenizer(config.tokenizer or name, revision)
            info = BaseModelInfo(name=name, source="hub", revision=commit)
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
    try:
        # fp32 whatever the checkpoint's dtype (the demo model is stored in fp16): training
        # precision is train.mixed_precision's business.
        return AutoModelForSeq2SeqLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    except OSError as err:
        raise UsageError(
            f"model.name {name!r} could not be loaded ({err}). Use a hub id (needs internet, or "
            "HF_HUB_OFFLINE=1 and the hub cache filled by `hf download`), a local directory "
            "saved with save_pretrained, 'tiny', or 'config:<path.json>'"
        ) from None


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


def _config_digest(config: T5Config, seed: int) -> str:
    text = json.dumps(config.to_diff_dict(), sort_keys=True) + f"|seed={seed}"
    return "built-" + hashlib.sha256(text.encode()).hexdigest()[:12]
