"""Hybrid: LoRA on the base's attention plus new transformer block(s), trained together."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from methods import Method, register
from methods.full_layer import FullLayerSettings, add_blocks, merge_blocks
from methods.lora import Lora, LoraSettings


@dataclass
class HybridSettings(FullLayerSettings, LoraSettings):
    """LoRA's fields (r, alpha, dropout, target_modules, bias) and full_layer's (num_layers,
    stack, position), flat, so `method.r=8 method.num_layers=2` both work."""

    def __post_init__(self) -> None:  # both parents' checks (the MRO would find only one)
        FullLayerSettings.__post_init__(self)
        LoraSettings.__post_init__(self)


@register
class Hybrid(Method):
    """LoRA first (so it adapts only the base's modules), then the new blocks, trained in full."""

    name = "hybrid"
    Config = HybridSettings

    def apply(self, model: nn.Module) -> nn.Module:
        model = Lora(self.config).apply(model)
        for param in add_blocks(model, self.config):
            param.requires_grad_(True)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        # PEFT folds B @ A into the base weights and unwraps; the new blocks are plain T5 blocks.
        return merge_blocks(Lora(self.config).merge(model))
