"""FFN expansion: every feed-forward layer gets a parallel trainable path, as if widened.

`ExpandedFFN(x) = FFN(x) + scale * down(dropout(act(up(x))))`, with the frozen FFN untouched and
`down` starting at zero, so the model starts as the base. Because the path has the FFN's own shape
(act after an up-projection, a down-projection back; gated, `act(up_gate x) * up x`, where the
FFN is gated), it merges exactly into one wider FFN: d_ff -> d_ff + expansion_dim (T5's `d_ff`,
llama's `intermediate_size`, GPT-2's `n_inner`). The path has no bias: a wider FFN's biases are
the base's, with zeros for the new units. The seed's NaN bug came from assuming `wi` on a gated
FFN (`wi_0`/`wi_1`): the structure is detected, and an unknown one is an error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from core.families import family_of
from methods import Method, refuse, register


@dataclass(frozen=True)
class Layout:
    """An FFN's structure: its projections' names, by role."""

    kind: str  # dense: down(act(up x)); gated: down(act(gate x) * up x)
    up: str
    down: str
    gate: str = ""
    act: str = "act"
    conv1d: bool = False  # GPT-2's Conv1D: weight (in, out), a bias always

    def matches(self, ffn: nn.Module) -> bool:
        names = {self.up, self.down, self.gate} - {""}
        layer = Conv1D if self.conv1d else nn.Linear
        children = dict(ffn.named_children())
        return callable(getattr(ffn, self.act, None)) and all(
            isinstance(children.get(n), layer) for n in names
        )


@dataclass(frozen=True)
class FfnFamily:
    attribute: str  # the child holding the FFN, on every module that has one
    layouts: tuple[Layout, ...]  # the first that matches is the FFN's
    width: str  # the config field of the FFN's width, widened by a merge
    dropout: str  # the config field the path's default dropout is read from ("": none)
    structures: str  # for the error on an unknown FFN


FAMILIES = {
    "t5": FfnFamily(
        "DenseReluDense",
        (
            Layout("gated", up="wi_1", gate="wi_0", down="wo"),
            Layout("dense", up="wi", down="wo"),
        ),
        width="d_ff",
        dropout="dropout_rate",
        structures="T5's T5DenseActDense (wi, act, wo) and T5DenseGatedActDense (wi_0, wi_1, "
        "act, wo)",
    ),
    # Llama has no dropout on its residual branches (only attention_dropout, on the weights).
    "llama": FfnFamily(
        "mlp",
        (Layout("gated", up="up_proj", gate="gate_proj", down="down_proj", act="act_fn"),),
        width="intermediate_size",
        dropout="",
        structures="llama's MLP (gate_proj, up_proj, act_fn, down_proj)",
    ),
    "gpt2": FfnFamily(
        "mlp",
        (Layout("dense", up="c_fc", down="c_proj", conv1d=True),),
        width="n_inner",
        dropout="resid_pdrop",
        structures="GPT-2's MLP (Conv1D c_fc, act, Conv1D c_proj)",
    ),
}


@dataclass
class FfnExpansionSettings:
    expansion_dim: int = field(default=512, metadata={"help": "width of the parallel path"})
    dropout: float | None = field(
        default=None,
        metadata={
            "help": "dropout after the path's activation; none: the model's own (T5 "
            "dropout_rate, GPT-2 resid_pdrop, llama 0)"
        },
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


def ffn_layout(ffn: nn.Module, family: FfnFamily, where: str) -> Layout:
    """The first of the family's layouts that `ffn` has; an error naming `where` otherwise."""
    for layout in family.layouts:
        if layout.matches(ffn):
            return layout
    names = sorted(n for n, m in ffn.named_children() if isinstance(m, nn.Linear | Conv1D))
    raise TypeError(
        f"ffn_expansion does not know the feed-forward structure at {where} "
        f"({type(ffn).__name__} with linear layers {names or 'none'}): it supports "
        f"{family.structures}"
    )


def _weight(layer: nn.Module, conv1d: bool) -> torch.Tensor:
    """A projection's weight as nn.Linear lays it out, (out, in)."""
    return layer.weight.T if conv1d else layer.weight


class ExpandedFFN(nn.Module):
    """A frozen FFN plus a parallel trainable path of width `expansion_dim`."""

    def __init__(
        self, ffn: nn.Module, settings: FfnExpansionSettings, dropout: float, layout: Layout
    ) -> None:
        super().__init__()
        self.layout = layout
        self.kind = layout.kind
        self.ffn = ffn
        self.scale = settings.scale
        ref = getattr(ffn, layout.down).weight
        d_model = _weight(getattr(ffn, layout.down), layout.conv1d).shape[0]
        make = dict(bias=False, device=ref.device, dtype=ref.dtype)
        self.up = nn.Linear(d_model, settings.expansion_dim, **make)
        if self.kind == "gated":  # act(up_gate x) * up x, as wi_0 / wi_1 (gate_proj / up_proj) do
            self.up_gate = nn.Linear(d_model, settings.expansion_dim, **make)
        self.down = nn.Linear(settings.expansion_dim, d_model, **make)
        self.dropout = nn.Dropout(dropout)
        self.act = getattr(ffn, layout.act)
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


def feed_forward_layers(model: nn.Module, family: FfnFamily) -> list[tuple[str, nn.Module]]:
    """The modules holding an FFN as `family.attribute` (T5's `*LayerFF`, a block's `mlp`)."""
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(getattr(module, family.attribute, None), nn.Module)
    ]
    if not found:
        raise TypeError(
            f"ffn_expansion found no feed-forward layers ({family.attribute}) in "
            f"{type(model).__name__}: it supports {family.structures}"
        )
    return found


@register
class FfnExpansion(Method):
    """Widen every FFN (T5: encoder and decoder) with a parallel trainable path."""

    name = "ffn_expansion"
    Config = FfnExpansionSettings

    def apply(self, model: nn.Module) -> nn.Module:
        family = FAMILIES[family_of(model, "ffn_expansion's base model").name]
        attribute = family.attribute
        layers = feed_forward_layers(model, family)
        # Check every FFN first: an unknown one leaves the model as it is.
        layouts = [
            ffn_layout(getattr(layer, attribute), family, f"{name}.{attribute}")
            for name, layer in layers
        ]
        dropout = self.config.dropout
        if dropout is None:
            dropout = getattr(model.config, family.dropout, 0.1) if family.dropout else 0.0
        for param in model.parameters():
            param.requires_grad_(False)
        for (_, layer), layout in zip(layers, layouts):
            expanded = ExpandedFFN(getattr(layer, attribute), self.config, dropout, layout)
            for param_name, param in expanded.named_parameters():
                param.requires_grad_(not param_name.startswith("ffn."))
            setattr(layer, attribute, expanded)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        """A plain model of the base's class with d_ff + expansion_dim: the same function."""
        config = copy.deepcopy(model.config)
        width = FAMILIES[family_of(config).name].width
        # GPT-2's n_inner None means 4 * n_embd; no expanded FFN: the model's own width.
        widths = {
            m.down.in_features + _width(m) for m in model.modules() if isinstance(m, ExpandedFFN)
        }
        if len(widths) != 1:
            raise TypeError(f"merge expects the model returned by apply (FFN widths {widths})")
        setattr(config, width, widths.pop())
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


def _width(module: ExpandedFFN) -> int:
    """The frozen FFN's own width."""
    layout = module.layout
    return _weight(getattr(module.ffn, layout.down), layout.conv1d).shape[1]


def _widened(name: str, module: ExpandedFFN) -> dict[str, torch.Tensor]:
    """The wider FFN's tensors: the base's rows (columns for the output) then the path's."""
    ffn, layout, scale = module.ffn, module.layout, module.scale
    inputs = [(layout.up, module.up)]
    if module.kind == "gated":
        inputs.append((layout.gate, module.up_gate))
    state = {}
    for attribute, path in inputs:
        base = getattr(ffn, attribute)
        weight = torch.cat([_weight(base, layout.conv1d), path.weight], dim=0)
        state[f"{name}.{attribute}.weight"] = weight.T if layout.conv1d else weight
        if getattr(base, "bias", None) is not None:
            zeros = base.bias.new_zeros(path.out_features)
            state[f"{name}.{attribute}.bias"] = torch.cat([base.bias, zeros])
    down = getattr(ffn, layout.down)
    weight = torch.cat([_weight(down, layout.conv1d), scale * module.down.weight], dim=1)
    state[f"{name}.{layout.down}.weight"] = weight.T if layout.conv1d else weight
    return state
