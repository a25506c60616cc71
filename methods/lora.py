"""LoRA through PEFT: low-rank updates B @ A added to chosen linear layers (B starts at zero).

`q`, `k`, `v` and `o` name the attention projections on every family (T5's own module names);
the family's table says which modules they are there. Any other name is the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from core.families import family_of
from methods import Method, refuse, register

BIASES = ("none", "all", "lora_only")


@dataclass(frozen=True)
class LoraFamily:
    task_type: TaskType
    # The attention projections q, k, v, o as this family names them (GPT-2 fuses q, k and v
    # into one Conv1D, c_attn: any of the three adapts all three).
    attention: dict[str, str]
    fan_in_fan_out: bool = False  # GPT-2's Conv1D stores its weight as (in, out)


FAMILIES = {
    "t5": LoraFamily(TaskType.SEQ_2_SEQ_LM, {n: n for n in "qkvo"}),
    "llama": LoraFamily(TaskType.CAUSAL_LM, {n: f"{n}_proj" for n in "qkvo"}),
    "gpt2": LoraFamily(
        TaskType.CAUSAL_LM,
        {"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn", "o": "attn.c_proj"},
        fan_in_fan_out=True,
    ),
}


@dataclass
class LoraSettings:
    r: int = field(default=24, metadata={"help": "rank of the update B @ A"})
    alpha: int = field(default=48, metadata={"help": "the update is scaled by alpha / r"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA path's input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q", "k", "v", "o"],
        metadata={
            "help": "modules to adapt: q, k, v, o are the attention projections on every family "
            "(llama: q_proj..o_proj; gpt2: attn.c_attn for q, k, v and attn.c_proj for o); "
            "other names are the model's own (T5: wi, wo; llama: gate_proj, up_proj, down_proj; "
            "gpt2: mlp.c_fc, mlp.c_proj)"
        },
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


def lora_config(settings: LoraSettings, model: nn.Module) -> LoraConfig:
    """PEFT's config for `model`'s family: its task type and module names."""
    family = FAMILIES[family_of(model).name]
    targets = [family.attention.get(name, name) for name in settings.target_modules]
    return LoraConfig(
        task_type=family.task_type,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(dict.fromkeys(targets)),
        bias=settings.bias,
        fan_in_fan_out=family.fan_in_fan_out,
    )


@register
class Lora(Method):
    """PEFT's LoRA on the attention projections of every block (encoder and decoder for T5)."""

    name = "lora"
    Config = LoraSettings

    def apply(self, model: nn.Module) -> nn.Module:
        return get_peft_model(model, lora_config(self.config, model))

    def merge(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, PeftModel):
            raise TypeError("merge expects the model returned by apply")
        return model.merge_and_unload()
