"""From benchmark to deployment, measured in every run: the merged model checked against the
model as trained, and what inference costs beside the base, in the same process.

Merged = unmerged, checked: the method folds its trained weights into a plain model of the
base's class (`Method.merge`, on a deep copy), evaluated on the same examples with the run's own
decoding (`eval.*`: greedy or beam search, never sampled), so `<scope>/merged/<metric>` stands
beside `<scope>/<metric>` (on the first `eval.merged_examples` when set, beside the unmerged
scores of those, `<scope>/merged/unmerged_<metric>`); `<scope>/merged/max_logit_diff` is the
largest absolute difference of the two models' logits on the first evaluation batch,
teacher-forced on the references. A method that cannot merge (prompt learning) logs no merged
figure and says why in the param `merge.unavailable`.

Inference cost: the first `eval.inference_prompts` evaluation inputs, each generating exactly
`eval.inference_new_tokens` tokens greedily (end token suppressed), on the base (loaded afresh),
the model as trained and the merged one, interleaved (each prompt on every model in turn, who
goes first rotating; one warm-up call per model and batch shape untimed): latency per generated
token at batch 1 (p50, p95), tokens/s at `eval.batch_size` (the prompts repeated to fill it),
peak memory, size on disk. Logged as `<scope>/inference/<model>/<figure>`.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn

import methods
from benchmark.config import RunConfig
from benchmark.data import Example
from benchmark.evaluation import EvalResult, generate, prompt_batch, score
from benchmark.models import load_base
from benchmark.training import collate, encode, source_ids
from core import record as rec  # the run record's names
from core.families import is_causal

log = logging.getLogger("adaptbench")


def check_deployment(
    config: RunConfig,
    model: nn.Module,
    tokenizer: Any,
    examples: list[Example],
    result: EvalResult,
    scope: str,
    task: Any = None,
) -> dict[str, float]:
    """The merged check and the inference cost of a trained model whose evaluation gave
    `result`; logged under `scope` (`<task>/<language>`) in the active run. Returns them."""
    method = methods.get_method(config.method, config.method_options)
    values: dict[str, float] = {}
    with torch.random.fork_rng(devices=_devices(model)):  # the run's random state is left as is
        merged, reason = merge_copy(method, model)
        if merged is None:
            mlflow.log_param(rec.MERGE_UNAVAILABLE, reason)
            log.info("%s: no merged check: %s", scope, reason)
        elif config.eval.merged_check:
            start = time.perf_counter()
            values.update(merged_scores(config, merged, model, tokenizer, examples, result, task))
            values[rec.MERGED_TIME] = time.perf_counter() - start
        if config.eval.inference_prompts > 0:
            start = time.perf_counter()
            values.update(inference_cost(config, method, model, merged, tokenizer, examples, task))
            values[rec.INFERENCE_TIME] = time.perf_counter() - start
            mlflow.log_param(rec.INFERENCE_MEMORY_PARAM, memory_kind(model))
    mlflow.log_metrics({f"{scope}/{name}": value for name, value in values.items()})
    return values


def merge_copy(method: methods.Method, model: nn.Module) -> tuple[nn.Module | None, str]:
    """(the merged model, '') from a deep copy of `model`, or (None, why it cannot merge)."""
    trained, _ = methods.count_parameters(model)
    if trained == 0:
        return None, f"method {method.name} trains nothing: its merged model is the base itself"
    try:
        merged = method.merge(copy.deepcopy(model))
    except NotImplementedError as err:
        return None, str(err)
    return merged.eval(), ""


def merged_scores(
    config: RunConfig,
    merged: nn.Module,
    model: nn.Module,
    tokenizer: Any,
    examples: list[Example],
    result: EvalResult,
    task: Any = None,
) -> dict[str, float]:
    """`merged/<metric>` of the merged model on the first `eval.merged_examples` of `examples`
    (all with 0) with the run's decoding, beside the unmerged scores of the same examples when
    they are fewer than all (`merged/unmerged_<metric>`); how many predictions differ from the
    unmerged ones, and the largest logit difference."""
    count = min(config.eval.merged_examples or len(examples), len(examples))
    checked = examples[:count]
    predictions = generate(
        merged,
        tokenizer,
        inputs(checked, task),
        config.data.max_source_length,
        max_new_tokens=config.eval.max_new_tokens,
        num_beams=config.eval.num_beams,
        batch_size=config.eval.batch_size,
        desc=f"{result.language} merged eval",
        length_penalty=config.eval.length_penalty,
    )
    unmerged = result.predictions[:count]
    changed = sum(a != b for a, b in zip(predictions, unmerged))
    references = [task.target(ex) if task is not None else ex.code for ex in checked]
    names = list(result.scores)
    values: dict[str, float] = {}
    if count == len(examples):
        before = {name: r.corpus for name, r in result.scores.items()}
    else:
        scored = score(unmerged, references, result.language, names)[0]
        before = {name: r.corpus for name, r in scored.items()}
        values.update({rec.merged_name(rec.UNMERGED + n): v for n, v in before.items()})
    # The metrics are functions of the predictions and references: the same predictions, the
    # same scores.
    after = before
    if changed:
        scored = score(predictions, references, result.language, names)[0]
        after = {name: r.corpus for name, r in scored.items()}
    values.update({rec.merged_name(name): value for name, value in after.items()})
    values[rec.merged_name(rec.CHECKED_EXAMPLES)] = float(count)
    values[rec.merged_name(rec.CHANGED_PREDICTIONS)] = float(changed)
    values[rec.merged_name(rec.MAX_LOGIT_DIFF)] = max_logit_diff(
        model, merged, tokenizer, examples[: config.eval.batch_size], config, task
    )
    return values


@torch.no_grad()
def max_logit_diff(
    model: nn.Module,
    merged: nn.Module,
    tokenizer: Any,
    examples: list[Example],
    config: RunConfig,
    task: Any = None,
) -> float:
    """The largest |logit| difference of two models on `examples`, teacher-forced on the
    references (the target positions only)."""
    data = config.data
    features = encode(
        examples,
        tokenizer,
        data.max_source_length,
        data.max_target_length,
        data.eos_after_cut,
        **({"task": task} if task is not None else {}),
        causal=is_causal(model),
    )
    batch = collate(features, tokenizer.pad_token_id, is_causal(model))
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
    model.eval(), merged.eval()
    first = model(**inputs).logits.float()
    second = merged(**inputs).logits.float()
    keep = inputs["labels"] != -100
    return float((first - second).abs()[keep].max())


# ---------------------------------------------------------------- inference cost


def inputs(examples: list[Example], task: Any = None) -> list[str]:
    """The model's inputs for `examples`: the task's prompts, or the docstrings."""
    return [task.source(ex) if task is not None else ex.docstring for ex in examples]


def inference_cost(
    config: RunConfig,
    method: methods.Method,
    model: nn.Module,
    merged: nn.Module | None,
    tokenizer: Any,
    examples: list[Example],
    task: Any = None,
) -> dict[str, float]:
    """`inference/<model>/<figure>` for the base, the model as trained (`adapted`) and the
    merged one, in this process; sizes on disk beside them."""
    base, _, _ = load_base(config.model)
    base = base.to(next(model.parameters()).device).eval()
    models = {rec.BASE_MODEL: base, rec.ADAPTED_MODEL: model}
    if merged is not None:
        models[rec.MERGED_MODEL] = merged
    prompts = inputs(examples, task)[: config.eval.inference_prompts]
    figures = measure(
        models,
        tokenizer,
        prompts,
        config.data.max_source_length,
        new_tokens=config.eval.inference_new_tokens,
        batch_size=config.eval.batch_size,
    )
    with tempfile.TemporaryDirectory(prefix="adaptbench-sizes-") as tmp:
        figures[rec.BASE_MODEL][rec.SIZE_BYTES] = saved_size(base, Path(tmp) / "base")
        trained = method.save_trained(model, Path(tmp) / "trained.safetensors")
        figures[rec.ADAPTED_MODEL][rec.TRAINED_BYTES] = float(trained)
        if merged is not None:
            figures[rec.MERGED_MODEL][rec.SIZE_BYTES] = saved_size(merged, Path(tmp) / "merged")
    return {
        rec.inference_name(which, figure): value
        for which, by_figure in figures.items()
        for figure, value in by_figure.items()
    }


def measure(
    models: dict[str, nn.Module],
    tokenizer: Any,
    prompts: list[str],
    max_source_length: int,
    new_tokens: int,
    batch_size: int,
    rounds: int = 1,
) -> dict[str, dict[str, float]]:
    """Per model: p50 and p95 latency per generated token at batch 1 (ms), tokens/s at
    `batch_size` and peak memory (MB), the models interleaved on the same prompts."""
    first = next(iter(models.values()))
    device, causal = next(first.parameters()).device, is_causal(first)

    def encoded(texts: list[str]) -> dict[str, torch.Tensor]:
        ids = source_ids(tokenizer, texts, max_source_length, causal)
        return prompt_batch(ids, tokenizer.pad_token_id, causal, device)

    singles = [encoded([p]) for p in prompts]
    full = encoded([prompts[i % len(prompts)] for i in range(batch_size)])
    names = list(models)
    for name in names:  # warm-up, untimed: first calls allocate and pick kernels
        for batch in (singles[0], full):
            timed_generate(models[name], batch, new_tokens)
    latency: dict[str, list[float]] = {name: [] for name in names}
    speed: dict[str, list[float]] = {name: [] for name in names}
    turn = 0
    for _ in range(rounds):
        for batch in [*singles, full]:
            order = names[turn % len(names) :] + names[: turn % len(names)]
            turn += 1
            for name in order:
                seconds, tokens = timed_generate(models[name], batch, new_tokens)
                if batch is full:
                    speed[name].append(tokens / seconds)
                else:
                    latency[name].append(1000 * seconds / tokens)
    out = {}
    for name in names:
        out[name] = {
            rec.LATENCY_P50: float(np.percentile(latency[name], 50)),
            rec.LATENCY_P95: float(np.percentile(latency[name], 95)),
            rec.TOKENS_PER_S: float(np.median(speed[name])),
            rec.PEAK_MEMORY: peak_memory_mb(
                models[name], lambda m=models[name]: timed_generate(m, full, new_tokens)
            ),
        }
    return out


@torch.no_grad()
def timed_generate(
    model: nn.Module, batch: dict[str, torch.Tensor], new_tokens: int
) -> tuple[float, int]:
    """(seconds, tokens generated over the batch) of one greedy call of exactly `new_tokens`."""
    model.eval()
    _synchronize(batch["input_ids"].device)
    start = time.perf_counter()
    out = model.generate(
        **batch,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
    )
    _synchronize(batch["input_ids"].device)
    seconds = time.perf_counter() - start
    rows, length = out.shape
    # A seq2seq model's output starts with the decoder's start token; a decoder-only one's
    # with the prompt.
    prompt = 1 if getattr(model.config, "is_encoder_decoder", True) else batch["input_ids"].shape[1]
    return seconds, rows * (length - prompt)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- memory and sizes


def memory_kind(model: nn.Module) -> str:
    """How `peak_memory_mb` was measured on this machine (logged as a param)."""
    if next(model.parameters()).device.type == "cuda":
        return "cuda max_memory_allocated over the call, plus the weights"
    if _status("VmHWM") is not None and _clear_refs():
        return "resident high-water mark (VmHWM) over the call above the resident set, plus weights"
    return "weights only (no high-water mark on this system)"


def peak_memory_mb(model: nn.Module, call: Callable[[], object]) -> float:
    """The model's weights (parameters and buffers) plus the most memory `call` (a generate
    at the evaluation batch size) added while it ran, in MB."""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        added = torch.cuda.max_memory_allocated(device) - before
    else:
        gc.collect()
        _trim()  # freed memory goes back to the system, so the call's own shows in the peak
        before = _status("VmRSS")
        if before is None or not _clear_refs():
            return weights / 2**20
        call()
        added = max((_status("VmHWM") or before) - before, 0)
    return (weights + added) / 2**20


def _status(field: str) -> int | None:
    """A /proc/self/status size in bytes (Linux), or None."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def _clear_refs() -> bool:
    """Reset the process's resident high-water mark (Linux 4.0+: `5` > /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def saved_size(model: nn.Module, folder: Path) -> float:
    """Bytes of `model.save_pretrained(folder)` (weights and config)."""
    model.save_pretrained(folder)
    return float(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))


def _devices(model: nn.Module) -> list[int]:
    device = next(model.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []
