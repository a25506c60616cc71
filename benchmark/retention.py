"""Retention: how much of what the base knew a method keeps (what PEFT's method comparison calls
forgetting), as the mean per-token loss on fixed held-out sets before and after adaptation.

A loss pass, no generation. For the model trained on a language the sets are:

- `code-<lang>`: docstring -> code pairs of every known language the model was not trained on,
  from the run's source with the run's cleaning, drawn from its validation then test splits
  (shuffled with `SEED`) and disjoint, by the code's fingerprint, from every example the run
  trains, validates or evaluates on, in any language;
- `pretraining-text`: text the base was pretrained on, in its pretraining format. The bundled
  `demo` base was pretrained on the sample's train split and standard-library functions (its
  model card); the sample's train functions are the part in the repo, so the set is their code
  summarisation pairs (function -> first docstring paragraph, one of its three objectives), kept
  only where the function's fingerprint is in the base's `pretraining_fingerprints.txt.gz` and
  the run never trains, validates or evaluates on it (with `data.skip_long_targets`, a training
  pair whose code does not fit is never trained on, and is eligible). Any other base (codet5-small
  from the hub) gets CodeT5's masked span prediction, T5's span corruption, on functions of the
  run's languages from the source's train split outside the run's examples: CodeT5 was pretrained
  on CodeSearchNet, but which rows is not published, so this is text of its pretraining
  distribution, not proven to be in it; a model built at random was pretrained on nothing and its
  numbers only show the machinery.

`loss_before` is the base's, loaded afresh before any method touches it (identical for every
method of a setup), `loss_after` the trained model's, `loss_delta` after - before: positive means
the adaptation made the model worse at the held-out text (it forgot). Losses are teacher-forced,
token-weighted mean cross-entropy (eval mode, float32) over the same tokenisation and truncation
as training (`data.max_source_length`, `data.max_target_length`, `data.eos_after_cut`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import torch

import tasks as task_registry
from benchmark import console, distributed, tracking
from benchmark.cleaning import Example, _fold
from benchmark.config import KNOWN_LANGUAGES, DataConfig, RunConfig
from benchmark.data import SAMPLE_DIR, DataError, load_hub, load_local
from benchmark.models import DEMO_MODEL, load_base
from benchmark.training import Feature, collate, encode, fitting, target_ids
from core import record as rec
from core.families import is_causal

log = logging.getLogger("adaptbench")

# The base's loss on each set (model settings, set fingerprint): a suite's methods share it.
_BASE_LOSSES: dict[tuple[str, str], float] = {}

SEED = 20260  # the held-out slices' shuffle: the same sets for every method, seed and run
PRETRAINING = "pretraining-text"
NOISE_DENSITY = 0.15  # T5's span corruption (Raffel et al., 2020), as CodeT5 pretrained with
MEAN_SPAN = 3.0
BATCH_SIZE = 32


@dataclass
class HeldOut:
    """One held-out set: its name, what it is, its examples and their features."""

    name: str
    objective: str
    examples: list[Example]
    features: list[Feature]

    def fingerprint(self) -> str:
        """sha256 of the token ids scored: equal sets give equal fingerprints."""
        digest = hashlib.sha256()
        for f in self.features:
            digest.update(repr((f.input_ids, f.labels)).encode())
        return digest.hexdigest()[:16]


def code_key(code: str) -> str:
    """A function's fingerprint (whitespace folded), as the demo base's pretraining list has it."""
    return hashlib.sha256(_fold(code).encode()).hexdigest()[:16]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, features: list[Feature], pad_id: int) -> float:
    """Token-weighted mean cross-entropy of the labels given the inputs (eval mode, teacher
    forcing): the sum of every label token's loss over the number of label tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    order = sorted(range(len(features)), key=lambda i: features[i].num_tokens)
    causal = is_causal(model)
    for start in range(0, len(order), BATCH_SIZE):
        batch = collate([features[i] for i in order[start : start + BATCH_SIZE]], pad_id, causal)
        batch.pop("num_tokens")
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"] != -100).sum())
        total += float(model(**batch).loss.double()) * n
        count += n
    model.train(was_training)
    return total / count if count else float("nan")


def log_retention(
    config: RunConfig, data: dict, adapted: Any, scope: str, trained: list[str]
) -> dict[str, float]:
    """Log `retention/<scope>/<set>/loss_before|loss_after|loss_delta` of `adapted.model` (with
    `adapted.tokenizer`), trained on the languages `trained` and logged as `scope`
    (`<task>/<lang>`), on each held-out set; the values logged ({} with
    eval.retention_examples=0, and on every process but the main)."""
    if not config.eval.retention_examples or not distributed.is_main():
        return {}
    model, tokenizer = adapted.model, adapted.tokenizer
    start = time.perf_counter()
    values: dict[str, float] = {}
    base = None  # loaded afresh, before any method touches it, when a loss is not remembered
    for held_out in held_out_sets(config, data, tokenizer, trained, is_causal(model)):
        if not held_out.features:
            log.info("retention: no %s example left outside the run's data", held_out.name)
            continue
        key = (repr(config.model), held_out.fingerprint())
        if key not in _BASE_LOSSES:
            if base is None:
                base = load_base(config.model)[0].to(next(model.parameters()).device)
            _BASE_LOSSES[key] = mean_loss(base, held_out.features, tokenizer.pad_token_id)
        before = _BASE_LOSSES[key]
        after = mean_loss(model, held_out.features, tokenizer.pad_token_id)
        for stat, value in (("loss_before", before), ("loss_after", after)):
            values[rec.retention_metric(scope, held_out.name, stat)] = value
        values[rec.retention_metric(scope, held_out.name, "loss_delta")] = after - before
        tracking.log_params(
            {
                rec.retention_examples_param(held_out.name): len(held_out.features),
                rec.retention_fingerprint_param(held_out.name): held_out.fingerprint(),
                rec.retention_objective_param(held_out.name): held_out.objective,
            }
        )
    mlflow.log_metrics(values)
    log.info("%s: retention measured in %s", scope, console.duration(time.perf_counter() - start))
    return values


def held_out_sets(
    config: RunConfig, data: dict, tokenizer, trained: list[str], causal: bool = False
) -> list[HeldOut]:
    """The held-out sets of a model trained on `trained`: `code-<lang>` for each known language
    not among them (where the source has it), then `pretraining-text` (`causal`: laid out for a
    decoder-only model)."""
    setup = (repr(config.data), repr(config.model), config.eval.retention_examples)
    setup += (tuple(config.tasks), *(d.fingerprint() for d in data.values()))
    if setup not in _USED:
        _USED[setup] = used_keys(config, data, tokenizer)
    key = (*setup, causal, *trained)
    if key not in _SETS:
        _SETS[key] = _build_sets(config, tokenizer, trained, _USED[setup], causal)
    return _SETS[key]


# A suite's methods share the sets of one setup (its settings and examples).
_USED: dict[tuple, set[str]] = {}
_SETS: dict[tuple, list[HeldOut]] = {}


def _build_sets(
    config: RunConfig, tokenizer, trained: list[str], used: set[str], causal: bool
) -> list[HeldOut]:
    size, source = config.eval.retention_examples, config.data
    lengths = (source.max_source_length, source.max_target_length, source.eos_after_cut)
    sets = []
    for language in KNOWN_LANGUAGES:
        if language in trained:
            continue
        examples = _code_examples(source, language, size, used)
        if examples is None:
            continue
        sets.append(
            HeldOut(
                f"code-{language}",
                "docstring -> code",
                examples,
                encode(examples, tokenizer, *lengths, causal=causal),
            )
        )
    if config.model.name in ("demo", str(DEMO_MODEL)):
        examples = _demo_pretraining_examples(source, size, used)
        features = _summarisation_features(examples, tokenizer, *lengths)
        sets.append(HeldOut(PRETRAINING, "code -> docstring summary", examples, features))
    elif causal:
        examples = _train_split_examples(source, config.languages, size, used)
        features = next_token_features(examples, tokenizer, source.max_target_length)
        sets.append(HeldOut(PRETRAINING, "next-token prediction of code", examples, features))
    else:
        examples = _train_split_examples(source, config.languages, size, used)
        features = span_corruption(examples, tokenizer, *lengths[:2])
        sets.append(HeldOut(PRETRAINING, "T5 span corruption of code", examples, features))
    return sets


def used_keys(config: RunConfig, data: dict, tokenizer) -> set[str]:
    """Fingerprints of every example the run trains, validates or evaluates on: each training
    task's training pairs as `_train_task` keeps them, and every validation and evaluation one."""
    keys = set()
    training_tasks = [t for t in task_registry.resolve(config.tasks) if t.trains]
    for examples in data.values():
        trained = list(examples.train)
        if config.data.skip_long_targets:
            cap = config.data.max_target_length
            kept = [fitting(examples.train, tokenizer, cap, task) for task in training_tasks]
            trained = [ex for group in kept for ex in group]
        for example in [*trained, *examples.validation, *examples.evaluation]:
            keys.add(code_key(example.code))
    return keys


_LOADED: dict[tuple, list[Example]] = {}  # a suite's methods read each slice once


def _read(data: DataConfig, language: str, split: str, size: int) -> list[Example]:
    """Up to `size` cleaned examples of one split, shuffled with `SEED` ([] for none)."""
    chosen = replace(
        data,
        train_size=size if split == "train" else 1,
        val_size=0,
        eval_size=1 if split == "train" else size,
        eval_split="test" if split == "train" else split,
        selection_seed=SEED,
    )
    key = (repr(chosen), language, split)
    if key not in _LOADED:
        try:
            if data.source == "hub":
                found = load_hub([language], chosen)
            else:
                root = SAMPLE_DIR if data.source == "sample" else Path(data.source).expanduser()
                found = load_local(root, [language], chosen, data.source)
        except DataError as err:
            log.info("retention: no %s %s examples (%s)", language, split, err)
            found = {}
        part = found.get(language)
        if part is None:
            _LOADED[key] = []
        else:
            _LOADED[key] = part.train if split == "train" else part.evaluation
    return _LOADED[key]


def _code_examples(
    data: DataConfig, language: str, size: int, used: set[str]
) -> list[Example] | None:
    """`size` docstring -> code pairs of `language` outside the run's examples, from the
    validation split, then the test split; None when the source has no such language."""
    chosen: list[Example] = []
    found_any = False
    for split in ("validation", "test"):
        examples = _read(data, language, split, size + len(used))
        found_any = found_any or bool(examples)
        chosen += [ex for ex in examples if code_key(ex.code) not in used]
    return chosen[:size] if found_any else None


def _interleaved(groups: list[list[Example]], size: int) -> list[Example]:
    """Round-robin over the groups (one a language), at most `size`."""
    out: list[Example] = []
    for row in range(max((len(g) for g in groups), default=0)):
        out += [g[row] for g in groups if row < len(g)]
    return out[:size]


def _demo_pretraining_examples(data: DataConfig, size: int, used: set[str]) -> list[Example]:
    """The sample's train functions that the demo base was pretrained on and the run does not
    use, both languages in turn."""
    with gzip.open(DEMO_MODEL / "pretraining_fingerprints.txt.gz", "rt") as fh:
        pretrained = set(fh.read().split())
    sample = replace(data, source="sample")
    groups = []
    for language in KNOWN_LANGUAGES:
        examples = _read(sample, language, "train", 10**6)
        groups.append(
            [ex for ex in examples if (k := code_key(ex.code)) in pretrained and k not in used]
        )
    return _interleaved(groups, size)


def _train_split_examples(
    data: DataConfig, languages: list[str], size: int, used: set[str]
) -> list[Example]:
    """Functions of the run's languages from the source's train split that the run does not
    use, the languages in turn."""
    groups = []
    for language in languages:
        examples = _read(data, language, "train", size + len(used))
        groups.append([ex for ex in examples if code_key(ex.code) not in used])
    return _interleaved(groups, size)


def _summarisation_features(
    examples: list[Example], tokenizer, max_source: int, max_target: int, eos_after_cut: bool
) -> list[Feature]:
    """Function (docstring removed) -> its docstring's first paragraph, truncated as training."""
    if not examples:
        return []
    sources = tokenizer([ex.code for ex in examples], max_length=max_source, truncation=True)
    labels = target_ids(tokenizer, [ex.docstring for ex in examples], max_target, eos_after_cut)
    return [Feature(s, t) for s, t in zip(sources["input_ids"], labels)]


def sentinels(tokenizer, count: int) -> list[int]:
    """T5's sentinel ids: the tokenizer's `<extra_id_N>`, else (a tokenizer without them) the
    last ids of its vocabulary, where T5 puts them."""
    ids = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(count)])
    if all(i is not None and i != tokenizer.unk_token_id for i in ids):
        return ids
    return [len(tokenizer) - 1 - i for i in range(count)]


def span_corruption(
    examples: list[Example], tokenizer, max_source: int, max_target: int
) -> list[Feature]:
    """T5's span corruption of each function's first `max_source` tokens: 15 % of them in spans
    of mean length 3, each span replaced by a sentinel in the input; the target is each sentinel
    followed by its span, then the end token (a fixed random stream per example)."""
    out = []
    for index, example in enumerate(examples):
        ids = tokenizer(example.code, max_length=max_source, truncation=True)["input_ids"]
        ids = [i for i in ids if i != tokenizer.eos_token_id]
        if len(ids) < 4:
            continue
        rng = random.Random(SEED * 1_000_003 + index)
        noise = min(max(1, round(len(ids) * NOISE_DENSITY)), len(ids) - 1)
        spans = max(1, min(round(noise / MEAN_SPAN), noise, len(ids) - noise))
        noise_lengths = _composition(noise, spans, rng)
        keep_lengths = _composition(len(ids) - noise, spans, rng)
        marks = sentinels(tokenizer, spans)
        source, target, at = [], [], 0
        for keep, drop, mark in zip(keep_lengths, noise_lengths, marks):
            source += ids[at : at + keep] + [mark]
            target += [mark] + ids[at + keep : at + keep + drop]
            at += keep + drop
        eos = tokenizer.eos_token_id
        labels = (target + [eos])[:max_target]
        out.append(Feature(source + [eos], labels))
    return out


def next_token_features(examples: list[Example], tokenizer, max_target: int) -> list[Feature]:
    """A decoder-only model's pretraining objective: each function's first `max_target` tokens
    predicted one after another from a lone start token (the end token, where the tokenizer has
    no start token), the loss on every token."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for example in examples:
        ids = tokenizer(example.code, max_length=max_target, truncation=True)["input_ids"]
        ids = [i for i in ids if i not in (start, tokenizer.eos_token_id)]
        if ids:
            out.append(Feature([start], ids))
    return out


def _composition(total: int, parts: int, rng: random.Random) -> list[int]:
    """`total` split into `parts` positive lengths at random (T5's random segmentation)."""
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]
