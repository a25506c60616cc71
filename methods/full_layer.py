"""New transformer layers: fresh T5 blocks appended to a stack, the only parameters trained.

A T5 block is two residual sub-layers (attention, then the FFN). With the attention output
projection `o` and the FFN output `wo` set to zero, each sub-layer adds nothing: the new block
starts as the identity, so the adapted model starts exactly where the base is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.t5.modeling_t5 import T5Block

from methods import Method, register


@dataclass
class FullLayerSettings:
    num_layers: int = field(default=1, metadata={"help": "how many new blocks"})
    # Blocks go at the end of the stack: the first block owns T5's relative position bias.
    stack: str = field(
        default="encoder", metadata={"help": "stack the blocks are appended to: encoder, decoder"}
    )


def t5_model(model: nn.Module) -> nn.Module:
    """The transformers T5 model inside `model` (unwrapping a PEFT model)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not (hasattr(inner, "encoder") and hasattr(inner, "decoder")):
        raise TypeError(
            f"full_layer needs a T5-style encoder-decoder model, got {type(inner).__name__}"
        )
    return inner


def append_blocks(model: nn.Module, settings: FullLayerSettings) -> list[nn.Parameter]:
    """Append identity-initialised blocks to `settings.stack`; returns their parameters."""
    if settings.stack not in ("encoder", "decoder"):
        raise ValueError(f"full_layer stack must be 'encoder' or 'decoder', got {settings.stack!r}")
    if settings.num_layers < 1:
        raise ValueError("full_layer num_layers must be at least 1")
    inner = t5_model(model)
    stack = getattr(inner, settings.stack)
    reference = next(stack.parameters())
    added: list[nn.Parameter] = []
    for _ in range(settings.num_layers):
        index = len(stack.block)
        block = T5Block(stack.config, has_relative_attention_bias=False, layer_idx=index)
        block.apply(inner._init_weights)
        with torch.no_grad():
            for layer in block.layer:
                if hasattr(layer, "SelfAttention"):
                    layer.SelfAttention.o.weight.zero_()
                elif hasattr(layer, "EncDecAttention"):
                    layer.EncDecAttention.o.weight.zero_()
                else:
                    layer.DenseReluDense.wo.weight.zero_()
        block.to(device=reference.device, dtype=reference.dtype)
        block.train(stack.training)
        stack.block.append(block)
        added += list(block.parameters())
    # Keep the configs in step so caches, save_pretrained and from_pretrained see the new depth.
    count = len(stack.block)
    stack.config.num_layers = count
    if settings.stack == "encoder":
        inner.config.num_layers = count
    else:
        inner.config.num_decoder_layers = count
    return added


@register
class FullLayer(Method):
    """One or more new T5 blocks at the end of the encoder (or decoder); the base stays frozen."""

    name = "full_layer"
    Config = FullLayerSettings

    def apply(self, model: nn.Module) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(False)
        for param in append_blocks(model, self.config):
            param.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        # The adapted model already is a plain T5 whose config counts the new blocks.
        for param in model.parameters():
            param.requires_grad_(True)
        return model
