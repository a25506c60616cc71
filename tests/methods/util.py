"""Small models, batches and a short training loop shared by the method tests."""

from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

from methods import Method, get_method

# Small settings so each tiny-model test runs in a fraction of a second.
SMALL = {
    "lora": {"r": 4, "alpha": 8},
    "hybrid": {"r": 4, "alpha": 8},
    "ffn_expansion": {"expansion_dim": 16},
    "full_layer": {},
    "none": {},
    "peft": {
        "config_json": '{"peft_type": "IA3", "target_modules": ["k", "v", "wo"], '
        '"feedforward_modules": ["wo"]}'
    },
}


def tiny(seed: int = 0, **overrides) -> T5ForConditionalGeneration:
    """A 2+2-layer T5 (d_model 32), built at random from `seed`, in eval mode."""
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


def adapted(
    name: str, seed: int = 0, options: dict | None = None, **model_overrides
) -> tuple[Method, torch.nn.Module]:
    """(method, tiny model adapted by it); the method's own init is seeded too."""
    torch.manual_seed(123)
    method = get_method(name, SMALL[name] if options is None else options)
    return method, method.apply(tiny(seed, **model_overrides))


def train_steps(model: torch.nn.Module, steps: int = 3) -> None:
    """A few AdamW steps (lr 1e-2) on random batches, over the trainable parameters only."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for i in range(steps):
        loss = model(**batch(i)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
