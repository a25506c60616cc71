"""New transformer layers: fresh blocks added to the model, the only parameters trained.

A block is residual sub-layers (self-attention, cross-attention in a T5 decoder, the FFN or MLP).
With every sub-layer's output projection set to zero (T5: `o` and `wo`; llama: `o_proj` and
`down_proj`; gpt2: `attn.c_proj` and `mlp.c_proj`, weight and bias), each sub-layer adds nothing:
a new block starts as the identity, so the adapted model starts exactly where the base is. This is
LLaMA Pro's block expansion, except that the new block's other weights are the base's fresh
initialisation rather than a copy of the block below it.

T5's relative position bias lives in the first block of a stack and is passed down to the others.
Blocks added at the end (or interleaved, never first) use that passed-down bias. A block added at
the start becomes the first block, so it takes over the base's (frozen, shared) bias table and
passes the same bias down. Decoder-only models have one stack: `stack` is T5's choice only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.t5.modeling_t5 import T5Block

from core.errors import UsageError
from core.families import family_of
from methods import Method, refuse, register

STACKS = ("encoder", "decoder")
POSITIONS = ("end", "start", "interleave")


@dataclass(frozen=True)
class DecoderBlocks:
    """Where a decoder-only family keeps its blocks and what a new one needs."""

    layers: str  # the ModuleList of blocks, from the model
    zeroed: tuple[str, ...]  # the residual branches' output projections
    attentions: tuple[str, ...]  # a block's attentions: their layer_idx indexes the KV cache


# T5 is handled by its stacks below; a decoder-only family is one entry here.
DECODER_FAMILIES = {
    "llama": DecoderBlocks("model.layers", ("self_attn.o_proj", "mlp.down_proj"), ("self_attn",)),
    "gpt2": DecoderBlocks("transformer.h", ("attn.c_proj", "mlp.c_proj"), ("attn",)),
}


@dataclass
class FullLayerSettings:
    num_layers: int = field(default=1, metadata={"help": "how many new blocks to add"})
    stack: str = field(
        default="encoder",
        metadata={
            "help": "the T5 stack that gets the blocks: encoder or decoder (a decoder-only "
            "model has one stack: ignored)"
        },
    )
    position: str = field(
        default="end",
        metadata={
            "help": "end: after the last block; start: before the first (on T5 the new first "
            "block reuses the base's frozen relative position bias); interleave: block j of n "
            "new ones after base block floor(j * depth / n), spread evenly, the last at the end"
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


def placement(depth: int, new: int, position: str) -> list[int | None]:
    """The blocks in their new order: a base block's index, or None for a new block."""
    if position == "end":
        return [*range(depth), *[None] * new]
    if position == "start":
        return [*[None] * new, *range(depth)]
    if new > depth:
        raise UsageError(
            f"method.num_layers={new} with position=interleave puts at most one new block after "
            f"each base block, and the model has {depth}: use at most {depth}, or position=end"
        )
    order: list[int | None] = []
    for j in range(1, new + 1):  # new block j goes after base block floor(j * depth / new)
        order.extend(range(sum(1 for i in order if i is not None), j * depth // new))
        order.append(None)
    return order


def inner_model(model: nn.Module) -> nn.Module:
    """The transformers model inside `model` (unwrapping a PEFT model)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def t5_model(model: nn.Module) -> nn.Module:
    """The transformers T5 model inside `model` (unwrapping a PEFT model)."""
    inner = inner_model(model)
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
    """Add identity-initialised blocks to the model (to `settings.stack` on T5); returns their
    own parameters. A model of no supported family is a UsageError naming its type."""
    inner = inner_model(model)
    family = family_of(inner, "full_layer's base model")
    if family.name in DECODER_FAMILIES:
        return add_decoder_blocks(inner, DECODER_FAMILIES[family.name], settings)
    return add_t5_blocks(t5_model(inner), settings)


def add_t5_blocks(inner: nn.Module, settings: FullLayerSettings) -> list[nn.Parameter]:
    stack = getattr(inner, settings.stack)
    order = placement(len(stack.block), settings.num_layers, settings.position)
    new_blocks = [identity_block(stack, inner._init_weights) for _ in range(settings.num_layers)]
    trained = [p for block in new_blocks for p in block.parameters()]
    if settings.position == "start":
        # The new first block computes the position bias for the whole stack, from the same
        # frozen table; the old first block then receives it and ignores its own reference.
        table = stack.block[0].layer[0].SelfAttention.relative_attention_bias
        first = new_blocks[0].layer[0].SelfAttention
        first.has_relative_attention_bias = True
        first.relative_attention_bias = table
    fresh = iter(new_blocks)
    stack.block = nn.ModuleList(next(fresh) if i is None else stack.block[i] for i in order)
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


def add_decoder_blocks(
    inner: nn.Module, spec: DecoderBlocks, settings: FullLayerSettings
) -> list[nn.Parameter]:
    """New blocks of the model's own block class, placed by `settings.position`."""
    config = inner.config
    parent_name, _, attribute = spec.layers.rpartition(".")
    parent = inner.get_submodule(parent_name)
    layers = getattr(parent, attribute)
    order = placement(len(layers), settings.num_layers, settings.position)
    if settings.position != "end" and getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise UsageError(
            "full_layer: this GPT-2 scales each attention by its layer index "
            "(scale_attn_by_inverse_layer_idx), so blocks placed before base blocks would change "
            "the base's function: use method.position=end"
        )
    # Per-block attention kinds (Qwen2's sliding or full) move with their blocks; a new block
    # takes the kind of the base block before it (at the start: of the first).
    kinds = getattr(config, "layer_types", None)
    if kinds is not None:
        previous, moved = 0, []
        for i in order:
            previous = previous if i is None else i
            moved.append(kinds[previous])
        config.layer_types = moved
    # The depth first: the model, generate()'s cache and from_pretrained read it from here.
    config.num_hidden_layers = len(order)
    reference = next(layers.parameters())
    block_class = type(layers[0])
    blocks, trained = [], []
    for index, base_index in enumerate(order):
        if base_index is not None:
            blocks.append(layers[base_index])
            continue
        block = block_class(config, layer_idx=index)
        block.apply(inner._init_weights)
        with torch.no_grad():
            for name in spec.zeroed:
                projection = block.get_submodule(name)
                projection.weight.zero_()
                if getattr(projection, "bias", None) is not None:
                    projection.bias.zero_()
        block.to(device=reference.device, dtype=reference.dtype)
        block.train(layers.training)
        blocks.append(block)
        trained.extend(block.parameters())
    setattr(parent, attribute, nn.ModuleList(blocks))
    # The KV cache is indexed by each attention's layer_idx: keep them equal to the position.
    for index, block in enumerate(blocks):
        for name in spec.attentions:
            block.get_submodule(name).layer_idx = index
    return trained


def merge_blocks(model: nn.Module) -> nn.Module:
    """The plain model inside `model`; on T5 only a stack's first block keeps a position-bias
    table."""
    inner = inner_model(model)
    if family_of(inner).name not in DECODER_FAMILIES:
        inner = t5_model(inner)
        for stack in (inner.encoder, inner.decoder):
            for block in list(stack.block)[1:]:
                attention = block.layer[0].SelfAttention
                if attention.has_relative_attention_bias:  # an old first block after start
                    del attention.relative_attention_bias
                    attention.has_relative_attention_bias = False
    for param in inner.parameters():
        param.requires_grad_(True)  # as from_pretrained would give it
    return inner


@register
class FullLayer(Method):
    """New blocks at the end, start or interleaved (on T5: of the encoder or decoder); the base
    stays frozen."""

    name = "full_layer"
    Config = FullLayerSettings

    def apply(self, model: nn.Module) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(False)
        for param in add_blocks(model, self.config):
            param.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        # In place: the adapted model already is the base's class, its config counts the blocks.
        return merge_blocks(model)
