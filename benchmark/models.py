"""Base models and tokenizers: a hub id, a local directory, or a model built from a config."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

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
    revision: str  # the resolved commit for hub models, a config hash for built ones


def _tokenizer(name_or_path: str, revision: str = "") -> PreTrainedTokenizerBase:
    kwargs = {"revision": revision} if revision else {}
    return AutoTokenizer.from_pretrained(name_or_path, **kwargs)


def _built(config: T5Config, seed: int) -> T5ForConditionalGeneration:
    # A private RNG stream: building the model must not depend on, or disturb, the global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T5ForConditionalGeneration(config)


def build_config(name: str, tokenizer: PreTrainedTokenizerBase) -> T5Config:
    """The T5Config for `tiny` or `config:<path.json>`."""
    if name == "tiny":
        values = dict(TINY_T5, vocab_size=len(tokenizer))
    else:
        path = Path(name.removeprefix("config:")).expanduser()
        if not path.is_file():
            raise UsageError(f"model.name {name!r}: no config file at {path}")
        values = json.loads(path.read_text())
    values.setdefault("pad_token_id", tokenizer.pad_token_id)
    values.setdefault("eos_token_id", tokenizer.eos_token_id)
    values.setdefault("decoder_start_token_id", tokenizer.pad_token_id)
    config = T5Config(**{k: v for k, v in values.items() if k not in ("architectures",)})
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
        tokenizer = _tokenizer(config.tokenizer or str(DEMO_TOKENIZER))
        model_config = build_config(name, tokenizer)
        model = _built(model_config, config.init_seed)
        digest = _config_digest(model_config, config.init_seed)
        info = BaseModelInfo(name=name, source="built", revision=digest)
    else:
        if name == "demo":
            name = str(DEMO_MODEL)
        is_local = Path(name).expanduser().is_dir()
        kwargs = {"revision": config.revision} if config.revision and not is_local else {}
        try:
            # fp32 whatever the checkpoint's dtype (the demo model is stored in fp16): training
            # precision is train.mixed_precision's business.
            model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=torch.float32, **kwargs)
        except OSError as err:
            raise UsageError(
                f"model.name {name!r} could not be loaded ({err}). Use a hub id (needs internet), "
                "a local directory saved with save_pretrained, 'tiny', or 'config:<path.json>'"
            ) from None
        tokenizer = _tokenizer(config.tokenizer or name, config.revision if not is_local else "")
        revision = getattr(model.config, "_commit_hash", None) or config.revision or "local"
        info = BaseModelInfo(name=name, source="local" if is_local else "hub", revision=revision)
    model.eval()
    return model, tokenizer, info


def _config_digest(config: T5Config, seed: int) -> str:
    import hashlib

    text = json.dumps(config.to_diff_dict(), sort_keys=True) + f"|seed={seed}"
    return "built-" + hashlib.sha256(text.encode()).hexdigest()[:12]
