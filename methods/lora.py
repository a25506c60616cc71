"""LoRA through PEFT: low-rank updates B @ A added to chosen linear layers (B starts at zero)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from methods import Method, refuse, register

BIASES = ("none", "all", "lora_only")


@dataclass
class LoraSettings:
    r: int = field(default=24, metadata={"help": "rank of the update B @ A"})
    alpha: int = field(default=48, metadata={"help": "the update is scaled by alpha / r"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA path's input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q", "k", "v", "o"],
        metadata={"help": "module names to adapt (T5: q, k, v, o, wi, wo)"},
    )
    bias: str = field(default="none", metadata={"help": "none, all or lora_only (PEFT's)"})

    def __post_init__(self) -> None:
        refuse(
            [
                (self.r >= 1, f"method.r must be at least 1 (LoRA's rank), got {self.r}"),
                (self.alpha > 0, f"method.alpha must be positive, got {self.alpha}"),
                (
                    0 <= self.dropout < 1,
                    f"method.dropout must be in [0, 1), got {self.dropout}",
                ),
                (
                    len(self.target_modules) > 0,
                    "method.target_modules must name at least one module (T5: q, k, v, o, wi, wo)",
                ),
                (
                    self.bias in BIASES,
                    f"method.bias must be one of {', '.join(BIASES)}, got {self.bias!r}",
                ),
            ]
        )


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias=settings.bias,
    )


@register
class Lora(Method):
    """PEFT's LoRA on the attention projections of every encoder and decoder block."""

    name = "lora"
    Config = LoraSettings

    def apply(self, model: nn.Module) -> nn.Module:
        return get_peft_model(model, lora_config(self.config))

    def merge(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, PeftModel):
            raise TypeError("merge expects the model returned by apply")
        return model.merge_and_unload()
