"""Method plugins: exact counts, identity at initialisation, frozen base, save/load, merge."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

import methods
from benchmark.config import UsageError
from methods import WeightsMismatchError, count_parameters, get_method
from tests.conftest import CODET5_CONFIG

FOUR = ["lora", "full_layer", "hybrid", "ffn_expansion"]
SEED_COUNTS = {
    "lora": 1_769_472,
    "full_layer": 3_146_752,
    "hybrid": 4_916_224,
    "ffn_expansion": 6_291_456,
}
SEED_SHARES = {"lora": 2.8, "full_layer": 4.9, "ffn_expansion": 9.42}


def tiny(seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    values = dict(
        vocab_size=100,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        dropout_rate=0.1,
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(**values)).eval()


def batch(seed: int = 0, vocab: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(2, vocab, (3, 11), generator=g),
        "labels": torch.randint(2, vocab, (3, 7), generator=g),
    }


SMALL = {
    "lora": {"r": 4, "alpha": 8},
    "hybrid": {"r": 4, "alpha": 8},
    "ffn_expansion": {"expansion_dim": 16},
    "full_layer": {},
}


def adapted(name: str, seed: int = 0, options: dict | None = None, **model_overrides):
    torch.manual_seed(123)  # the method's own random init
    method = get_method(name, SMALL[name] if options is None else options)
    return method, method.apply(tiny(seed, **model_overrides))


def train_steps(model: torch.nn.Module, steps: int = 3) -> None:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for i in range(steps):
        loss = model(**batch(i)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


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


@pytest.mark.parametrize("name", FOUR)
def test_training_changes_only_the_method_parameters(name: str):
    method, model = adapted(name)
    base_state = copy.deepcopy(tiny().state_dict())
    trained_before = {k: v.clone() for k, v in method.trained_state_dict(model).items()}
    train_steps(model)
    trained_names = set(method.trained_state_dict(model))
    checked = 0
    for key, value in model.state_dict().items():
        plain = key.replace("base_model.model.", "").replace(".base_layer", "")
        plain = plain.replace("DenseReluDense.ffn.", "DenseReluDense.")
        if key in trained_names or plain not in base_state:
            continue
        assert torch.equal(value, base_state[plain]), key
        checked += 1
    assert checked > 20
    changed = [
        k
        for k, v in method.trained_state_dict(model).items()
        if not torch.equal(v, trained_before[k])
    ]
    assert changed, "no trained parameter moved"


@pytest.mark.parametrize("name", FOUR)
def test_save_then_load_onto_a_fresh_base_gives_identical_logits(name: str, tmp_path: Path):
    method, model = adapted(name)
    train_steps(model)
    path = tmp_path / "trained.safetensors"
    size = method.save_trained(model, path)
    assert size == path.stat().st_size > 0
    torch.manual_seed(999)  # a different init: everything that matters must come from the file
    reloaded = method.load_trained(method.apply(tiny()), path).eval()
    inputs = batch(7)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


@pytest.mark.parametrize(
    "name, overrides",
    [(n, {}) for n in FOUR]
    + [("ffn_expansion", {"feed_forward_proj": "gated-gelu"}), ("full_layer", {}), ("hybrid", {})],
    ids=FOUR + ["ffn_expansion-gated", "full_layer-decoder", "hybrid-2-layers"],
)
def test_merged_export_loads_with_plain_from_pretrained(
    name: str, overrides: dict, tmp_path: Path, request
):
    options = dict(SMALL[name])
    if request.node.callspec.id == "full_layer-decoder":
        options["stack"] = "decoder"
    if request.node.callspec.id == "hybrid-2-layers":
        options["num_layers"] = 2
    method, model = adapted(name, options=options, **overrides)
    train_steps(model)
    inputs = batch(3)
    with torch.no_grad():
        expected = model(**inputs).logits
    method.merge(model).save_pretrained(tmp_path / "merged")
    plain = T5ForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    assert type(plain) is T5ForConditionalGeneration
    with torch.no_grad():
        assert (plain(**inputs).logits - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", FOUR)
def test_generate_works_after_apply(name: str):
    _, model = adapted(name)
    out = model.generate(input_ids=batch()["input_ids"], max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 3 and out.shape[1] <= 6


@pytest.mark.parametrize(
    "config",
    [
        {"peft_type": "IA3", "target_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"]},
        {"peft_type": "LORA", "r": 4, "target_modules": ["q", "v"], "use_dora": True},
    ],
    ids=["ia3", "dora"],
)
def test_generic_peft_method_trains_ia3_and_dora(config: dict, tmp_path: Path):
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


def test_generic_peft_without_a_config_is_a_clear_error():
    with pytest.raises(UsageError, match="exactly one of method.config_file"):
        get_method("peft").apply(tiny())


def test_unknown_method_lists_the_registered_ones():
    with pytest.raises(UsageError, match="Registered methods: .*ffn_expansion.*lora"):
        get_method("adapterz")


def test_unknown_config_field_is_named():
    with pytest.raises(UsageError, match="unknown method 'lora' field.*rank.*Known fields: r"):
        get_method("lora", {"rank": "8"})


def test_string_options_are_coerced():
    method = get_method("lora", {"r": "8", "target_modules": "q,v", "dropout": "0"})
    assert method.config.r == 8 and method.config.target_modules == ["q", "v"]


def test_weights_for_another_config_are_refused_naming_method_and_tensor(tmp_path: Path):
    method, model = adapted("lora", options={"r": 8})
    method.save_trained(model, tmp_path / "r8.safetensors")
    other = get_method("lora", {"r": 16})
    with pytest.raises(WeightsMismatchError, match="method 'lora' on base .*tensor .*lora_A"):
        other.load_trained(other.apply(tiny()), tmp_path / "r8.safetensors", base_name="tiny")
    ffn = get_method("ffn_expansion", {"expansion_dim": 16})
    with pytest.raises(WeightsMismatchError, match="ffn_expansion.*has no place"):
        ffn.load_trained(ffn.apply(tiny()), tmp_path / "r8.safetensors")


def test_ffn_expansion_refuses_an_unknown_ffn_structure():
    model = tiny()
    layer = model.encoder.block[0].layer[1]
    layer.DenseReluDense = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Linear(64, 32))
    with pytest.raises(TypeError, match=r"encoder\.block\.0\.layer\.1\.DenseReluDense.*Sequential"):
        get_method("ffn_expansion").apply(model)


def test_ffn_expansion_handles_gated_ffns_without_nan():
    _, model = adapted("ffn_expansion", feed_forward_proj="gated-gelu")
    train_steps(model)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_describe_counts_every_method_on_a_config():
    rows = {r["name"]: r for r in methods.describe(str(CODET5_CONFIG))}
    for name, count in SEED_COUNTS.items():
        assert rows[name]["trainable"] == count
    assert rows["peft"]["trainable"] is None and "config" in rows["peft"]["note"]
    assert {f["name"] for f in rows["lora"]["fields"]} >= {"r", "alpha", "target_modules"}
