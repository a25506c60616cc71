"""FFN expansion: every feed-forward layer gets a parallel trainable path, as if widened.

`ExpandedFFN(x) = FFN(x) + scale * down(dropout(act(up(x))))`, with the frozen FFN untouched and
`down` starting at zero, so the model starts as the base. Because the path has the FFN's own shape
(act after an up-projection, a down-projection back), it merges exactly into one wider FFN:
d_ff -> d_ff + expansion_dim. The seed's NaN bug came from assuming `wi` on a gated FFN
(`wi_0`/`wi_1`): the structure is detected, and an unknown one is an error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from methods import Method, refuse, register


@dataclass
class FfnExpansionSettings:
    expansion_dim: int = field(default=512, metadata={"help": "width of the parallel path"})
    dropout: float | None = field(
        default=None,
        metadata={"help": "dropout after the path's activation; none: the model's dropout_rate"},
    )
    scale: float = field(default=0.1, metadata={"help": "multiplies the path's output"})
    init_std: float = field(default=0.02, metadata={"help": "std of the up-projection's init"})

    def __post_init__(self) -> None:
        refuse(
            [
                (
                    self.expansion_dim >= 1,
                    f"method.expansion_dim must be at least 1, got {self.expansion_dim}",
                ),
                (
                    self.dropout is None or 0 <= self.dropout < 1,
                    f"method.dropout must be in [0, 1) (or none: the model's), got {self.dropout}",
                ),
                (
                    self.init_std > 0,
                    f"method.init_std must be positive, got {self.init_std}: the down-projection "
                    "starts at zero, so a zero up-projection would leave the path without a "
                    "gradient",
                ),
            ]
        )


def ffn_kind(ffn: nn.Module, where: str) -> str:
    """'dense' (wi -> act -> wo) or 'gated' (act(wi_0) * wi_1 -> wo); an error otherwise."""
    names = {n for n, m in ffn.named_children() if isinstance(m, nn.Linear)}
    if callable(getattr(ffn, "act", None)):
        if {"wi_0", "wi_1", "wo"} <= names:
            return "gated"
        if {"wi", "wo"} <= names:
            return "dense"
    raise TypeError(
        f"ffn_expansion does not know the feed-forward structure at {where} "
        f"({type(ffn).__name__} with linear layers {sorted(names) or 'none'}): it supports T5's "
        "T5DenseActDense (wi, act, wo) and T5DenseGatedActDense (wi_0, wi_1, act, wo)"
    )


class ExpandedFFN(nn.Module):
    """A frozen T5 FFN plus a parallel trainable path of width `expansion_dim`."""

    def __init__(
        self, ffn: nn.Module, settings: FfnExpansionSettings, dropout: float, where: str
    ) -> None:
        super().__init__()
        self.kind = ffn_kind(ffn, where)
        self.ffn = ffn
        self.scale = settings.scale
        d_model = ffn.wo.out_features
        ref = ffn.wo.weight
        make = dict(bias=False, device=ref.device, dtype=ref.dtype)
        self.up = nn.Linear(d_model, settings.expansion_dim, **make)
        if self.kind == "gated":  # act(up_gate x) * up x, as wi_0 / wi_1 do
            self.up_gate = nn.Linear(d_model, settings.expansion_dim, **make)
        self.down = nn.Linear(settings.expansion_dim, d_model, **make)
        self.dropout = nn.Dropout(dropout)
        self.act = ffn.act
        with torch.no_grad():
            for layer in (self.up, getattr(self, "up_gate", None)):
                if layer is not None:
                    layer.weight.normal_(0.0, settings.init_std)
            self.down.weight.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.kind == "gated":
            path = self.act(self.up_gate(hidden)) * self.up(hidden)
        else:
            path = self.act(self.up(hidden))
        return self.ffn(hidden) + self.scale * self.down(self.dropout(path))


def feed_forward_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The T5-family `*LayerFF` modules (each holds its FFN as `DenseReluDense`)."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if type(module).__name__.endswith("LayerFF") and hasattr(module, "DenseReluDense")
    ]
    if not found:
        raise TypeError(
            f"ffn_expansion found no T5 feed-forward layers in {type(model).__name__}: it "
            "supports the T5 family (T5, mT5, CodeT5, ...)"
        )
    return found


@register
class FfnExpansion(Method):
    """Widen every FFN (encoder and decoder) with a parallel trainable path."""

    name = "ffn_expansion"
    Config = FfnExpansionSettings

    def apply(self, model: nn.Module) -> nn.Module:
        layers = feed_forward_layers(model)
        for name, layer in layers:  # check every FFN first: an unknown one leaves the model as is
            ffn_kind(layer.DenseReluDense, f"{name}.DenseReluDense")
        dropout = self.config.dropout
        if dropout is None:
            dropout = getattr(getattr(model, "config", None), "dropout_rate", 0.1)
        for param in model.parameters():
            param.requires_grad_(False)
        for name, layer in layers:
            expanded = ExpandedFFN(
                layer.DenseReluDense, self.config, dropout, f"{name}.DenseReluDense"
            )
            for param_name, param in expanded.named_parameters():
                param.requires_grad_(not param_name.startswith("ffn."))
            layer.DenseReluDense = expanded
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """A plain model of the base's class with d_ff + expansion_dim: the same function."""
        config = copy.deepcopy(model.config)
        config.d_ff = config.d_ff + self.config.expansion_dim
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten: keep the RNG
            merged = type(model)(config)
        state = {}
        with torch.no_grad():
            for name, module in model.named_modules():
                if isinstance(module, ExpandedFFN):
                    state.update(_widened(name, module))
        plain = {
            key.replace(".ffn.", "."): value
            for key, value in model.state_dict().items()
            if not any(part in key for part in (".up.", ".up_gate.", ".down."))
        }
        plain.update(state)
        missing, unexpected = merged.load_state_dict(plain, strict=False)
        missing = [k for k in missing if k not in getattr(merged, "_tied_weights_keys", {})]
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"merge mismatch: missing {missing}, unexpected {unexpected}")
        reference = next(model.parameters())
        return merged.to(device=reference.device, dtype=reference.dtype).eval()


def _widened(name: str, module: ExpandedFFN) -> dict[str, torch.Tensor]:
    ffn, scale = module.ffn, module.scale
    wo = torch.cat([ffn.wo.weight, scale * module.down.weight], dim=1)
    if module.kind == "gated":
        return {
            f"{name}.wi_0.weight": torch.cat([ffn.wi_0.weight, module.up_gate.weight], dim=0),
            f"{name}.wi_1.weight": torch.cat([ffn.wi_1.weight, module.up.weight], dim=0),
            f"{name}.wo.weight": wo,
        }
    return {
        f"{name}.wi.weight": torch.cat([ffn.wi.weight, module.up.weight], dim=0),
        f"{name}.wo.weight": wo,
    }
