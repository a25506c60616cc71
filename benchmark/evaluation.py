"""Evaluation: batched generation from docstrings, then every metric in the registry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch
from accelerate.utils import gather_object
from torch import nn
from transformers import PreTrainedTokenizerBase

import metrics as metric_registry
from benchmark import console, distributed
from benchmark.config import EvalConfig
from benchmark.data import Example, pairs
from benchmark.training import source_ids
from core.families import is_causal
from metrics import MetricResult

if TYPE_CHECKING:
    from tasks import Task


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_source_length: int,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    batch_size: int = 32,
    desc: str = "generate",
    progress: bool = True,
    shard: bool = False,
    length_penalty: float = 1.0,
    **generate_kwargs,
) -> list[str]:
    """Code for each prompt, in input order; prompts are batched by length to cut padding.

    `length_penalty` acts in beam search only (greedy search has no use for it, and transformers
    warns about it there). With `shard`, when launched on several processes, each generates a
    contiguous share and every process gets the whole list back, in order (every process must
    call it).
    """
    if num_beams > 1:
        generate_kwargs["length_penalty"] = length_penalty
    state = distributed.state()
    if shard and state.num_processes > 1:
        with state.split_between_processes(prompts, apply_padding=True) as share:
            mine = _generate(
                model,
                tokenizer,
                share,
                max_source_length,
                max_new_tokens,
                num_beams,
                batch_size,
                desc,
                progress and state.is_main_process,
                **generate_kwargs,
            )
        return gather_object(mine)[: len(prompts)]
    return _generate(
        model,
        tokenizer,
        prompts,
        max_source_length,
        max_new_tokens,
        num_beams,
        batch_size,
        desc,
        progress,
        **generate_kwargs,
    )


def _generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_source_length: int,
    max_new_tokens: int,
    num_beams: int,
    batch_size: int,
    desc: str,
    progress: bool,
    **generate_kwargs,
) -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    causal = is_causal(model)
    ids = source_ids(tokenizer, prompts, max_source_length, causal)
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]), reverse=True)
    outputs: list[str] = [""] * len(prompts)
    bar = console.progress_bar(total=len(prompts), desc=desc, unit="ex", disable=not progress)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = prompt_batch([ids[i] for i in index], tokenizer.pad_token_id, causal, device)
        tokens = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            **generate_kwargs,
        )
        if causal:  # a decoder-only model returns the prompt, then what it generated
            tokens = tokens[:, batch["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(
            tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        for i, text in zip(index, texts):
            outputs[i] = text
        bar.update(len(index))
    bar.close()
    return outputs


def prompt_batch(
    rows: list[list[int]], pad_id: int, causal: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """Prompts padded to one length: on the right for an encoder; on the left for a decoder-only
    model, whose new tokens must follow each prompt's last token directly."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        span = slice(width - len(row), width) if causal else slice(0, len(row))
        input_ids[r, span] = torch.tensor(row, dtype=torch.long)
        attention[r, span] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}


@dataclass
class EvalResult:
    language: str
    predictions: list[str]
    scores: dict[str, MetricResult]
    signatures: dict[str, str]
    generation_time_s: float
    metric_time_s: dict[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        out = {name: r.corpus for name, r in self.scores.items()}
        out["generation_time_s"] = self.generation_time_s
        return out


def score(
    predictions: list[str], references: list[str], language: str, names: list[str]
) -> tuple[dict[str, MetricResult], dict[str, str], dict[str, float]]:
    """Every requested metric that supports `language`: results, signatures, seconds taken."""
    scores, signatures, seconds = {}, {}, {}
    for metric in metric_registry.resolve(names):
        if not metric.supports(language):
            continue
        start = time.perf_counter()
        scores[metric.name] = metric.compute(predictions, references, language)
        seconds[metric.name] = time.perf_counter() - start
        signatures[metric.name] = metric.signature()
    return scores, signatures, seconds


def evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    language: str,
    config: EvalConfig,
    max_source_length: int,
    task: Task | None = None,
) -> EvalResult:
    """Generate the task's target for every example's input and score it against the reference
    with the task's metrics (`eval.metrics=all`) or the named ones; without a task, docstring ->
    code scored by `eval.metrics`."""
    inputs, references = pairs(examples, task)
    names = config.metrics
    if task is not None and names == ["all"]:
        names = list(task.metrics)
    start = time.perf_counter()
    predictions = generate(
        model,
        tokenizer,
        inputs,
        max_source_length,
        max_new_tokens=config.max_new_tokens,
        num_beams=config.num_beams,
        batch_size=config.batch_size,
        desc=f"{task.name + ' ' if task else ''}{language} eval",
        shard=True,
        length_penalty=config.length_penalty,
    )
    generation_time = time.perf_counter() - start
    if not distributed.state().is_main_process:  # the main process scores the gathered predictions
        return EvalResult(language, predictions, {}, {}, generation_time)
    scores, signatures, seconds = score(predictions, references, language, names)
    return EvalResult(language, predictions, scores, signatures, generation_time, seconds)


def examples_table(
    examples: list[Example], result: EvalResult, task: Task | None = None
) -> pd.DataFrame:
    """One row per evaluated example: ids, the input (named by its field: the docstring without a
    task), reference, prediction, metric values."""
    inputs, references = pairs(examples, task)
    table = pd.DataFrame(
        {
            "id": [ex.id for ex in examples],
            "language": result.language,
            task.input_field if task is not None else "docstring": inputs,
            "reference": references,
            "prediction": result.predictions,
        }
    )
    for name, values in result.scores.items():
        table[name] = values.per_example
    return table
