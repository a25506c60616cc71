"""Performance, side by side in one process: the shared loop against Seq2SeqTrainer + peft,
batched against per-example generation, the metrics, and peak memory per method.

Model: a randomly initialised model of codet5-small's shape (nothing downloaded). Data: the
bundled sample's real docstrings and code (long-tailed lengths), tokenised with the demo
tokenizer, batch 8. Prints a table and writes JSON.

The loop against the peer (`peer`): one epoch each over the same `--peer-examples` examples,
LoRA r=24 on q, k, v, o from the same initial weights, the same optimizer settings (AdamW,
lr 1e-4, no weight decay, 6 % linear warm-up, clipping at 1, a logged loss every step), each
after 2 warm-up steps of its own that are not timed; the runs follow one another in every
round (loop, peer, ..., then again), `--peer-rounds` rounds, and medians are reported with the
load average at each run. The peer is `Seq2SeqTrainer` with its length grouping
(`train_sampling_strategy="group_by_length"`, transformers 5's name for 4.x's
`group_by_length=True`, which sorts by `input_ids` length), and with the same grouping on a
`length` column of source + target tokens (what the loop sorts on); the loop without
bucketing and the peer on exactly the loop's batches attribute the gap (padding against
everything else). Each run's CPU seconds are counted too: with `--threads 1` on a machine
shared with other work, samples per CPU second measure the work whatever the others do. A
last check trains both for a few steps on the same batches with dropout off: the same losses.

FLOPs are counted as matmul work: a linear layer with P weights costs 2*P per token forward and
4*P per token backward (gradient of the input, which every layer above a trained one needs, and
of the weight, for trained weights only: 2*P); encoder layers see source tokens, decoder layers
and the LM head see target tokens; attention-score matmuls (short sequences) are left out, so
the figure is a slight underestimate. The peak is the best fp32 `torch.mm` rate measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import methods  # noqa: E402
from benchmark.config import DataConfig, TrainConfig  # noqa: E402
from benchmark.data import load_languages  # noqa: E402
from benchmark.evaluation import generate  # noqa: E402
from benchmark.models import DEMO_TOKENIZER  # noqa: E402
from benchmark.training import (  # noqa: E402
    BucketBatchSampler,
    encode,
    make_accelerator,
    train,
)

CODET5_CONFIG = ROOT / "tests" / "fixtures" / "codet5-small-config.json"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul FLOP/s over a few sizes."""
    best = 0.0
    for n in (size // 2, size, size * 2 if device.type == "cuda" else size):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        sync(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start))
    return best


def base_model(device: torch.device):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config.from_json_file(CODET5_CONFIG)).to(device)


def features(tokenizer, count: int):
    config = DataConfig(source="sample", train_size=count, val_size=0, eval_size=1)
    task = load_languages(["python"], config)["python"]
    return encode(task.train, tokenizer, 64, 128), task


def step_flops(model, feats, n_steps: int, batch: int) -> float:
    """Matmul FLOPs of the training steps that saw `feats[: n_steps * batch]` (see module doc)."""
    enc = dec = head = enc_trained = dec_trained = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            weights = module.weight.numel()
            trained = module.weight.requires_grad
            if "lm_head" in name:
                head += weights
            elif ".encoder." in f".{name}":
                enc += weights
                enc_trained += weights * trained
            else:
                dec += weights
                dec_trained += weights * trained
    seen = feats[: n_steps * batch]
    src = sum(len(f.input_ids) for f in seen)
    tgt = sum(len(f.labels) for f in seen)
    return (
        src * (4 * enc + 2 * enc_trained)
        + tgt * (4 * dec + 2 * dec_trained)
        + tgt * 4 * head  # the tied LM head: logits and the gradient flowing back
    )


def fresh_model(method_name: str, device: torch.device):
    """The method applied to a new base, in a new accelerate state (the precision is fixed per
    process state, so each measurement starts its own)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return methods.get_method(method_name).apply(base_model(device))


def bench_loop(
    method_name: str, feats, steps: int, device: torch.device, warmup: int = 2, **options
) -> dict:
    """The loop's figures; `options` are TrainConfig settings (compile, mixed_precision)."""
    model = fresh_model(method_name, device)
    common = dict(epochs=1, batch_size=8, learning_rate=1e-4, **options)
    config = TrainConfig(max_steps=steps, seed=42, **common)
    warm = TrainConfig(max_steps=warmup, seed=1, **common)
    # Warm-up: allocator, kernels, and for `compile` the compilation (timed apart).
    started = time.perf_counter()
    train(model, feats, [], 0, warm, make_accelerator(warm))
    warmup_s = time.perf_counter() - started
    losses: list[float] = []
    result = train(
        model,
        feats,
        [],
        0,
        config,
        make_accelerator(config),
        log=lambda m, s: losses.append(m["train/loss"]) if "train/loss" in m else None,
    )
    return {
        "samples_per_s": result.samples_per_s,
        "tokens_per_s": result.tokens_per_s,
        "seconds": result.train_time_s,
        "mean_loss": sum(losses) / len(losses),
        "flops": step_flops(model, feats, steps, 8),
        "warmup_s": warmup_s,
    }


# Profiler op names by what they do; everything else (elementwise ops, layer norms, the
# optimizer's arithmetic, copies) is "other".
OP_GROUPS = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"),
    "dropout masks (random numbers)": ("aten::bernoulli_", "aten::uniform_", "aten::rand_like"),
    "softmax and cross-entropy": (
        "aten::_log_softmax",
        "aten::_log_softmax_backward_data",
        "aten::_softmax",
        "aten::_softmax_backward_data",
        "aten::nll_loss_forward",
        "aten::nll_loss_backward",
    ),
}


def profile_loop(method_name: str, feats, steps: int, device: torch.device) -> dict:
    """Where the loop's time goes: a few steps of the real loop under torch.profiler, its ops'
    self time grouped by kind (shares of the profiled total). Matmul FLOPs are the profiler's
    own count of the executed matmuls (padding included), so `matmul_gflops` is the rate the
    matmuls themselves reach at these shapes: the loop cannot beat it even with every other op
    taking no time. `uncounted_share` is the part of that executed work the loop's FLOP count
    leaves out: padding, and the attention-score matmuls."""
    from torch.profiler import ProfilerActivity, profile

    model = fresh_model(method_name, device)
    seen = feats[: steps * 8]  # one epoch over exactly these, so the useful FLOPs are exact
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-4, seed=42)
    warm = TrainConfig(epochs=1, batch_size=8, max_steps=2, seed=1)
    train(model, seen, [], 0, warm, make_accelerator(warm))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, with_flops=True) as prof:
        train(model, seen, [], 0, config, make_accelerator(config))
    on_device = device.type == "cuda"
    times = {group: 0.0 for group in OP_GROUPS} | {"other": 0.0}
    matmul_flops = 0.0
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if on_device else event.self_cpu_time_total) / 1e6
        group = next((g for g, names in OP_GROUPS.items() if event.key in names), "other")
        times[group] += seconds
        if group == "matmul":
            matmul_flops += event.flops
    total = sum(times.values())
    counted = step_flops(model, seen, steps, 8)
    return {
        "seconds_profiled": total,
        "shares": {group: t / total for group, t in times.items()},
        "matmul_gflops": matmul_flops / times["matmul"] / 1e9,
        "uncounted_share": max(0.0, 1 - counted / matmul_flops),
    }


class EpochTimer(TrainerCallback):
    """Times the peer's training epoch alone: from its start (before the first batch is
    fetched) to its end, like the loop's own timer; setup and warm-up stay outside."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.started = self.seconds = self.cpu_started = self.cpu_seconds = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs) -> None:
        sync(self.device)
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def on_epoch_end(self, args, state, control, **kwargs) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started


class RecordingCollator:
    """`DataCollatorForSeq2Seq` (what the peer uses) on the features without the `length` column
    (the sampler's, not the model's), noting each batch's real and padded token counts."""

    def __init__(self, tokenizer, model) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.inner = DataCollatorForSeq2Seq(tokenizer, model=model, padding=True)
        self.batches: list[tuple[int, int]] = []  # (real tokens, padded tokens)

    def __call__(self, features: list[dict]) -> dict:
        features = [{k: v for k, v in f.items() if k != "length"} for f in features]
        self.batches.append(
            batch_tokens([(len(f["input_ids"]), len(f["labels"])) for f in features])
        )
        return self.inner(features)


def batch_tokens(lengths: list[tuple[int, int]]) -> tuple[int, int]:
    """Real and padded (source + target) tokens of one batch of (source, target) lengths."""
    real = sum(s + t for s, t in lengths)
    padded = len(lengths) * (max(s for s, _ in lengths) + max(t for _, t in lengths))
    return real, padded


def loop_batches(feats, bucketing: bool, seed: int = 42) -> list[list[int]]:
    """The batches of the loop's first epoch (its sampler is deterministic in the seed)."""
    sampler = BucketBatchSampler([f.num_tokens for f in feats], 8, seed, bucket=bucketing)
    sampler.set_epoch(0)
    return list(sampler)


def padding_share(batches: list[tuple[int, int]]) -> float:
    """Share of the computed (source + target) positions that are padding."""
    return 1 - sum(r for r, _ in batches) / sum(p for _, p in batches)


def time_loop_epoch(feats, device: torch.device, bucketing: bool = True) -> dict:
    """One epoch of the shared loop over `feats` (LoRA, batch 8), after 2 warm-up steps."""
    model = fresh_model("lora", device)
    common = dict(epochs=1, batch_size=8, learning_rate=1e-4, length_bucketing=bucketing)
    warm = TrainConfig(max_steps=2, seed=1, **common)
    train(model, feats, [], 0, warm, make_accelerator(warm))
    config = TrainConfig(seed=42, **common)
    losses: list[float] = []
    cpu_started = time.process_time()
    result = train(
        model,
        feats,
        [],
        0,
        config,
        make_accelerator(config),
        log=lambda m, s: losses.append(m["train/loss"]) if "train/loss" in m else None,
    )
    batches = [
        batch_tokens([(len(feats[i].input_ids), len(feats[i].labels)) for i in b])
        for b in loop_batches(feats, bucketing)
    ]
    return {
        "samples_per_cpu_s": len(feats) / (time.process_time() - cpu_started),
        "samples_per_s": result.samples_per_s,
        "tokens_per_s": result.tokens_per_s,
        "seconds": result.train_time_s,
        "losses": losses,
        "mean_loss": sum(losses) / len(losses),
        "padding_share": padding_share(batches),
    }


def peer_dataset(feats, order: str):
    """The peer's dataset: input_ids, labels and, for `group_by_length_total`, a `length`
    column of source + target tokens (what the loop buckets on); for `loop`, the rows in the
    order of the loop's batches (read sequentially, they are the same batches)."""
    import datasets

    if order == "loop":
        rows = [feats[i] for batch in loop_batches(feats, True) for i in batch]
    else:
        rows = list(feats)
    records = [{"input_ids": f.input_ids, "labels": f.labels} for f in rows]
    if order == "group_by_length_total":
        for record, f in zip(records, rows):
            record["length"] = f.num_tokens
    return datasets.Dataset.from_list(records)


# How each peer order is asked of TrainingArguments (transformers 5.x: train_sampling_strategy;
# 4.x had group_by_length=True).
PEER_STRATEGIES = {
    "random": "random",
    "group_by_length": "group_by_length",
    "group_by_length_total": "group_by_length",
    "loop": "sequential",
}


def peer_trainer(model, dataset, tokenizer, device, order: str, max_steps: int, warmup_steps: int):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers.trainer_callback import PrinterCallback

    args = Seq2SeqTrainingArguments(
        output_dir=str(Path("/tmp") / "adaptbench-perf-trainer"),
        per_device_train_batch_size=8,
        max_steps=max_steps,
        num_train_epochs=1,
        learning_rate=1e-4,
        weight_decay=0.0,
        max_grad_norm=1.0,
        warmup_steps=warmup_steps,
        train_sampling_strategy=PEER_STRATEGIES[order],
        # The `length` column reaches the sampler only if the Trainer keeps it; the collator
        # drops it before the model sees the batch.
        remove_unused_columns=order != "group_by_length_total",
        report_to=[],
        save_strategy="no",
        logging_steps=1,  # the loop logs every step too (train.log_every=1)
        seed=42,
        use_cpu=device.type == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    collator = RecordingCollator(tokenizer, model)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.remove_callback(PrinterCallback)  # one printed dict a step
    return trainer, collator


def time_peer_epoch(feats, tokenizer, device: torch.device, order: str) -> dict:
    """One epoch of Seq2SeqTrainer + peft LoRA over `feats` in the given order, after 2 warm-up
    steps in a Trainer of their own (the loop's warm-up is a train call of its own too)."""
    model = fresh_model("lora", device)
    dataset = peer_dataset(feats, order)
    warm, _ = peer_trainer(model, dataset, tokenizer, device, order, max_steps=2, warmup_steps=0)
    warm.train()
    steps = math.ceil(len(feats) / 8)
    trainer, collator = peer_trainer(
        model, dataset, tokenizer, device, order, max_steps=-1, warmup_steps=int(0.06 * steps)
    )
    timer = EpochTimer(device)
    trainer.add_callback(timer)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = sum(r for r, _ in collator.batches)
    return {
        "samples_per_cpu_s": len(feats) / timer.cpu_seconds,
        "samples_per_s": len(feats) / timer.seconds,
        "tokens_per_s": tokens / timer.seconds,
        "seconds": timer.seconds,
        "losses": losses,
        "mean_loss": sum(losses) / len(losses),
        "padding_share": padding_share(collator.batches),
    }


def without_dropout(model):
    """The model with every dropout at 0: nn.Dropout modules, and T5 attention's own rate (a
    float it passes to the functional dropout)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
    return model


def same_batches_losses(feats, tokenizer, device: torch.device, steps: int) -> dict:
    """The loop and the peer from the same initial weights on the same batches (the loop's
    first `steps`), dropout off so that nothing random is left: their losses step by step."""
    model = without_dropout(fresh_model("lora", device))
    config = TrainConfig(epochs=1, batch_size=8, learning_rate=1e-4, seed=42, max_steps=steps)
    loop_losses: list[float] = []
    train(
        model,
        feats,
        [],
        0,
        config,
        make_accelerator(config),
        log=lambda m, s: loop_losses.append(m["train/loss"]) if "train/loss" in m else None,
    )
    model = without_dropout(fresh_model("lora", device))
    trainer, _ = peer_trainer(
        model,
        peer_dataset(feats, "loop"),
        tokenizer,
        device,
        "loop",
        max_steps=steps,
        warmup_steps=int(0.06 * steps),
    )
    trainer.train()
    peer_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "loop": loop_losses,
        "peer": peer_losses,
        "max_abs_difference": max(abs(a - b) for a, b in zip(loop_losses, peer_losses)),
    }


# The A/B set: the loop, the tuned peer two ways, and what attributes the gap. Run in turn,
# `rounds` times, in one process on the same data. Name: (what it is, loop or peer, option).
PEER_RUNS = {
    "loop": ("shared loop (length bucketing)", "loop", True),
    "peer_grouped": ("Seq2SeqTrainer, group_by_length", "peer", "group_by_length"),
    "peer_grouped_total": (
        "Seq2SeqTrainer, group_by_length on source + target lengths",
        "peer",
        "group_by_length_total",
    ),
    "peer_loop_batches": ("Seq2SeqTrainer on the loop's batches", "peer", "loop"),
    "loop_unbucketed": ("shared loop, bucketing off", "loop", False),
    "peer_random": ("Seq2SeqTrainer, random batches (untuned)", "peer", "random"),
}


def compare_with_peer(feats, tokenizer, device: torch.device, rounds: int, runs: list[str]) -> dict:
    """Interleaved A/B: every run of `runs` once per round, `rounds` rounds; medians of each."""
    import statistics

    results: dict[str, list[dict]] = {name: [] for name in runs}
    for round_index in range(rounds):
        for name in runs:
            _, kind, option = PEER_RUNS[name]
            load = os.getloadavg()[0]
            if kind == "loop":
                result = time_loop_epoch(feats, device, bucketing=option)
            else:
                result = time_peer_epoch(feats, tokenizer, device, option)
            result["load_1min"] = load
            results[name].append(result)
            print(
                f"  round {round_index + 1} {name}: {result['samples_per_s']:.2f} samples/s "
                f"({result['samples_per_cpu_s']:.2f} per CPU second), "
                f"padding {100 * result['padding_share']:.0f} %, mean loss "
                f"{result['mean_loss']:.4f} (load {load:.1f})",
                flush=True,
            )
    summary = {}
    for name, found in results.items():
        first = results[runs[0]]  # the first run of each round (the loop): the reference
        summary[name] = {
            # This run against the first run of the same round (neighbours in time share the
            # machine's load best): one ratio a round.
            "first_over_this_by_round": [
                a["samples_per_s"] / b["samples_per_s"] for a, b in zip(first, found)
            ],
            "first_over_this_cpu_by_round": [
                a["samples_per_cpu_s"] / b["samples_per_cpu_s"] for a, b in zip(first, found)
            ],
            "samples_per_s_median": statistics.median(r["samples_per_s"] for r in found),
            "samples_per_s": [r["samples_per_s"] for r in found],
            "samples_per_cpu_s_median": statistics.median(r["samples_per_cpu_s"] for r in found),
            "samples_per_cpu_s": [r["samples_per_cpu_s"] for r in found],
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in found),
            "mean_loss": [r["mean_loss"] for r in found],
            "padding_share": found[0]["padding_share"],
            "load_1min": [r["load_1min"] for r in found],
        }
    return summary


def padding_by_size(tokenizer, sizes: list[int]) -> dict:
    """Padding share of each order on `size` examples (orders only, no training): the peer's
    length grouping sorts within mega-batches of min(50, size // 32) batches, the loop's within
    chunks of 50 batches, so the two differ most on small sets."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    out = {}
    for size in sizes:
        feats, _ = features(tokenizer, size)
        feats = feats[: len(feats) // 8 * 8]
        shape = [(len(f.input_ids), len(f.labels)) for f in feats]
        torch.manual_seed(42)
        orders = {
            "loop": [i for b in loop_batches(feats, True) for i in b],
            "loop_unbucketed": [i for b in loop_batches(feats, False) for i in b],
            "peer_grouped": get_length_grouped_indices([s for s, _ in shape], 8),
            "peer_grouped_total": get_length_grouped_indices([s + t for s, t in shape], 8),
            "peer_random": torch.randperm(len(feats)).tolist(),
        }
        out[len(feats)] = {
            name: padding_share(
                [
                    batch_tokens([shape[i] for i in order[k : k + 8]])
                    for k in range(0, len(order), 8)
                ]
            )
            for name, order in orders.items()
        }
    return out


def bench_generation(task, tokenizer, device: torch.device, count: int) -> dict:
    model = base_model(device).eval()
    prompts = [ex.docstring for ex in task.train[:count]]
    start = time.perf_counter()
    generate(model, tokenizer, prompts, 64, max_new_tokens=32, batch_size=32, progress=False)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for prompt in prompts:
        generate(model, tokenizer, [prompt], 64, max_new_tokens=32, batch_size=1, progress=False)
    single = time.perf_counter() - start
    return {
        "batched_examples_per_s": count / batched,
        "per_example_examples_per_s": count / single,
        "ratio": single / batched,
    }


def peak_memory(method_name: str, steps: int) -> float:
    """Peak RSS (MB) of a fresh process training `method_name` (a peak never goes down, so
    each method needs a process of its own)."""
    out = subprocess.run(
        [sys.executable, __file__, "--peak-rss-of", method_name, "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per run")
    parser.add_argument("--generation-examples", type=int, default=48)
    parser.add_argument("--metric-pairs", type=int, default=5000)
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: loop (and with it profile and --variants), profile, "
        "peer, methods, generation, metrics, memory",
    )
    parser.add_argument(
        "--peer-examples", type=int, default=400, help="examples of the loop vs peer epoch (400)"
    )
    parser.add_argument("--peer-rounds", type=int, default=3, help="interleaved A/B rounds (3)")
    parser.add_argument(
        "--peer-runs",
        default="",
        help="comma-separated subset of the loop vs peer runs (default: all): "
        + ", ".join(PEER_RUNS),
    )
    parser.add_argument(
        "--peer-loss-steps",
        type=int,
        default=8,
        help="steps of the same-batches loss check (0: skip it)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="also time the LoRA loop with these options, comma-separated: compile (torch.compile, "
        "compilation timed apart), bf16 (autocast)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default). On a CPU shared with other work, 1 keeps a "
        "thread from waiting on a descheduled one, and CPU seconds then measure the work",
    )
    parser.add_argument("--json", default="perf.json", help="where to write the figures")
    parser.add_argument("--peak-rss-of", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    from transformers import AutoTokenizer

    if args.peak_rss_of:  # a child process of peak_memory()
        tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
        feats, _ = features(tokenizer, args.steps * 8 + 16)
        bench_loop(args.peak_rss_of, feats, args.steps, torch.device("cpu"))
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
        status = Path("/proc/self/status").read_text()
        peak_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
        print(peak_kb / 1024)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    feats, task = features(tokenizer, args.steps * 8 + 16)
    report: dict = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor(),
    }
    # "loop": the matmul peak, the loop's headline figure, its variants and its profile.
    if "loop" not in skip:
        report["matmul_peak_gflops"] = matmul_peak(device) / 1e9
        print(f"fp32 matmul peak: {report['matmul_peak_gflops']:.1f} GFLOP/s on {device}")

        loop = bench_loop("lora", feats, args.steps, device)
        loop["gflops"] = loop["flops"] / loop["seconds"] / 1e9
        loop["share_of_peak"] = loop["gflops"] / report["matmul_peak_gflops"]
        report["loop_lora"] = loop
        print(
            f"loop lora: {loop['samples_per_s']:.2f} samples/s, "
            f"{loop['tokens_per_s']:.0f} tokens/s, "
            f"{loop['gflops']:.1f} GFLOP/s = {100 * loop['share_of_peak']:.0f} % of peak, "
            f"mean loss {loop['mean_loss']:.3f}"
        )
        variants = {"compile": {"compile": True}, "bf16": {"mixed_precision": "bf16"}}
        for name in [v for v in args.variants.split(",") if v]:
            if name not in variants:
                parser.error(f"unknown variant {name!r}: choose from {', '.join(variants)}")
            result = bench_loop("lora", feats, args.steps, device, warmup=4, **variants[name])
            result["gflops"] = result["flops"] / result["seconds"] / 1e9
            result["share_of_peak"] = result["gflops"] / report["matmul_peak_gflops"]
            result["vs_plain_loop"] = result["samples_per_s"] / loop["samples_per_s"]
            report[f"loop_lora_{name}"] = result
            print(
                f"loop lora + {name}: {result['samples_per_s']:.2f} samples/s "
                f"({result['vs_plain_loop']:.2f}x the plain loop), "
                f"{100 * result['share_of_peak']:.0f} % of peak, "
                f"mean loss {result['mean_loss']:.3f}, "
                f"warm-up {result['warmup_s']:.0f} s"
            )
    if "profile" not in skip and "loop" not in skip:
        prof = profile_loop("lora", feats, min(args.steps, 6), device)
        prof["matmul_share_of_peak"] = prof["matmul_gflops"] / report["matmul_peak_gflops"]
        report["loop_lora_profile"] = prof
        print(
            "where the loop's time goes (lora, profiled): "
            + ", ".join(f"{g} {100 * v:.0f} %" for g, v in prof["shares"].items())
            + f"; the matmuls alone run at {prof['matmul_gflops']:.1f} GFLOP/s = "
            f"{100 * prof['matmul_share_of_peak']:.0f} % of peak at these shapes; "
            f"{100 * prof['uncounted_share']:.0f} % of the executed matmul work is padding or "
            "attention scores (not counted)"
        )
    if "peer" not in skip:
        peer_feats, _ = features(tokenizer, args.peer_examples)
        peer_feats = peer_feats[: len(peer_feats) // 8 * 8]  # whole batches: "the loop's batches"
        runs = [r for r in args.peer_runs.split(",") if r] if args.peer_runs else list(PEER_RUNS)
        unknown = [r for r in runs if r not in PEER_RUNS]
        if unknown:
            parser.error(f"unknown --peer-runs {unknown}: choose from {', '.join(PEER_RUNS)}")
        runs = ["loop"] + [r for r in runs if r != "loop"]  # first in each round: the reference
        print(
            f"loop vs Seq2SeqTrainer + peft (LoRA), one epoch of {len(peer_feats)} examples each, "
            f"{args.peer_rounds} interleaved rounds:",
            flush=True,
        )
        peer = compare_with_peer(peer_feats, tokenizer, device, args.peer_rounds, runs)
        report["peer"] = peer
        for name, found in peer.items():
            ratio = peer["loop"]["samples_per_s_median"] / found["samples_per_s_median"]
            cpu_ratio = peer["loop"]["samples_per_cpu_s_median"] / found["samples_per_cpu_s_median"]
            found["loop_over_this"], found["loop_over_this_cpu"] = ratio, cpu_ratio
            print(
                f"{PEER_RUNS[name][0]}: median {found['samples_per_s_median']:.2f} samples/s, "
                f"{found['tokens_per_s_median']:.0f} real tokens/s, "
                f"padding {100 * found['padding_share']:.0f} % of positions; loop / this = "
                f"{ratio:.2f}x ({cpu_ratio:.2f}x per CPU second; by round "
                f"{', '.join(f'{x:.2f}' for x in found['first_over_this_by_round'])}, per CPU "
                f"second {', '.join(f'{x:.2f}' for x in found['first_over_this_cpu_by_round'])}); "
                f"load {', '.join(f'{x:.1f}' for x in found['load_1min'])}"
            )
        if args.peer_loss_steps:
            check = same_batches_losses(peer_feats, tokenizer, device, args.peer_loss_steps)
            report["peer_same_batches_losses"] = check
            print(
                f"same weights, same {args.peer_loss_steps} batches, dropout off: loop and peer "
                f"losses differ by at most {check['max_abs_difference']:.2e} "
                f"(loop {', '.join(f'{x:.4f}' for x in check['loop'])})"
            )
        report["padding_by_size"] = padding_by_size(tokenizer, [len(peer_feats), 1000])
        for size, shares in report["padding_by_size"].items():
            print(
                f"padding on {size} examples: "
                + ", ".join(f"{name} {100 * v:.0f} %" for name, v in shares.items())
            )
    if "methods" not in skip:
        for name in ("full_layer", "hybrid", "ffn_expansion"):
            result = bench_loop(name, feats, args.steps, device)
            result["gflops"] = result["flops"] / result["seconds"] / 1e9
            report[f"loop_{name}"] = result
            print(
                f"loop {name}: {result['samples_per_s']:.2f} samples/s, "
                f"{result['gflops']:.1f} GFLOP/s"
            )
    if "generation" not in skip:
        report["generation"] = bench_generation(task, tokenizer, device, args.generation_examples)
        g = report["generation"]
        print(
            f"generation: batched {g['batched_examples_per_s']:.2f} ex/s, per-example "
            f"{g['per_example_examples_per_s']:.2f} ex/s, ratio {g['ratio']:.1f}x"
        )
    if "metrics" not in skip:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_metrics.py"),
                "--pairs",
                str(args.metric_pairs),
                "--json",
                "/tmp/adaptbench-metrics.json",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        report["metrics"] = json.loads(Path("/tmp/adaptbench-metrics.json").read_text())
        seconds = report["metrics"]["seconds"]
        total = sum(sum(per_language.values()) for per_language in seconds.values())
        slowest = max(seconds, key=lambda name: sum(seconds[name].values()))
        print(
            f"metrics on {args.metric_pairs} pairs per language: {total:.1f} s for all of them "
            f"on both languages (slowest: {slowest}, {sum(seconds[slowest].values()):.1f} s)"
        )
    if "memory" not in skip and device.type == "cpu":
        report["peak_rss_mb"] = {
            name: peak_memory(name, 3) for name in ("lora", "full_layer", "hybrid", "ffn_expansion")
        }
        print("peak RSS (MB):", {k: round(v) for k, v in report["peak_rss_mb"].items()})
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
