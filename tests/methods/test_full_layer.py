"""full_layer placements: blocks at the start of a stack take over the position bias."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.config import UsageError
from methods import get_method
from tests.methods.util import adapted, batch, tiny, train_steps


def test_start_blocks_share_the_frozen_position_bias_and_leave_the_base_unchanged():
    base = tiny()
    method, model = adapted("full_layer", options={"position": "start", "num_layers": 2})
    blocks = model.encoder.block
    assert len(blocks) == 4 and model.config.num_layers == 4
    table = blocks[0].layer[0].SelfAttention.relative_attention_bias
    assert table is blocks[2].layer[0].SelfAttention.relative_attention_bias
    assert not table.weight.requires_grad
    assert [b.layer[0].SelfAttention.layer_idx for b in blocks] == [0, 1, 2, 3]
    base_blocks = copy.deepcopy(base.encoder.block.state_dict())
    train_steps(model)
    for key, value in blocks[2:].state_dict().items():
        assert torch.equal(value, base_blocks[key]), key
    assert all(
        k.startswith(("encoder.block.0.", "encoder.block.1."))
        for k in method.trained_state_dict(model)
    )


def test_decoder_blocks_keep_the_cache_depth_in_the_config():
    _, model = adapted("full_layer", options={"stack": "decoder", "num_layers": 2})
    assert model.config.num_decoder_layers == model.config.decoder_layers == 4
    assert model.config.get_text_config(decoder=True).num_hidden_layers == 4
    assert model.config.num_layers == 2


@pytest.mark.parametrize("options", [{"stack": "middle"}, {"position": "last"}, {"num_layers": 0}])
def test_bad_placements_are_refused_before_any_model(options: dict):
    ((key, value),) = options.items()
    with pytest.raises(UsageError, match=f"method.{key} must .*got '?{value}'?"):
        get_method("full_layer", options)


def test_identity_at_init_in_the_decoder_at_the_start():
    inputs = batch(2)
    with torch.no_grad():
        reference = tiny()(**inputs).logits
        _, model = adapted("full_layer", options={"stack": "decoder", "position": "start"})
        assert torch.equal(model(**inputs).logits, reference)
