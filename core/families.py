"""Model families: which architectures the harness and the methods know, read from a config.

A family is data: the `model_type` values it covers, whether its models are decoder-only
(causal) or encoder-decoder, and a tiny config for tests and the built `tiny-*` bases. The
harness follows `family.causal` (batch layout, generation); each method keeps its own small
table of the family's module names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.errors import UsageError


@dataclass(frozen=True)
class Family:
    name: str
    label: str  # as a person writes it, in messages and docs
    model_types: tuple[str, ...]
    causal: bool
    tiny: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def auto_class(self) -> str:
        """The transformers Auto class a checkpoint of this family loads with."""
        return "AutoModelForCausalLM" if self.causal else "AutoModelForSeq2SeqLM"


T5 = Family(
    "t5",
    "T5",
    ("t5", "mt5"),
    causal=False,
    # Same shape as codet5-small (ReLU FFN, tied embeddings), small enough for a CPU in seconds.
    tiny={
        "model_type": "t5",
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
    },
)
# Llama-style: gated MLP (gate_proj, up_proj, down_proj), decoder layers of self_attn and mlp.
LLAMA = Family(
    "llama",
    "Llama-style",
    ("llama", "qwen2", "mistral"),
    causal=True,
    tiny={
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
    },
)
# GPT-2-style: Conv1D layers (c_attn, c_proj; MLP c_fc, c_proj), blocks of attn and mlp.
GPT2 = Family(
    "gpt2",
    "GPT-2-style",
    ("gpt2",),
    causal=True,
    tiny={
        "model_type": "gpt2",
        "n_embd": 128,
        "n_layer": 2,
        "n_head": 4,
        "n_inner": 512,
        "n_positions": 1024,
        "activation_function": "gelu_new",
        "tie_word_embeddings": True,
    },
)

FAMILIES: dict[str, Family] = {f.name: f for f in (T5, LLAMA, GPT2)}


def supported() -> str:
    """'t5 (t5, mt5), llama (llama, qwen2, mistral), gpt2 (gpt2)': for error messages."""
    return ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES.values())


def family_of(config: Any, what: str = "the model") -> Family:
    """The family of a transformers config (or a model, by its config); a clear error if none."""
    config = getattr(config, "config", config)
    return family_of_type(getattr(config, "model_type", None), what)


def family_of_type(model_type: str | None, what: str = "the model") -> Family:
    """The family covering `model_type` (a config.json's field); a clear error if none."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise UsageError(
        f"{what} is of model type {model_type!r}, which no supported family covers: use a model "
        f"of {supported()}"
    )


def is_causal(model: Any) -> bool:
    """Whether `model` (a transformers model; or one wrapped by PEFT, DDP or torch.compile) is
    decoder-only."""
    # DistributedDataParallel (`module`) and plain wrappers (`model`) do not pass attributes on.
    while getattr(model, "config", None) is None:
        inner = getattr(model, "module", None) or getattr(model, "model", None)
        if inner is None:
            break
        model = inner
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{type(model).__name__} has no transformers config to read a family from")
    return not getattr(config, "is_encoder_decoder", False)
