"""New transformer layers: fresh T5 blocks added to a stack, the only parameters trained.

A T5 block is residual sub-layers (self-attention, cross-attention in the decoder, the FFN). With
every attention output projection `o` and the FFN output `wo` set to zero, each sub-layer adds
nothing: a new block starts as the identity, so the adapted model starts exactly where the base is.

T5's relative position bias lives in the first block of a stack and is passed down to the others.
Blocks added at the end use that passed-down bias. A block added at the start becomes the first
block, so it takes over the base's (frozen, shared) bias table and passes the same bias down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.t5.modeling_t5 import T5Block

from methods import Method, refuse, register

STACKS = ("encoder", "decoder")
POSITIONS = ("end", "start")


@dataclass
class FullLayerSettings:
    num_layers: int = field(default=1, metadata={"help": "how many new blocks to add"})
    stack: str = field(
        default="encoder", metadata={"help": "the stack that gets the blocks: encoder or decoder"}
    )
    position: str = field(
        default="end",
        metadata={
            "help": "end: after the last block; start: before the first (the new first block "
            "reuses the base's frozen relative position bias)"
        },
    )

    def __post_init__(self) -> None:
        refuse(
            [
                (
                    self.stack in STACKS,
                    f"method.stack must be one of {', '.join(STACKS)}, got {self.stack!r}",
                ),
                (
                    self.position in POSITIONS,
                    f"method.position must be one of {', '.join(POSITIONS)}, got {self.position!r}",
                ),
                (
                    self.num_layers >= 1,
                    f"method.num_layers must be at least 1, got {self.num_layers}",
                ),
            ]
        )


def t5_model(model: nn.Module) -> nn.Module:
    """The transformers T5 model inside `model` (unwrapping a PEFT model)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not (hasattr(inner, "encoder") and hasattr(inner.encoder, "block")):
        raise TypeError(
            f"full_layer needs a T5-style encoder-decoder model, got {type(inner).__name__}"
        )
    return inner


def identity_block(stack: nn.Module, init_weights) -> T5Block:
    """A T5 block for `stack` whose residual branches all output zero."""
    block = T5Block(stack.config, has_relative_attention_bias=False, layer_idx=len(stack.block))
    block.apply(init_weights)
    with torch.no_grad():
        for sublayer in block.layer:
            for attribute in ("SelfAttention", "EncDecAttention"):
                if hasattr(sublayer, attribute):
                    getattr(sublayer, attribute).o.weight.zero_()
            if hasattr(sublayer, "DenseReluDense"):
                sublayer.DenseReluDense.wo.weight.zero_()
    reference = next(stack.parameters())
    block.to(device=reference.device, dtype=reference.dtype)
    block.train(stack.training)
    return block


def block_attentions(block: nn.Module) -> list[nn.Module]:
    return [
        getattr(sublayer, attribute)
        for sublayer in block.layer
        for attribute in ("SelfAttention", "EncDecAttention")
        if hasattr(sublayer, attribute)
    ]


def add_blocks(model: nn.Module, settings: FullLayerSettings) -> list[nn.Parameter]:
    """Add identity-initialised blocks to `settings.stack` (checked when `settings` was made);
    returns their own parameters."""
    inner = t5_model(model)
    stack = getattr(inner, settings.stack)
    new_blocks = [identity_block(stack, inner._init_weights) for _ in range(settings.num_layers)]
    trained = [p for block in new_blocks for p in block.parameters()]
    if settings.position == "end":
        stack.block.extend(new_blocks)
    else:
        # The new first block computes the position bias for the whole stack, from the same
        # frozen table; the old first block then receives it and ignores its own reference.
        table = stack.block[0].layer[0].SelfAttention.relative_attention_bias
        first = new_blocks[0].layer[0].SelfAttention
        first.has_relative_attention_bias = True
        first.relative_attention_bias = table
        stack.block = nn.ModuleList(new_blocks + list(stack.block))
    # Decoder caches are indexed by each attention's layer_idx: keep them equal to the position.
    for index, block in enumerate(stack.block):
        for attention in block_attentions(block):
            attention.layer_idx = index
    # Keep the configs in step so caches, save_pretrained and from_pretrained see the new depth.
    depth = len(stack.block)
    stack.config.num_layers = depth
    if settings.stack == "encoder":
        inner.config.num_layers = depth
    else:
        inner.config.num_decoder_layers = depth
        # transformers sizes generate()'s cache from `get_text_config(decoder=True)`, which reads
        # a T5 decoder's depth from `decoder_layers` (or else num_layers, the encoder's depth):
        # without it a decoder deeper than the encoder fails on its first cached step.
        inner.config.decoder_layers = depth
    return trained


def merge_blocks(model: nn.Module) -> nn.Module:
    """The plain T5 inside `model`: only a stack's first block keeps a position-bias table."""
    inner = t5_model(model)
    for stack in (inner.encoder, inner.decoder):
        for block in list(stack.block)[1:]:
            attention = block.layer[0].SelfAttention
            if attention.has_relative_attention_bias:  # an old first block after position=start
                del attention.relative_attention_bias
                attention.has_relative_attention_bias = False
    for param in inner.parameters():
        param.requires_grad_(True)  # as from_pretrained would give it
    return inner


@register
class FullLayer(Method):
    """New T5 blocks at the end (or start) of the encoder (or decoder); the base stays frozen."""

    name = "full_layer"
    Config = FullLayerSettings

    def apply(self, model: nn.Module) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(False)
        for param in add_blocks(model, self.config):
            param.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        # In place: the adapted model already is a T5 whose config counts the new blocks.
        return merge_blocks(model)
