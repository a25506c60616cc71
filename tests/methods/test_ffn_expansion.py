"""ffn_expansion specifics: FFN structure detection, gated FFNs, the dropout default."""

from __future__ import annotations

import pytest
import torch

from methods import count_parameters, get_method
from methods.ffn_expansion import ExpandedFFN
from tests.methods.util import adapted, tiny, train_steps


def test_refuses_an_unknown_ffn_structure_naming_path_and_class():
    model = tiny()
    layer = model.encoder.block[0].layer[1]
    layer.DenseReluDense = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 32))
    with pytest.raises(TypeError, match=r"encoder\.block\.0\.layer\.1\.DenseReluDense.*Sequential"):
        get_method("ffn_expansion").apply(model)
    # Checked before anything changed: no FFN was wrapped, nothing frozen.
    assert not any(isinstance(m, ExpandedFFN) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_refuses_a_look_alike_without_an_activation():
    class Projections(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wi, self.wo = torch.nn.Linear(32, 64), torch.nn.Linear(64, 32)

    model = tiny()
    model.decoder.block[1].layer[2].DenseReluDense = Projections()
    with pytest.raises(
        TypeError, match=r"decoder\.block\.1\.layer\.2\.DenseReluDense.*Projections"
    ):
        get_method("ffn_expansion").apply(model)


def test_gated_ffns_get_a_gated_path_and_train_without_nan():
    method, model = adapted("ffn_expansion", feed_forward_proj="gated-gelu")
    expanded = [m for m in model.modules() if isinstance(m, ExpandedFFN)]
    assert len(expanded) == 4 and all(m.kind == "gated" for m in expanded)
    assert count_parameters(model)[0] == 4 * 3 * 32 * 16  # up_gate, up, down per FFN
    train_steps(model)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_dropout_defaults_to_the_models_dropout_rate():
    _, model = adapted("ffn_expansion", dropout_rate=0.25)
    assert {m.dropout.p for m in model.modules() if isinstance(m, ExpandedFFN)} == {0.25}
    _, model = adapted("ffn_expansion", options={"expansion_dim": 16, "dropout": "0"})
    assert {m.dropout.p for m in model.modules() if isinstance(m, ExpandedFFN)} == {0.0}
