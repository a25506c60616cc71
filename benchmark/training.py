"""The one training loop every method shares (accelerate; AdamW, warmup + linear decay)."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from benchmark import console, distributed
from benchmark.checkpoint import Checkpointer
from benchmark.config import TrainConfig
from benchmark.data import Example, pairs
from core.families import is_causal

if TYPE_CHECKING:
    from tasks import Task

logger = logging.getLogger("adaptbench")

LogFn = Callable[[dict[str, float], int], None]


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class Feature:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids) + len(self.labels)


def encode(
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_source: int,
    max_target: int,
    eos_after_cut: bool = False,
    task: Task | None = None,
    causal: bool = False,
) -> list[Feature]:
    """Tokenise the task's inputs and targets (labels), truncated to the configured lengths;
    without a task, docstrings and code. For a decoder-only model (`causal`) every input ends
    with the end token, which separates it from the target (`source_ids`).

    A code longer than `max_target` is cut to its first `max_target` tokens with no end token
    after them (unless `eos_after_cut`): ending a cut function with one would teach the model to
    stop mid-function. The tokenizer adds the end token after truncating, so one token more is
    asked for and the last dropped when the code did not fit.
    """
    if not examples:  # the tokenizer refuses an empty batch
        return []
    inputs, targets = pairs(examples, task)
    sources = source_ids(tokenizer, inputs, max_source, causal)
    labels = target_ids(tokenizer, targets, max_target, eos_after_cut)
    return [Feature(s, t) for s, t in zip(sources, labels)]


def source_ids(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_source: int, causal: bool = False
) -> list[list[int]]:
    """Token ids of each input, at most `max_source`. A seq2seq tokenizer ends them with the end
    token itself; for a decoder-only model it is added where the tokenizer does not, so the
    prompt a model is trained on and the one it generates from end the same way."""
    ids = tokenizer(texts, max_length=max_source, truncation=True)["input_ids"]
    end = tokenizer.eos_token_id
    if not causal or end is None:
        return ids
    return [x if x[-1:] == [end] else x[: max_source - 1] + [end] for x in ids]


def fitting(
    examples: list[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_target: int,
    task: Task | None = None,
) -> list[Example]:
    """The examples whose target fits in `max_target` tokens, its end token included (in order):
    those whose target, cut by the one rule of `target_ids`, still ends with the end token."""
    if not examples:
        return []
    targets = pairs(examples, task)[1]
    labels = target_ids(tokenizer, targets, max_target, eos_after_cut=False)
    return [ex for ex, x in zip(examples, labels) if x[-1] == tokenizer.eos_token_id]


def target_ids(
    tokenizer: PreTrainedTokenizerBase, codes: list[str], max_target: int, eos_after_cut: bool
) -> list[list[int]]:
    """Token ids of each code, at most `max_target`; a cut one ends with the end token only with
    `eos_after_cut` (the tokenizer adds it after truncating: ask for one more, drop the last)."""
    if eos_after_cut:
        return tokenizer(codes, max_length=max_target, truncation=True)["input_ids"]
    ids = tokenizer(codes, max_length=max_target + 1, truncation=True)["input_ids"]
    return [x[:max_target] for x in ids]


class BucketBatchSampler:
    """Shuffled batches of similar lengths: little padding, still a random order each epoch.

    Indices are shuffled, cut into chunks of `batch_size * chunk_batches`, sorted by length
    within a chunk, batched, and the batches shuffled again.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        bucket: bool = True,
        chunk_batches: int = 50,
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.chunk = batch_size * chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1000 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.chunk):
            chunk = order[start : start + self.chunk]
            if self.bucket:
                chunk.sort(key=lambda i: self.lengths[i], reverse=True)
            batches += [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
        if self.bucket:
            rng.shuffle(batches)
        return iter(batches)


def collate(
    features: list[Feature], pad_id: int, causal: bool = False
) -> dict[str, torch.Tensor | int]:
    """Pad to the longest in the batch; labels padded with -100 so the loss ignores them.

    Seq2seq: the inputs go to the encoder, the labels to the decoder. Decoder-only (`causal`):
    one sequence, the input then the target; the labels are the target's tokens in place and -100
    over the input and the padding, so the loss covers the target (its end token included) only.
    """
    num_tokens = sum(f.num_tokens for f in features)
    if causal:
        features = [
            Feature(f.input_ids + f.labels, [-100] * len(f.input_ids) + f.labels) for f in features
        ]
    src_len = max(len(f.input_ids) for f in features)
    tgt_len = max(len(f.labels) for f in features)
    input_ids = torch.full((len(features), src_len), pad_id, dtype=torch.long)
    attention = torch.zeros((len(features), src_len), dtype=torch.long)
    labels = torch.full((len(features), tgt_len), -100, dtype=torch.long)
    for row, f in enumerate(features):
        input_ids[row, : len(f.input_ids)] = torch.tensor(f.input_ids)
        attention[row, : len(f.input_ids)] = 1
        labels[row, : len(f.labels)] = torch.tensor(f.labels)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "num_tokens": num_tokens,
    }


@dataclass
class TrainResult:
    steps: int = 0
    skipped_steps: int = 0
    examples_seen: int = 0
    tokens_seen: int = 0
    train_time_s: float = 0.0
    final_loss: float = float("nan")
    val_losses: list[float] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    memory_kind: str = "cpu_peak_rss"
    resumed_from_step: int = 0  # 0: not resumed

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.train_time_s if self.train_time_s else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.examples_seen / self.train_time_s if self.train_time_s else 0.0

    def as_metrics(self) -> dict[str, float]:
        out = {
            "train_steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "train_time_s": self.train_time_s,
            "train_tokens": self.tokens_seen,
            "tokens_per_s": self.tokens_per_s,
            "samples_per_s": self.samples_per_s,
            "final_train_loss": self.final_loss,
            "peak_memory_mb": self.peak_memory_mb,
        }
        if self.resumed_from_step:
            out["resumed_from_step"] = self.resumed_from_step
        if self.val_losses:
            out["final_val_loss"] = self.val_losses[-1]
        return out


def make_accelerator(config: TrainConfig) -> Accelerator:
    """Mixed precision from the config; gradient accumulation is done by `train` itself (the
    last window of an epoch may be shorter), so accelerate's is left at 1."""
    distributed.state()  # CPU processes when there is no GPU
    return Accelerator(mixed_precision=config.mixed_precision)


def shard(batch: list[int], rank: int, num_processes: int) -> list[int]:
    """This process's contiguous part of a global batch: sizes differ by at most one. A batch
    smaller than the number of processes is repeated so that every process gets an example."""
    if num_processes == 1:
        return batch
    while len(batch) < num_processes:
        batch = batch + batch
    size, extra = divmod(len(batch), num_processes)
    start = rank * size + min(rank, extra)
    return batch[start : start + size + (rank < extra)]


def _peak_memory_mb(accelerator: Accelerator) -> tuple[float, str]:
    if accelerator.device.type == "cuda":
        return torch.cuda.max_memory_allocated(accelerator.device) / 2**20, "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux: the whole process's peak resident memory so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    features: list[Feature],
    pad_id: int,
    batch_size: int,
    accelerator: Accelerator,
) -> float:
    """Token-weighted mean loss over `features` (eval mode), each process taking a share."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # loss sum, tokens
    order = sorted(range(len(features)), key=lambda i: features[i].num_tokens)
    order = order[accelerator.process_index :: accelerator.num_processes]
    causal = is_causal(model)
    for start in range(0, len(order), batch_size):
        batch = collate([features[i] for i in order[start : start + batch_size]], pad_id, causal)
        batch.pop("num_tokens")
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            loss = model(**batch).loss
        n = (batch["labels"] != -100).sum()
        totals += torch.stack([loss.double() * n, n.double()])
    totals = accelerator.reduce(totals, "sum") if accelerator.num_processes > 1 else totals
    total, count = totals.tolist()
    model.train(was_training)
    return total / count if count else float("nan")


def train(
    model: nn.Module,
    train_features: list[Feature],
    val_features: list[Feature],
    pad_id: int,
    config: TrainConfig,
    accelerator: Accelerator,
    log: LogFn | None = None,
    desc: str = "train",
    checkpointer: Checkpointer | None = None,
    before_checkpoint: Callable[[], None] | None = None,
) -> TrainResult:
    """Train the parameters of `model` that require grad; returns counts, timings and losses.

    Data parallel over accelerate's processes: each global batch of `config.batch_size`
    examples is split between the processes, and each process's loss is weighted by its share
    of the batch's target tokens, so the gradient is the one of the whole batch's token-mean loss,
    whatever the number of processes. `grad_accum_steps` batches make one optimizer step.
    With a `checkpointer`, training resumes from its latest checkpoint when there is one, saves
    every `checkpoint_every` steps and at each epoch end, calling `before_checkpoint` first
    (to make the metrics logged so far durable: a resumed run neither loses a step nor, with
    the runner's skip list, logs one twice).
    """
    log = log or (lambda metrics, step: None)
    rank, world = accelerator.process_index, accelerator.num_processes
    sampler = BucketBatchSampler(
        [f.num_tokens for f in train_features],
        config.batch_size,
        config.seed,
        bucket=config.length_bucketing,
    )
    causal = is_causal(model)  # before accelerate wraps it
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: the method froze everything")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    accum = config.grad_accum_steps
    steps_per_epoch = math.ceil(len(sampler) / accum)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    # The scheduler stays unprepared: accelerate would step it once per process, but
    # `total_steps` counts global optimizer steps, the same whatever the number of processes.
    if config.compile:
        # Dynamic shapes: bucketed batches vary in length, and a recompile per length would
        # cost more than it saves. Generation later uses the uncompiled module.
        model = torch.compile(model, dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)

    result = TrainResult()
    start_epoch = start_batch = 0
    resumed = checkpointer.latest() if checkpointer else None
    if resumed is not None:
        checkpointer.restore(resumed, model, optimizer, scheduler)
        state = resumed.state
        start_epoch, start_batch = state["epoch"], state["batch"]
        result.steps = state["step"]
        for name in ("skipped_steps", "examples_seen", "tokens_seen", "train_time_s"):
            setattr(result, name, state[name])
        result.final_loss = float(state["final_loss"])
        result.val_losses = list(state["val_losses"])
        result.resumed_from_step = result.steps
        logger.info("resumed from %s (step %d)", resumed.path, result.steps)

    def save_checkpoint(epoch: int, batch: int) -> None:
        saved = time.perf_counter()
        state = {
            "epoch": epoch,
            "batch": batch,
            "step": result.steps,
            "skipped_steps": result.skipped_steps,
            "examples_seen": result.examples_seen,
            "tokens_seen": result.tokens_seen,
            "train_time_s": result.train_time_s + time.perf_counter() - start - pause[0],
            "final_loss": result.final_loss,
            "val_losses": result.val_losses,
        }
        if before_checkpoint:  # the metrics up to here are durable before the checkpoint is
            before_checkpoint()
        checkpointer.save(model, optimizer, scheduler, state)
        pause[0] += time.perf_counter() - saved

    consecutive_skips = 0
    bar = console.progress_bar(
        total=total_steps,
        initial=result.steps,
        desc=desc,
        disable=not accelerator.is_main_process,
        unit="step",
    )
    start = time.perf_counter()
    pause = [0.0]  # validation and checkpoints are timed apart: train_time_s is training alone
    model.train()
    done = bool(config.max_steps and result.steps >= config.max_steps)
    for epoch in range(start_epoch, config.epochs):
        if done:
            break
        sampler.set_epoch(epoch)
        batches = list(sampler)
        first = start_batch if epoch == start_epoch else 0
        window_loss = torch.zeros((), device=accelerator.device)
        for index in range(first, len(batches)):
            global_batch = batches[index]
            window_start = index - index % accum
            window_size = min(accum, len(batches) - window_start)
            sync = index == window_start + window_size - 1
            part = [train_features[i] for i in shard(global_batch, rank, world)]
            batch = collate(part, pad_id, causal)
            batch.pop("num_tokens")
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            # This process's share of the batch's target tokens: the weights of the shares' mean
            # losses that make the whole batch's token-mean loss (1 with one process).
            share = sum(len(f.labels) for f in part) / sum(
                len(train_features[i].labels) for i in global_batch
            )
            context = contextlib.nullcontext() if sync or world == 1 else accelerator.no_sync(model)
            with context:
                loss = model(**batch).loss * share
                # A non-finite loss makes non-finite gradients: the check at the optimizer step
                # below catches both with one host sync per step. DDP averages gradients over
                # the processes, hence the factor `world`.
                accelerator.backward(loss * (world / window_size))
            window_loss += loss.detach().float() / window_size
            result.tokens_seen += sum(train_features[i].num_tokens for i in global_batch)
            result.examples_seen += len(global_batch)
            if not sync:
                continue
            grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
            values = torch.stack([window_loss, grad_norm.float().to(window_loss.device) / world])
            if world > 1:
                values = accelerator.reduce(values, "sum")  # every process takes the same step
            step_loss, norm = values.tolist()
            if math.isfinite(step_loss) and math.isfinite(norm):
                optimizer.step()
                if not optimizer.step_was_skipped:  # fp16 loss scaling skips overflowed steps
                    scheduler.step()
                consecutive_skips = 0
            else:
                result.skipped_steps += 1
                consecutive_skips += 1
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            window_loss.zero_()
            if math.isfinite(step_loss):
                result.final_loss = step_loss
            if result.steps % config.log_every == 0 or not math.isfinite(step_loss):
                log(
                    {
                        "train/loss": step_loss,
                        "train/grad_norm": norm,
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/skipped_steps": result.skipped_steps,
                    },
                    result.steps,
                )
            bar.set_postfix(loss=f"{step_loss:.4f}", skipped=result.skipped_steps)
            bar.update(1)  # after the postfix: a plain line (not a terminal) shows this step's
            if consecutive_skips >= config.max_consecutive_skips:
                bar.close()
                raise TrainingDiverged(
                    f"{consecutive_skips} consecutive steps had a non-finite loss or gradient "
                    f"(last loss {step_loss}, grad norm {norm}) at step {result.steps}. Lower "
                    "train.learning_rate, use mixed_precision=no or bf16 instead of fp16, or raise "
                    "train.max_consecutive_skips"
                )
            done = bool(config.max_steps and result.steps >= config.max_steps)
            if done:
                break
            if checkpointer and checkpointer.due(result.steps) and index + 1 < len(batches):
                save_checkpoint(epoch, index + 1)
        if val_features:
            val_start = time.perf_counter()
            val_loss = validation_loss(
                model, val_features, pad_id, config.val_batch_size, accelerator
            )
            pause[0] += time.perf_counter() - val_start
            result.val_losses.append(val_loss)
            log({"val/loss": val_loss, "epoch": epoch + 1}, result.steps)
        if checkpointer:  # each epoch's end, and the end of training
            save_checkpoint(epoch + 1, 0)
    bar.close()
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize(accelerator.device)
    result.train_time_s += time.perf_counter() - start - pause[0]
    result.peak_memory_mb, result.memory_kind = _peak_memory_mb(accelerator)
    model.eval()
    return result
