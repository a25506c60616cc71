"""The shared training loop: skipped non-finite steps, divergence, bucketing, determinism."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from benchmark.config import TrainConfig
from benchmark.data import Example
from benchmark.models import DEMO_TOKENIZER
from benchmark.training import (
    BucketBatchSampler,
    Feature,
    TrainingDiverged,
    collate,
    encode,
    fitting,
    make_accelerator,
    train,
)


def tiny_model(seed: int = 0, dropout: float = 0.1) -> T5ForConditionalGeneration:
    config = T5Config(
        dropout_rate=dropout,
        vocab_size=64,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def features(n: int = 32, seed: int = 0) -> list[Feature]:
    rng = random.Random(seed)
    return [
        Feature(
            [rng.randrange(2, 64) for _ in range(rng.randrange(3, 12))] + [1],
            [rng.randrange(2, 64) for _ in range(rng.randrange(3, 20))] + [1],
        )
        for _ in range(n)
    ]


class NaNAt(torch.nn.Module):
    """Wraps a model; the loss of the listed forward calls (1-based) is replaced by NaN."""

    def __init__(self, model: torch.nn.Module, calls: set[int]) -> None:
        super().__init__()
        self.model = model
        self.calls = calls
        self.count = 0

    def forward(self, **batch):
        out = self.model(**batch)
        self.count += 1
        if self.count in self.calls:
            out.loss = out.loss * float("nan")
        return out


CONFIG = dict(epochs=1, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, seed=3)


def test_nan_loss_steps_are_skipped_and_counted():
    model = NaNAt(tiny_model(), calls={2, 3})
    feats = features(32)
    result = train(model, feats, [], 0, TrainConfig(**CONFIG), make_accelerator(TrainConfig()))
    assert result.steps == 8
    assert result.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert result.final_loss == result.final_loss  # not NaN


def test_skipped_step_leaves_weights_unchanged():
    model = NaNAt(tiny_model(), calls={1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(**{**CONFIG, "max_steps": 1})
    result = train(model, features(8), [], 0, config, make_accelerator(config))
    assert result.skipped_steps == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_consecutive_nan_steps_abort_with_a_clear_message():
    model = NaNAt(tiny_model(), calls=set(range(1, 100)))
    config = TrainConfig(**{**CONFIG, "max_consecutive_skips": 3})
    with pytest.raises(TrainingDiverged, match="3 consecutive steps .*learning_rate"):
        train(model, features(32), [], 0, config, make_accelerator(config))


def test_training_is_deterministic_and_lowers_the_loss():
    config = TrainConfig(**{**CONFIG, "epochs": 3})
    feats, val = features(32), features(8, seed=1)
    runs = []
    for _ in range(2):
        model = tiny_model()
        losses: list[float] = []

        def record(metrics: dict, step: int, losses: list[float] = losses) -> None:
            if "train/loss" in metrics:
                losses.append(metrics["train/loss"])

        result = train(model, feats, val, 0, config, make_accelerator(config), log=record)
        runs.append((losses, result.val_losses, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert runs[0][1][-1] < runs[0][1][0]
    for key in runs[0][2]:
        assert torch.equal(runs[0][2][key], runs[1][2][key])


def test_gradient_accumulation_counts_optimizer_steps():
    config = TrainConfig(**{**CONFIG, "grad_accum_steps": 2})
    result = train(tiny_model(), features(32), [], 0, config, make_accelerator(config))
    assert result.steps == 4
    assert result.examples_seen == 32


def test_bucket_sampler_covers_every_index_once_with_little_padding():
    lengths = [random.Random(i).randrange(5, 200) for i in range(500)]
    sampler = BucketBatchSampler(lengths, batch_size=8, seed=42)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert len(batches) == len(sampler) == 63
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    unbucketed = BucketBatchSampler(lengths, batch_size=8, seed=42, bucket=False)
    padded_plain = sum(len(b) * max(lengths[i] for i in b) for b in unbucketed)
    assert padded < 0.75 * padded_plain
    assert batches == list(BucketBatchSampler(lengths, batch_size=8, seed=42))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_collate_pads_inputs_and_masks_labels():
    batch = collate([Feature([5, 6, 1], [7, 1]), Feature([5, 1], [7, 8, 9, 1])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [7, 8, 9, 1]]
    assert batch["num_tokens"] == 11


def test_a_cut_target_has_no_end_token_and_a_whole_one_keeps_it():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    eos = tokenizer.eos_token_id
    short = "def f(x):\n    return x"
    long = "def g(items):\n" + "".join(f"    total = total + items[{i}]\n" for i in range(40))
    whole = {code: tokenizer(code)["input_ids"] for code in (short, long)}
    limit = len(whole[short]) + 2  # the short one fits, the long one does not
    assert whole[short][-1] == eos and len(whole[long]) > limit + 1
    examples = [Example(str(i), "python", "Add.", code) for i, code in enumerate((short, long))]

    cut = encode(examples, tokenizer, 16, limit)
    assert cut[0].labels == whole[short]
    assert cut[1].labels == whole[long][:limit] and eos not in cut[1].labels

    codexglue = encode(examples, tokenizer, 16, limit, eos_after_cut=True)
    assert codexglue[0].labels == whole[short]
    assert codexglue[1].labels == whole[long][: limit - 1] + [eos]

    # A code exactly one token too long loses its end token, nothing else.
    exact = tokenizer.decode(whole[long][:limit], skip_special_tokens=True)
    ids = tokenizer(exact)["input_ids"]
    ex = Example("x", "python", "Add.", exact)
    assert encode([ex], tokenizer, 16, len(ids) - 1)[0].labels == ids[:-1]
    assert encode([ex], tokenizer, 16, len(ids))[0].labels == ids


def test_fitting_keeps_exactly_the_examples_whose_target_ends():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    codes = [f"def f{i}(x):\n" + "    x = x + 1\n" * i + "    return x" for i in range(12)]
    examples = [Example(str(i), "python", "Add.", code) for i, code in enumerate(codes)]
    lengths = [len(tokenizer(code)["input_ids"]) for code in codes]  # end token included
    limit = sorted(lengths)[6]  # a limit some codes meet exactly
    kept = fitting(examples, tokenizer, limit)
    assert [ex.id for ex in kept] == [ex.id for ex, n in zip(examples, lengths) if n <= limit]
    assert 0 < len(kept) < len(examples) and limit in [lengths[int(ex.id)] for ex in kept]
    # What is kept is what the encoder leaves whole: every target ends with the end token.
    eos = tokenizer.eos_token_id
    assert all(f.labels[-1] == eos for f in encode(kept, tokenizer, 16, limit))
    dropped = [ex for ex in examples if ex not in kept]
    assert all(f.labels[-1] != eos for f in encode(dropped, tokenizer, 16, limit))
    assert fitting([], tokenizer, limit) == []


@pytest.mark.slow
def test_compiled_training_computes_what_eager_training_does():
    """`train.compile` changes the speed, not the numbers (dropout off: compiled kernels draw
    their own random masks)."""
    losses = {}
    for compiled in (False, True):
        model = tiny_model(dropout=0.0)
        config = TrainConfig(**{**CONFIG, "compile": compiled})
        recorded: list[float] = []
        train(
            model,
            features(32),
            [],
            0,
            config,
            make_accelerator(config),
            log=lambda m, s, r=recorded: r.append(m["train/loss"]) if "train/loss" in m else None,
        )
        losses[compiled] = recorded
    assert len(losses[True]) == 8
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
