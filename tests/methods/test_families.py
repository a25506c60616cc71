"""Every method on every family (issue 23): the contract of test_methods.py, on tiny random T5,
llama, qwen2 (llama-style, with QKV biases and per-layer attention kinds), mistral (llama-style,
a sliding window shorter than the batch) and GPT-2 models built from core.families' configs.
Expected counts are computed from the config, never from a run."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers

import methods
from benchmark import cli
from core.errors import UsageError
from core.families import FAMILIES, family_of
from methods import count_parameters, get_method
from tests.conftest import REPO
from tests.methods.util import SMALL

EVERY = methods.available()
VOCAB = 100
QWEN_CONFIG = REPO / "tests" / "fixtures" / "qwen2.5-coder-0.5b-config.json"
BASES = {
    "t5": FAMILIES["t5"].tiny,
    "llama": FAMILIES["llama"].tiny,
    "qwen2": {**FAMILIES["llama"].tiny, "model_type": "qwen2"},
    "mistral": {**FAMILIES["llama"].tiny, "model_type": "mistral", "sliding_window": 8},
    "gpt2": FAMILIES["gpt2"].tiny,
}
# IA3 through `peft` on each family's own module names (k, v and the FFN's output layer).
IA3 = {
    "t5": {"target_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"]},
    "llama": {
        "target_modules": ["k_proj", "v_proj", "down_proj"],
        "feedforward_modules": ["down_proj"],
    },
    "gpt2": {
        "target_modules": ["c_attn", "mlp.c_proj"],
        "feedforward_modules": ["mlp.c_proj"],
        "fan_in_fan_out": True,  # GPT-2's Conv1D
    },
}


def tiny_config(base: str) -> transformers.PretrainedConfig:
    values = {**BASES[base], "vocab_size": VOCAB, "pad_token_id": 0, "eos_token_id": 1}
    if base == "t5":
        values["decoder_start_token_id"] = 0
    else:
        values["bos_token_id"] = 1
    return transformers.AutoConfig.for_model(**values)


def plain_class(config) -> type:
    if family_of(config).causal:
        return transformers.AutoModelForCausalLM._model_mapping[type(config)]
    return transformers.T5ForConditionalGeneration


def tiny(base: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return plain_class(tiny_config(base))(tiny_config(base)).eval()


def options(name: str, base: str, **extra) -> dict:
    if name == "peft":
        ia3 = IA3[family_of(tiny_config(base)).name]
        return {"config_json": json.dumps({"peft_type": "IA3", **ia3})}
    return {**SMALL[name], **extra}


def adapted(name: str, base: str, **extra) -> tuple[methods.Method, torch.nn.Module]:
    torch.manual_seed(123)
    method = get_method(name, options(name, base, **extra))
    return method, method.apply(tiny(base))


def batch(base: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """T5: source and target; causal: prompt then target in one row, the loss on the target."""
    g = torch.Generator().manual_seed(seed)
    if base == "t5":
        return {
            "input_ids": torch.randint(2, VOCAB, (3, 11), generator=g),
            "labels": torch.randint(2, VOCAB, (3, 7), generator=g),
        }
    input_ids = torch.randint(2, VOCAB, (3, 12), generator=g)
    labels = input_ids.clone()
    labels[:, :5] = -100  # the prompt
    return {"input_ids": input_ids, "labels": labels}


def train_steps(model: torch.nn.Module, base: str, steps: int = 3) -> None:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for i in range(steps):
        model(**batch(base, i)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def logits(model: torch.nn.Module, base: str, seed: int = 5) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch(base, seed)).logits


# --- expected counts, from the config -------------------------------------------------------


def linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def block_params(config) -> int:
    """One new block of the family (T5: an encoder block)."""
    family = family_of(config).name
    if family == "t5":
        inner = config.num_heads * config.d_kv
        return 4 * config.d_model * inner + 2 * config.d_model * config.d_ff + 2 * config.d_model
    if family == "gpt2":
        h, i = config.n_embd, config.n_inner or 4 * config.n_embd
        attention = linear(h, 3 * h, True) + linear(h, h, True)
        return attention + linear(h, i, True) + linear(i, h, True) + 4 * h
    h, i = config.hidden_size, config.intermediate_size
    head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    qkv_bias = config.model_type == "qwen2" or getattr(config, "attention_bias", False)
    o_bias = config.model_type != "qwen2" and getattr(config, "attention_bias", False)
    attention = linear(h, q, qkv_bias) + 2 * linear(h, kv, qkv_bias) + linear(q, h, o_bias)
    return attention + 3 * linear(h, i, getattr(config, "mlp_bias", False)) + 2 * h


def lora_params(config, r: int) -> int:
    """r * (in + out) for each attention projection q, k, v, o of every attention."""
    family = family_of(config).name
    if family == "t5":
        inner = config.num_heads * config.d_kv
        attentions = config.num_layers + 2 * config.num_decoder_layers  # decoder: self + cross
        return attentions * 4 * r * (config.d_model + inner)
    if family == "gpt2":
        h = config.n_embd
        return config.n_layer * r * ((h + 3 * h) + (h + h))
    h = config.hidden_size
    head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    return config.num_hidden_layers * r * ((h + q) + 2 * (h + kv) + (q + h))


def ffn_params(config, width: int) -> int:
    """up (and up_gate where gated) d -> width, down width -> d, no bias, beside every FFN."""
    family = family_of(config).name
    if family == "t5":
        gated = 3 if config.is_gated_act else 2
        return (config.num_layers + config.num_decoder_layers) * gated * config.d_model * width
    if family == "gpt2":
        return config.n_layer * 2 * config.n_embd * width
    return config.num_hidden_layers * 3 * config.hidden_size * width


def ia3_params(config) -> int:
    """IA3: a vector over k's and v's outputs and over the FFN output layer's inputs."""
    family = family_of(config).name
    if family == "t5":
        inner = config.num_heads * config.d_kv
        attentions = config.num_layers + 2 * config.num_decoder_layers
        return (
            attentions * 2 * inner + (config.num_layers + config.num_decoder_layers) * config.d_ff
        )
    if family == "gpt2":
        return config.n_layer * (3 * config.n_embd + (config.n_inner or 4 * config.n_embd))
    head = config.hidden_size // config.num_attention_heads
    kv = config.num_key_value_heads * head
    return config.num_hidden_layers * (2 * kv + config.intermediate_size)


def expected_trainable(name: str, config, settings: dict) -> int:
    lora = settings.get("r", 24)
    return {
        "lora": lambda: lora_params(config, lora),
        "full_layer": lambda: block_params(config),
        "hybrid": lambda: lora_params(config, lora) + block_params(config),
        "ffn_expansion": lambda: ffn_params(config, settings.get("expansion_dim", 512)),
        "peft": lambda: ia3_params(config),
        "none": lambda: 0,
    }[name]()


# --- the contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("name", EVERY)
def test_exact_trainable_count_and_identity_at_init(name: str, base: str):
    reference = logits(tiny(base), base)
    method, model = adapted(name, base)
    model.eval()
    trainable, _ = count_parameters(model)
    assert trainable == expected_trainable(name, tiny_config(base), options(name, base))
    assert (logits(model, base) - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("name", EVERY)
def test_training_leaves_the_frozen_base_unchanged(name: str, base: str):
    base_state = copy.deepcopy(tiny(base).state_dict())
    method, model = adapted(name, base)
    before = {k: v.clone() for k, v in method.trained_state_dict(model).items()}
    if before:
        train_steps(model, base)
    checked = 0
    for key, value in model.state_dict().items():
        plain = key.replace("base_model.model.", "").replace(".base_layer", "")
        plain = plain.replace(".ffn.", ".")
        if key in before or plain not in base_state:
            continue
        assert torch.equal(value, base_state[plain]), key
        checked += 1
    assert checked >= len(base_state) - 1  # all but lm_head where it is tied to the embedding
    if name != "none":
        moved = [
            k for k, v in method.trained_state_dict(model).items() if not torch.equal(v, before[k])
        ]
        assert moved, "no trained parameter moved"


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("name", EVERY)
def test_saved_weights_load_onto_a_fresh_base_with_identical_logits(
    name: str, base: str, tmp_path: Path
):
    method, model = adapted(name, base)
    if method.trained_state_dict(model):
        train_steps(model, base)
    method.save_trained(model, tmp_path / "trained.safetensors")
    torch.manual_seed(999)  # another init of the method's own parts: the file must decide them
    reloaded = method.load_trained(method.apply(tiny(base)), tmp_path / "trained.safetensors")
    assert torch.equal(logits(model, base, 7), logits(reloaded.eval(), base, 7))


MERGE_CASES = {
    **{name: (name, {}) for name in EVERY},
    "full_layer-start-2": ("full_layer", {"position": "start", "num_layers": 2}),
    "full_layer-interleave-2": ("full_layer", {"position": "interleave", "num_layers": 2}),
    "hybrid-interleave": ("hybrid", {"position": "interleave"}),
}


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("case", MERGE_CASES)
def test_merged_model_is_the_plain_class_and_round_trips(case: str, base: str, tmp_path: Path):
    name, extra = MERGE_CASES[case]
    method, model = adapted(name, base, **extra)
    if method.trained_state_dict(model):
        train_steps(model, base)  # so the adapted parts are non-zero
    expected = logits(model, base)
    merged = method.merge(model).eval()
    assert type(merged) is plain_class(tiny_config(base))
    assert (logits(merged, base) - expected).abs().max().item() <= 1e-4
    merged.save_pretrained(tmp_path / "merged")
    loaded = plain_class(tiny_config(base)).from_pretrained(tmp_path / "merged").eval()
    assert count_parameters(loaded)[1] == count_parameters(merged)[1]
    assert (logits(loaded, base) - expected).abs().max().item() <= 1e-4


GENERATE_CASES = {
    **{name: (name, {}) for name in EVERY},
    "full_layer-start": ("full_layer", {"position": "start"}),
    "full_layer-interleave-2": ("full_layer", {"position": "interleave", "num_layers": 2}),
}


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("case", GENERATE_CASES)
def test_greedy_generate_with_and_without_the_cache(case: str, base: str):
    name, extra = GENERATE_CASES[case]
    method, model = adapted(name, base, **extra)
    if method.trained_state_dict(model):
        train_steps(model, base, steps=1)  # non-zero new weights, so a cache mix-up would show
    prompt = batch(base)["input_ids"][:, :6]
    kwargs = dict(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=4,
        min_new_tokens=4,
        do_sample=False,
        pad_token_id=0,
    )
    cached = model.generate(**kwargs)
    uncached = model.generate(**kwargs, use_cache=False)
    new_tokens = 4 if base == "t5" else 6 + 4  # a causal model returns the prompt too
    assert cached.shape[0] == 3 and cached.shape[1] == new_tokens + (base == "t5")
    assert torch.equal(cached, uncached)


# --- placements, defaults and refusals ------------------------------------------------------


@pytest.mark.parametrize("base", ["llama", "qwen2", "gpt2"])
def test_interleaved_blocks_keep_layer_indices_and_config_depth(base: str):
    method, model = adapted("full_layer", base, position="interleave", num_layers=2)
    config = model.config
    assert config.num_hidden_layers == 4
    layers = model.model.layers if base != "gpt2" else model.transformer.h
    attention = "attn" if base == "gpt2" else "self_attn"
    assert [getattr(block, attention).layer_idx for block in layers] == [0, 1, 2, 3]
    trained = {k.split(".")[2] for k in method.trained_state_dict(model)}
    assert trained == {"1", "3"}  # one new block after each base block
    if base == "qwen2":
        assert config.layer_types == ["full_attention"] * 4


def test_interleave_places_blocks_evenly():
    from methods.full_layer import placement

    assert placement(24, 4, "interleave") == [
        *range(0, 6),
        None,
        *range(6, 12),
        None,
        *range(12, 18),
        None,
        *range(18, 24),
        None,
    ]
    assert placement(3, 2, "interleave") == [0, None, 1, 2, None]
    assert placement(2, 1, "start") == [None, 0, 1]
    with pytest.raises(UsageError, match="num_layers=3 with position=interleave.*has 2"):
        placement(2, 3, "interleave")


def test_interleave_on_t5_uses_the_passed_down_position_bias():
    _, model = adapted("full_layer", "t5", position="interleave", num_layers=2)
    blocks = model.encoder.block
    assert len(blocks) == 4 and model.config.num_layers == 4
    biased = [b.layer[0].SelfAttention.has_relative_attention_bias for b in blocks]
    assert biased == [True, False, False, False]


def test_stack_is_ignored_on_a_decoder_only_model():
    counts = {
        stack: count_parameters(adapted("full_layer", "llama", stack=stack)[1])[0]
        for stack in ("encoder", "decoder")
    }
    assert counts["encoder"] == counts["decoder"] == block_params(tiny_config("llama"))


def test_lora_names_q_k_v_o_per_family_and_keeps_t5_as_it_was():
    from methods.lora import lora_config

    settings = get_method("lora").config
    assert settings.target_modules == ["q", "k", "v", "o"]  # what a T5 run records, unchanged
    t5 = lora_config(settings, tiny("t5"))
    assert sorted(t5.target_modules) == ["k", "o", "q", "v"] and t5.task_type == "SEQ_2_SEQ_LM"
    llama = lora_config(settings, tiny("qwen2"))
    assert sorted(llama.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    gpt2 = lora_config(settings, tiny("gpt2"))
    assert sorted(gpt2.target_modules) == ["attn.c_attn", "attn.c_proj"] and gpt2.fan_in_fan_out
    assert llama.task_type == gpt2.task_type == "CAUSAL_LM"
    # Names other than q, k, v, o are the model's own.
    assert lora_config(
        get_method("lora", {"target_modules": "gate_proj"}).config, tiny("llama")
    ).target_modules == {"gate_proj"}


def test_ffn_expansion_dropout_defaults_per_family():
    from methods.ffn_expansion import ExpandedFFN

    expected = {"t5": 0.1, "llama": 0.0, "qwen2": 0.0, "gpt2": tiny_config("gpt2").resid_pdrop}
    for base, p in expected.items():
        _, model = adapted("ffn_expansion", base)
        assert {m.dropout.p for m in model.modules() if isinstance(m, ExpandedFFN)} == {p}


def test_ffn_expansion_merges_into_a_wider_ffn_on_every_family():
    widths = {
        "t5": "d_ff",
        "llama": "intermediate_size",
        "qwen2": "intermediate_size",
        "gpt2": "n_inner",
    }
    for base, field in widths.items():
        method, model = adapted("ffn_expansion", base)
        merged = method.merge(model)
        assert getattr(merged.config, field) == getattr(tiny_config(base), field) + 16


@pytest.mark.parametrize("name", [n for n in EVERY if n != "none"])
def test_an_unsupported_architecture_is_one_clear_usage_error(name: str):
    config = transformers.BartConfig(
        vocab_size=VOCAB,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
    )
    model = transformers.BartForConditionalGeneration(config)
    with pytest.raises(UsageError) as refused:
        get_method(name, options(name, "t5")).apply(model)
    message = str(refused.value)
    assert "\n" not in message and "'bart'" in message
    assert all(family in message for family in ("t5", "llama", "qwen2", "gpt2"))


# --- `python -m benchmark methods --model-config` -------------------------------------------


def test_the_qwen_fixture_has_the_published_shape():
    values = json.loads(QWEN_CONFIG.read_text())
    assert (values["model_type"], values["hidden_size"], values["intermediate_size"]) == (
        "qwen2",
        896,
        4864,
    )
    assert (values["num_hidden_layers"], values["num_attention_heads"]) == (24, 14)
    assert (values["num_key_value_heads"], values["vocab_size"]) == (2, 151936)
    assert values["tie_word_embeddings"] is True


def qwen_total(config) -> int:
    """Embedding (tied to the head), the blocks, the final norm: 494,032,768 for 0.5B."""
    return (
        config.vocab_size * config.hidden_size
        + config.num_hidden_layers * block_params(config)
        + config.hidden_size
    )


@pytest.mark.parametrize(
    "path", [QWEN_CONFIG, REPO / "tests" / "fixtures" / "codet5-small-config.json"]
)
def test_methods_command_prints_every_count_for_a_config(path: Path, capsys):
    config = transformers.AutoConfig.from_pretrained(path)
    assert cli.main(["methods", "--model-config", str(path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line[0].isspace()}
    defaults = {"r": 24, "expansion_dim": 512}
    for name in ("lora", "full_layer", "hybrid", "ffn_expansion", "none"):
        count = expected_trainable(name, config, defaults)
        assert f"trainable {count:,} of " in lines[name], lines[name]
    if family_of(config).causal:
        total = qwen_total(config)
        assert total == 494_032_768
        assert (
            f"trainable {lora_params(config, 24):,} of {total + lora_params(config, 24):,}"
            in lines["lora"]
        )
