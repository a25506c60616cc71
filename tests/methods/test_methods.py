"""Every method: exact counts, identity at init, frozen base, save/load, merge, generate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

import methods
from core.errors import UsageError
from methods import WeightsMismatchError, count_parameters, get_method
from tests.conftest import CODET5_CONFIG
from tests.methods.util import SMALL, adapted, batch, tiny, train_steps

FOUR = ["lora", "full_layer", "hybrid", "ffn_expansion"]
# The contract every registered method keeps: a new method gets these tests by registering.
EVERY = methods.available()
SEED_COUNTS = {
    "lora": 1_769_472,
    "full_layer": 3_146_752,
    "hybrid": 4_916_224,
    "ffn_expansion": 6_291_456,
}
# Percent of the adapted model's parameters; ffn_expansion: 6,291,456 / 66,783,744.
SEED_SHARES = {"lora": 2.8, "full_layer": 4.9, "ffn_expansion": 9.42}


@pytest.fixture(scope="module")
def codet5_base() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config.from_json_file(CODET5_CONFIG)).eval()


@pytest.mark.parametrize("name", FOUR)
def test_codet5_counts_and_identity_at_init(name: str, codet5_base):
    inputs = batch(vocab=32100)
    with torch.no_grad():
        reference = codet5_base(**inputs).logits
    model = get_method(name).apply(copy.deepcopy(codet5_base)).eval()
    trainable, total = count_parameters(model)
    assert trainable == SEED_COUNTS[name]
    if name in SEED_SHARES:
        digits = 2 if name == "ffn_expansion" else 1
        assert round(100 * trainable / total, digits) == SEED_SHARES[name]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert (logits - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", EVERY)
def test_identity_at_init_on_a_tiny_model_in_eval_mode(name: str):
    inputs = batch(5)
    with torch.no_grad():
        reference = tiny()(**inputs).logits
        logits = adapted(name)[1].eval()(**inputs).logits
    assert (logits - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", EVERY)
def test_apply_is_deterministic_given_the_rng_state(name: str):
    first, second = (adapted(name) for _ in range(2))
    weights_a = first[0].trained_state_dict(first[1])
    weights_b = second[0].trained_state_dict(second[1])
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize("name", EVERY)
def test_training_changes_only_the_method_parameters(name: str):
    method, model = adapted(name)
    if name == "none":  # the base as it is: nothing trains, the weights are the base's
        assert not any(p.requires_grad for p in model.parameters())
        assert not method.trained_state_dict(model)
        base = tiny().state_dict()
        assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
        return
    base_state = copy.deepcopy(tiny().state_dict())
    trained_before = {k: v.clone() for k, v in method.trained_state_dict(model).items()}
    train_steps(model)
    trained_names = set(method.trained_state_dict(model))
    checked = 0
    for key, value in model.state_dict().items():
        # The adapted model's name for a base tensor, back to the base's own name.
        plain = key.replace("base_model.model.", "").replace(".base_layer", "")
        plain = plain.replace("DenseReluDense.ffn.", "DenseReluDense.")
        if key in trained_names or plain not in base_state:
            continue
        assert torch.equal(value, base_state[plain]), key
        checked += 1
    assert checked >= len(base_state) - 1  # all but lm_head, tied to the shared embedding
    changed = [
        k
        for k, v in method.trained_state_dict(model).items()
        if not torch.equal(v, trained_before[k])
    ]
    assert changed, "no trained parameter moved"


@pytest.mark.parametrize("name", EVERY)
def test_save_then_load_onto_a_fresh_base_gives_identical_logits(name: str, tmp_path: Path):
    method, model = adapted(name)
    if method.trained_state_dict(model):  # none trains nothing: its file holds no tensor
        train_steps(model)
    path = tmp_path / "trained.safetensors"
    size = method.save_trained(model, path)
    assert size == path.stat().st_size > 0
    torch.manual_seed(999)  # a different init: everything that matters must come from the file
    reloaded = method.load_trained(method.apply(tiny()), path).eval()
    inputs = batch(7)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


MERGE_CASES = {
    "lora": ("lora", {}, {}),
    "full_layer": ("full_layer", {}, {}),
    "hybrid": ("hybrid", {}, {}),
    "ffn_expansion": ("ffn_expansion", {}, {}),
    "ffn_expansion-gated": ("ffn_expansion", {}, {"feed_forward_proj": "gated-gelu"}),
    "full_layer-decoder": ("full_layer", {"stack": "decoder"}, {}),
    "full_layer-start-2": ("full_layer", {"position": "start", "num_layers": 2}, {}),
    "hybrid-decoder-2": ("hybrid", {"stack": "decoder", "num_layers": 2}, {}),
}


@pytest.mark.parametrize("case", MERGE_CASES)
def test_merged_export_loads_with_plain_from_pretrained(case: str, tmp_path: Path):
    name, options, model_overrides = MERGE_CASES[case]
    method, model = adapted(name, options={**SMALL[name], **options}, **model_overrides)
    train_steps(model)  # so the adapted parts are non-zero
    inputs = batch(3)
    with torch.no_grad():
        expected = model(**inputs).logits
    method.merge(model).save_pretrained(tmp_path / "merged")
    plain = T5ForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    assert type(plain) is T5ForConditionalGeneration
    assert count_parameters(plain)[1] > count_parameters(tiny())[1] or name == "lora"
    with torch.no_grad():
        assert (plain(**inputs).logits - expected).abs().max().item() <= 1e-4


GENERATE_CASES = {
    **{name: (name, {}) for name in FOUR},
    "full_layer-decoder": ("full_layer", {"stack": "decoder"}),
    "full_layer-decoder-start": ("full_layer", {"stack": "decoder", "position": "start"}),
}


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_generate_works_after_apply_with_and_without_the_cache(case: str):
    name, options = GENERATE_CASES[case]
    _, model = adapted(name, options={**SMALL[name], **options})
    train_steps(model, steps=1)  # non-zero new weights, so a cache mix-up would show
    input_ids = batch()["input_ids"]
    cached = model.generate(input_ids=input_ids, max_new_tokens=5, do_sample=False)
    uncached = model.generate(
        input_ids=input_ids, max_new_tokens=5, do_sample=False, use_cache=False
    )
    assert cached.shape[0] == 3 and cached.shape[1] <= 6
    assert torch.equal(cached, uncached)


def test_every_registered_method_has_a_small_test_config():
    # Registering a method brings it under the contract tests above; they need small settings.
    assert set(EVERY) <= set(SMALL), f"add small settings to tests/methods/util.py for {EVERY}"


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(UsageError, match="Registered methods: .*ffn_expansion.*lora"):
        get_method("adapterz")


def test_unknown_config_field_is_named():
    with pytest.raises(UsageError, match="unknown method 'lora' field.*rank.*Known fields: r"):
        get_method("lora", {"rank": "8"})


BAD_VALUES = [
    ("lora", "r", "0"),
    ("lora", "alpha", "0"),
    ("lora", "dropout", "1"),
    ("lora", "bias", "some"),
    ("lora", "target_modules", ""),
    ("full_layer", "stack", "sideways"),
    ("hybrid", "stack", "sideways"),  # full_layer's check, through hybrid's flat settings
    ("hybrid", "r", "0"),  # and LoRA's
    ("ffn_expansion", "expansion_dim", "0"),
    ("ffn_expansion", "dropout", "-0.1"),
    ("ffn_expansion", "init_std", "0"),
]


@pytest.mark.parametrize(("name", "key", "value"), BAD_VALUES)
def test_a_bad_setting_value_is_refused_when_the_method_is_made(name: str, key: str, value: str):
    """Before any model is loaded or trained: the message names the setting as a user writes it."""
    with pytest.raises(UsageError, match=f"method.{key} must"):
        get_method(name, {key: value})


def test_string_options_are_coerced():
    method = get_method("lora", {"r": "8", "target_modules": "q,v", "dropout": "0"})
    assert method.config.r == 8 and method.config.target_modules == ["q", "v"]
    hybrid = get_method("hybrid", {"r": "8", "num_layers": "2", "stack": "decoder"})
    assert (hybrid.config.r, hybrid.config.num_layers, hybrid.config.stack) == (8, 2, "decoder")


def test_weights_for_another_config_are_refused_naming_method_and_tensor(tmp_path: Path):
    method, model = adapted("lora", options={"r": 8})
    method.save_trained(model, tmp_path / "r8.safetensors")
    other = get_method("lora", {"r": 16})
    with pytest.raises(WeightsMismatchError, match="method 'lora' on base .*tensor .*lora_A"):
        other.load_trained(other.apply(tiny()), tmp_path / "r8.safetensors", base_name="tiny")
    ffn = get_method("ffn_expansion", {"expansion_dim": 16})
    with pytest.raises(WeightsMismatchError, match="ffn_expansion.*has no place"):
        ffn.load_trained(ffn.apply(tiny()), tmp_path / "r8.safetensors")


@pytest.mark.parametrize("name", EVERY)
def test_config_dict_rebuilds_the_same_method(name: str):
    method = get_method(name, SMALL[name])
    rebuilt = get_method(name, method.config_dict())
    assert rebuilt.config_dict() == method.config_dict()
    if name != "peft":  # peft records its config resolved (task type, training mode) inline
        assert rebuilt.config == method.config
