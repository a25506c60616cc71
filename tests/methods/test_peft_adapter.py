"""The generic `peft` method: any PEFT config, from a file, a folder or inline JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import IA3Config, LoraConfig, TaskType

from benchmark.config import UsageError
from methods import count_parameters, get_method
from tests.methods.util import batch, tiny, train_steps

IA3 = {"peft_type": "IA3", "target_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"]}
DORA = {"peft_type": "LORA", "r": 4, "target_modules": ["q", "v"], "use_dora": True}


@pytest.mark.parametrize("config", [IA3, DORA], ids=["ia3", "dora"])
def test_trains_ia3_and_dora_from_a_file_or_inline_json(config: dict, tmp_path: Path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps(config))
    for options in ({"config_file": str(path)}, {"config_json": json.dumps(config)}):
        method = get_method("peft", options)
        model = method.apply(tiny())
        trainable, total = count_parameters(model)
        assert 0 < trainable < total
        before = {k: v.clone() for k, v in method.trained_state_dict(model).items()}
        train_steps(model, steps=2)
        after = method.trained_state_dict(model)
        assert any(not torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(
    "saved",
    [
        IA3Config(target_modules=["k", "v", "wo"], feedforward_modules=["wo"]),
        LoraConfig(r=4, target_modules=["q", "v"], use_dora=True, task_type=TaskType.SEQ_2_SEQ_LM),
    ],
    ids=["ia3", "dora"],
)
def test_a_saved_peft_config_trains_and_merges(saved, tmp_path: Path):
    saved.inference_mode = True  # as saved from a model loaded for inference
    saved.save_pretrained(str(tmp_path))
    method = get_method("peft", {"config_file": str(tmp_path)})  # the folder is enough
    model = method.apply(tiny())
    assert count_parameters(model)[0] > 0
    train_steps(model, steps=2)
    inputs = batch(4)
    with torch.no_grad():
        expected = model(**inputs).logits
        merged = method.merge(model)
        assert type(merged).__name__ == "T5ForConditionalGeneration"
        assert (merged(**inputs).logits - expected).abs().max().item() <= 1e-4


def test_without_a_config_is_a_clear_error():
    with pytest.raises(UsageError, match="exactly one of method.config_file"):
        get_method("peft").apply(tiny())


def test_a_config_without_peft_type_is_a_clear_error():
    with pytest.raises(UsageError, match="peft_type"):
        get_method("peft", {"config_json": '{"r": 4}'}).apply(tiny())


def test_config_dict_rebuilds_the_same_adapter_without_the_file(tmp_path: Path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps(IA3))
    method = get_method("peft", {"config_file": str(path)})
    original = method.trained_state_dict(method.apply(tiny()))
    recorded = method.config_dict()
    path.unlink()  # a served model must not depend on the original file
    rebuilt = get_method("peft", recorded)
    assert json.loads(recorded["config_json"])["peft_type"] == "IA3"
    assert rebuilt.trained_state_dict(rebuilt.apply(tiny())).keys() == original.keys()


def test_prompt_learning_trains_but_refuses_to_merge():
    method = get_method(
        "peft", {"config_json": '{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4}'}
    )
    model = method.apply(tiny())
    model(**batch()).loss.backward()
    with pytest.raises(NotImplementedError, match="PREFIX_TUNING PEFT adapter cannot be merged"):
        method.merge(model)
