"""The causal demo base (`demo-causal`): a Llama-style model pretrained by the demo's script with
`--family llama`, laid out as the harness trains a decoder-only model; and its preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from benchmark.config import ModelConfig, make_config
from benchmark.models import DEMO_CAUSAL_MODEL, DEMO_MODEL, DEMO_TOKENIZER, load_base
from benchmark.training import Feature, collate, source_ids, target_ids
from core import families
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "pretrain_demo_model.py"


def _script():
    sys.path.insert(0, str(REPO / "scripts"))
    import pretrain_demo_model

    return pretrain_demo_model


def _parameters(folder: Path) -> int:
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = getattr(transformers, families.family_of(config).auto_class).from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_demo_causal_loads_offline_in_fp32_as_a_llama_model():
    model, tokenizer, info = load_base(ModelConfig(name="demo-causal"))
    assert isinstance(model, LlamaForCausalLM)
    assert (info.source, info.family, info.name) == ("local", "llama", str(DEMO_CAUSAL_MODEL))
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.eos_token_id, model.config.pad_token_id) == (2, 0)
    # Pretrained, not at its random init: on a function continued as in its pretraining, its
    # loss is far below a uniform guess's (ln 8000 = 9.0) and a fresh model's of its shape.
    pair = ("def add(a, b):\n", "    return a + b\n")
    batch = _script().causal_batch(tokenizer, [pair])
    fresh = AutoModelForCausalLM.from_config(model.config).eval()
    with torch.no_grad():
        trained, untrained = model(**batch).loss.item(), fresh(**batch).loss.item()
    assert trained < 5.0 < untrained, (trained, untrained)


def test_demo_causal_is_near_the_t5_demos_size_and_fits_the_size_budget():
    causal, t5 = _parameters(DEMO_CAUSAL_MODEL), _parameters(DEMO_MODEL)
    assert 0.8 * t5 <= causal <= 1.2 * t5, (causal, t5)
    weights = (DEMO_CAUSAL_MODEL / "model.safetensors").stat().st_size
    assert weights <= 2 * causal + 2**16  # half precision: two bytes a parameter, and a header
    total = sum(p.stat().st_size for p in DEMO_CAUSAL_MODEL.rglob("*") if p.is_file())
    assert total <= 8 * 2**20


def test_the_scripts_llama_architecture_is_the_committed_one():
    script = _script()
    committed = json.loads((DEMO_CAUSAL_MODEL / "config.json").read_text())
    default = script.llama_architecture(128, script.CAUSAL_LAYERS)
    assert {k: committed[k] for k in default} == default
    assert committed["model_type"] == "llama"
    # The width and heads of core.families' tiny Llama-style config, its MLP rounded as it is.
    tiny = families.LLAMA.tiny
    assert {k: default[k] for k in ("hidden_size", "intermediate_size")} == {
        k: tiny[k] for k in ("hidden_size", "intermediate_size")
    }
    wider = script.llama_architecture(256, 3)
    assert (wider["intermediate_size"], wider["num_attention_heads"]) == (688, 8)
    assert (wider["num_key_value_heads"], wider["num_hidden_layers"]) == (4, 3)
    summary = json.loads((DEMO_CAUSAL_MODEL / "pretraining.json").read_text())
    assert (summary["family"], summary["layers"], summary["threads"]) == ("llama", 4, 2)


def test_causal_pretraining_pairs_are_prompt_then_target_with_the_loss_on_the_target_only():
    script = _script()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    pairs = [
        ("def f(x):\n", "    return x + 1\n"),
        ("x = 1\n" * 100, "def g():\n" + "    y = 2\n" * 100),  # both cut at 32 tokens
    ]
    batch = script.causal_batch(tokenizer, pairs, max_length=32)
    prompts = source_ids(tokenizer, [p for p, _ in pairs], 32, causal=True)
    targets = target_ids(tokenizer, [t for _, t in pairs], 32, eos_after_cut=True)
    # Exactly the harness's causal layout of the same features.
    expected = collate([Feature(p, t) for p, t in zip(prompts, targets)], 0, causal=True)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for key in batch:
        assert torch.equal(batch[key], expected[key]), key
    eos = tokenizer.eos_token_id
    first = len(prompts[0])
    assert prompts[0][-1] == eos and len(prompts[1]) == 32 and prompts[1][-1] == eos
    assert batch["input_ids"][0, :first].tolist() == tokenizer(pairs[0][0])["input_ids"]
    assert (batch["labels"][0, :first] == -100).all()
    assert batch["labels"][0, first : first + len(targets[0])].tolist() == targets[0]
    assert targets[0][-1] == eos and targets[1][-1] == eos  # a cut target too (eos_after_cut)
    assert batch["input_ids"].shape[1] == 64 and (batch["labels"][1, 32:] != -100).all()
    # The model's loss is the cross-entropy of the target tokens only, each predicted from
    # everything before it: changing a prompt token's label changes nothing.
    values = {**families.LLAMA.tiny, "vocab_size": len(tokenizer)}
    config = AutoConfig.for_model(**values, pad_token_id=0, eos_token_id=eos, bos_token_id=1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted, gold = logits[:, :-1], batch["labels"][:, 1:]
    mask = gold != -100
    by_hand = torch.nn.functional.cross_entropy(shifted[mask], gold[mask])
    assert torch.allclose(loss, by_hand, atol=1e-5)
    assert mask.sum() == len(targets[0]) + len(targets[1])


def _pretrain(out: Path, family: str, steps: int = 3) -> bytes:
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--family",
            family,
            "--steps",
            str(steps),
            "--batch-size",
            "8",
            "--no-stdlib",
            "--layers",
            "1",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return (out / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_causal_pretraining_is_reproducible_and_writes_what_the_committed_folder_has(tmp_path):
    first, second = (_pretrain(tmp_path / name, "llama") for name in ("a", "b"))
    assert first == second
    out = tmp_path / "a"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float16
    assert model.config.num_hidden_layers == 1
    summary = json.loads((out / "pretraining.json").read_text())
    assert (summary["family"], summary["steps"], summary["examples_by_origin"]["stdlib"]) == (
        "llama",
        3,
        0,
    )
    committed = {p.name for p in DEMO_CAUSAL_MODEL.iterdir()} - {"README.md"}
    assert committed == {p.name for p in out.iterdir()}


def test_the_demo_causal_preset_is_the_demos_data_on_the_causal_base():
    config, demo = make_config("lora", "demo-causal", {}), make_config("lora", "demo", {})
    assert config.model.name == "demo-causal"
    assert (config.languages, config.protocol) == (demo.languages, demo.protocol)
    same = ("source", "train_size", "val_size", "eval_split", "selection_seed")
    same += ("max_source_length", "max_target_length", "skip_long_targets")
    assert {k: getattr(config.data, k) for k in same} == {k: getattr(demo.data, k) for k in same}
    assert config.data.eval_size < demo.data.eval_size  # its time trade: docs/demo.md
    # The demo's adapter sizes (the same 128 width); T5's `stack` choice is not set.
    for method in ("lora", "hybrid", "ffn_expansion"):
        options = make_config(method, "demo-causal", {}).method_options
        demo_options = make_config(method, "demo", {}).method_options
        assert options == {k: v for k, v in demo_options.items() if k != "stack"}
