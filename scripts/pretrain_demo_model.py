"""Pretrain the demo's base model: a small T5 that knows code before any method adapts it.

Data: the bundled sample's train split plus the Python standard library's functions from files
in the sample's *train* partition (files are split by a hash of their path, so no validation or
test function, nor any other function of their files, is seen). Objectives, a third each:
- code continuation: the first lines of a function (docstring removed) -> the rest;
- code summarisation: a function (docstring removed) -> its docstring's first paragraph;
- function reconstruction (denoising, as BART): the function with about half of its lines
  deleted (the signature among them half of the time) -> the whole function.
The base never sees the demo's task, docstring -> function: it reads and writes code and writes
English, and what a method adds is learning the task, as adapting codet5 to a new task does.
The same command and seed give the same weights (one thread, deterministic kernels).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark.data import STRIPPERS, first_paragraph  # noqa: E402
from benchmark.models import TINY_T5  # noqa: E402

TOKENIZER = ROOT / "benchmark" / "assets" / "demo-tokenizer"
OUT = ROOT / "benchmark" / "assets" / "demo-model"


def code_key(code: str) -> str:
    """The fingerprint of a function's code (whitespace folded), as the contamination test uses."""
    return hashlib.sha256(" ".join(code.split()).encode()).hexdigest()[:16]


def sample_rows(split: str) -> list[dict]:
    rows = []
    for path in sorted((ROOT / "data" / "sample").glob(f"*/final/jsonl/{split}/*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            rows += [json.loads(line) for line in fh]
    return rows


def corpus(include_stdlib: bool) -> list[dict]:
    """Functions for pretraining: never from a validation or test file of the sample."""
    from build_sample import python_rows, split_of

    held_out = sample_rows("valid") + sample_rows("test")
    held_out_paths = {(r["repo"], r["path"]) for r in held_out}
    held_out_keys = {code_key(STRIPPERS[r["language"]](r["code"])) for r in held_out}
    rows = sample_rows("train")
    if include_stdlib:
        rows += [r for r in python_rows() if split_of(r["path"]) == "train"]
    kept, seen = [], set()
    for row in rows:
        code = STRIPPERS[row["language"]](row["code"]).strip("\n")
        key = code_key(code)
        if (row["repo"], row["path"]) in held_out_paths or key in held_out_keys or key in seen:
            continue
        seen.add(key)
        summary = first_paragraph(row["docstring"])
        kept.append({"code": code, "summary": summary, "key": key})
    return kept


def make_pairs(rows: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    """One training pair per function: continuation, summarisation or reconstruction."""
    pairs = []
    for row in rows:
        lines = row["code"].splitlines(keepends=True)
        draw = rng.random()
        if draw < 1 / 3 and len(lines) >= 3:
            cut = rng.randint(1, max(1, len(lines) // 2))
            pairs.append(("".join(lines[:cut]), "".join(lines[cut:])))
        elif draw < 2 / 3 and len(lines) >= 3:
            first = 0 if rng.random() < 0.5 else 1  # the signature may be deleted too
            kept = lines[:first] + [line for line in lines[first:] if rng.random() < 0.5]
            pairs.append(("".join(kept), row["code"]))
        else:
            pairs.append((row["code"], row["summary"]))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stdlib", action="store_true", help="sample's train split only")
    parser.add_argument("--out", default=str(OUT), help="output folder")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(2)  # a fixed thread count fixes the reduction order: same weights
    torch.use_deterministic_algorithms(True)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    rows = corpus(include_stdlib=not args.no_stdlib)
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **TINY_T5,
    )
    model = T5ForConditionalGeneration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / (args.steps - warmup))),
    )

    def encode(texts: list[str]):
        return tokenizer(texts, max_length=128, truncation=True, padding=True, return_tensors="pt")

    model.train()
    pairs: list[tuple[str, str]] = []
    losses: list[float] = []
    for step in range(args.steps):
        if len(pairs) < args.batch_size:
            rows_epoch = rows[:]
            rng.shuffle(rows_epoch)
            pairs += make_pairs(rows_epoch, rng)
        batch, pairs = pairs[: args.batch_size], pairs[args.batch_size :]
        inputs = encode([b[0] for b in batch])
        labels = encode([b[1] for b in batch])["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            recent = sum(losses[-100:]) / 100
            elapsed = time.perf_counter() - start
            print(f"step {step + 1}/{args.steps} loss {recent:.4f} ({elapsed:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out)  # half precision: a third of the size budget
    tokenizer.save_pretrained(out)
    with gzip.GzipFile(out / "pretraining_fingerprints.txt.gz", "wb", mtime=0) as fh:
        fh.write("\n".join(sorted(r["key"] for r in rows)).encode())
    final = sum(losses[-100:]) / min(100, len(losses))
    wall = time.perf_counter() - start
    summary = {"steps": args.steps, "examples": len(rows), "final_loss": final, "wall_s": wall}
    settings = {k: v for k, v in vars(args).items() if k != "out"}  # no machine paths
    (out / "pretraining.json").write_text(json.dumps({**summary, **settings}, indent=2) + "\n")
    print(f"final loss {final:.4f} on {len(rows)} functions; wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
