"""No adaptation: the base model as it is, evaluated like any method (the comparison's baseline).

Nothing trains, so a run of it skips training and its report row has no training cost; the
served model is the base with the run's decoding. The suite runs it with the methods and pairs
every method with it in the report, so the report says what adaptation adds on the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from methods import Method, register


@dataclass
class NoSettings:
    pass


@register
class NoAdaptation(Method):
    name = "none"
    Config = NoSettings

    def apply(self, model: nn.Module) -> nn.Module:
        model.requires_grad_(False)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return model
