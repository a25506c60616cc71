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
The same command and seed give the same weights (a fixed thread count, deterministic kernels).

Off by default, for trying other bases (the committed weights use none of them; what they gave
is in the model card): `--site-per-package N` adds up to N documented functions of each installed
third-party package (vendored copies and tests skipped; exact or near copies of a validation or
test function dropped), `--task-share S` trains that share of them as docstring -> function (the
demo's task, out of its domain, as CodeT5's NL -> PL pretraining), `--no-eos-after-cut` leaves
the end token off cut targets as the harness does, `--d-model` and `--layers` build a wider or
deeper T5 of the same family.

`--family llama` pretrains the causal demo base (`benchmark/assets/demo-causal-model`, `model.name=
demo-causal`): a Llama-style decoder-only model of core.families' tiny shape, on the same data and
objectives, each pair laid out as the harness trains a causal model (benchmark.training.collate
with causal=True): the prompt, ending with the end token, then the target, the loss on the target
only. The T5 path (the default) is unchanged: same data, order, RNG use and weights.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import sys
import sysconfig
import time
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark.data import STRIPPERS, first_paragraph  # noqa: E402
from benchmark.models import TINY_T5  # noqa: E402
from benchmark.training import Feature, collate, source_ids, target_ids  # noqa: E402
from core import families  # noqa: E402

TOKENIZER = ROOT / "benchmark" / "assets" / "demo-tokenizer"
OUT = ROOT / "benchmark" / "assets" / "demo-model"
CAUSAL_OUT = ROOT / "benchmark" / "assets" / "demo-causal-model"
# core.families' tiny Llama-style shape, without its model type (the config class says it).
TINY_LLAMA = {k: v for k, v in families.LLAMA.tiny.items() if k != "model_type"}
# The causal base is deeper than the T5's 2+2 layers: 4 decoder layers bring it near the T5
# demo's parameter count (1.75M against 1.94M; the 8,000-token embedding is most of both).
CAUSAL_LAYERS = 4
# Vendored or back-ported copies of other code (the standard library among them), and tests.
SITE_SKIP = {
    "tests",
    "test",
    "testing",
    "_vendor",
    "vendor",
    "vendored",
    "_distutils",
    "pip",
    "setuptools",
    "pkg_resources",
    "_pytest",
    "__pycache__",
}


def code_key(code: str) -> str:
    """The fingerprint of a function's code (whitespace folded), as the contamination test uses."""
    return hashlib.sha256(" ".join(code.split()).encode()).hexdigest()[:16]


def sample_rows(split: str) -> list[dict]:
    rows = []
    for path in sorted((ROOT / "data" / "sample").glob(f"*/final/jsonl/{split}/*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            rows += [json.loads(line) for line in fh]
    return rows


def site_packages_rows(site: Path, per_package: int, seed: int) -> list[dict]:
    """Documented functions of the packages installed in `site` (pinned by constraints.txt), at
    most `per_package` from each top-level package; vendored copies of other code are skipped."""
    from build_sample import documented_functions

    by_package: dict[str, list[dict]] = {}
    for path in sorted(site.rglob("*.py")):
        rel = path.relative_to(site)
        if SITE_SKIP & set(rel.parts) or rel.parts[0] in SITE_SKIP or len(rel.parts) < 2:
            continue
        try:
            found = list(documented_functions(path.read_text(encoding="utf-8"), str(rel)))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for _node, qualname, doc, code in found:
            row = {
                "repo": f"site-packages/{rel.parts[0]}",
                "path": str(rel),
                "code": code,
                "docstring": doc,
                "language": "python",
                "func_name": qualname,
            }
            by_package.setdefault(rel.parts[0], []).append(row)
    rng = random.Random(seed)
    rows = []
    for package in sorted(by_package):
        found = by_package[package]
        rows += found if len(found) <= per_package else rng.sample(found, per_package)
    return rows


def tokens(code: str) -> set[str]:
    from build_sample import TOKEN

    return set(TOKEN.findall(code))


def corpus(include_stdlib: bool, site: Path, site_per_package: int, seed: int) -> list[dict]:
    """Functions for pretraining: never from a validation or test file of the sample, nor an
    exact or near copy (same name, 50 % of the tokens shared) of a validation or test function."""
    from build_sample import python_rows, split_of

    held_out = sample_rows("valid") + sample_rows("test")
    held_out_paths = {(r["repo"], r["path"]) for r in held_out}
    held_out_keys = {code_key(STRIPPERS[r["language"]](r["code"])) for r in held_out}
    held_out_by_name: dict[str, list[set[str]]] = {}
    for r in held_out:
        held_out_by_name.setdefault(r["func_name"].rsplit(".", 1)[-1], []).append(tokens(r["code"]))
    rows = [dict(r, origin="sample") for r in sample_rows("train")]
    if include_stdlib:
        rows += [dict(r, origin="stdlib") for r in python_rows() if split_of(r["path"]) == "train"]
    if site_per_package:
        rows += [dict(r, origin="site") for r in site_packages_rows(site, site_per_package, seed)]
    kept, seen = [], set()
    for row in rows:
        code = STRIPPERS[row["language"]](row["code"]).strip("\n")
        key = code_key(code)
        if (row["repo"], row["path"]) in held_out_paths or key in held_out_keys or key in seen:
            continue
        if row["origin"] == "site":
            mine = tokens(row["code"])
            near = held_out_by_name.get(row["func_name"].rsplit(".", 1)[-1], [])
            if any(len(mine & other) >= 0.5 * len(mine | other) for other in near):
                continue
        seen.add(key)
        summary = first_paragraph(row["docstring"])
        kept.append({"code": code, "summary": summary, "key": key, "origin": row["origin"]})
    return kept


def make_pairs(rows: list[dict], rng: random.Random, task_share: float) -> list[tuple[str, str]]:
    """One training pair per function: continuation, summarisation or reconstruction; for a
    third-party function, docstring -> function `task_share` of the time."""
    pairs = []
    for row in rows:
        lines = row["code"].splitlines(keepends=True)
        if row["origin"] == "site" and rng.random() < task_share:
            pairs.append((row["summary"], row["code"]))
            continue
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


def encode_labels(
    tokenizer, texts: list[str], max_length: int = 128, eos_after_cut: bool = True
) -> torch.Tensor:
    """Targets of at most `max_length` tokens, -100 after their end. With `eos_after_cut` false a
    cut target gets no end token, as in the harness's training data (ending a cut function
    teaches stopping mid-function); the committed weights were trained with it true."""
    ids = target_ids(tokenizer, texts, max_length, eos_after_cut)
    labels = torch.full((len(ids), max(map(len, ids))), -100)
    for row, x in enumerate(ids):
        labels[row, : len(x)] = torch.tensor(x)
    return labels


def architecture(d_model: int, layers: int) -> dict:
    """TINY_T5 at another width and depth: heads of the same size, the FFN 4x the width."""
    return {
        **TINY_T5,
        "d_model": d_model,
        "d_ff": 4 * d_model,
        "num_heads": d_model // TINY_T5["d_kv"],
        "num_layers": layers,
        "num_decoder_layers": layers,
    }


def llama_architecture(d_model: int, layers: int) -> dict:
    """TINY_LLAMA at another width and depth: heads of 32, half as many key/value heads, the
    gated MLP 8/3 the width rounded up to a multiple of 8 (344 at 128, as the tiny config)."""
    heads = d_model // TINY_T5["d_kv"]
    return {
        **TINY_LLAMA,
        "hidden_size": d_model,
        "intermediate_size": -(-8 * d_model // 3 // 8) * 8,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
    }


def causal_batch(
    tokenizer, pairs: list[tuple[str, str]], max_length: int = 128, eos_after_cut: bool = True
) -> dict[str, torch.Tensor]:
    """A decoder-only batch exactly as the harness trains one: each prompt (at most `max_length`
    tokens, ending with the end token) then its target (at most `max_length`, cut as
    `encode_labels` cuts), right-padded, labels -100 on the prompt and the padding."""
    prompts = source_ids(tokenizer, [p for p, _ in pairs], max_length, causal=True)
    targets = target_ids(tokenizer, [t for _, t in pairs], max_length, eos_after_cut)
    batch = collate([Feature(p, t) for p, t in zip(prompts, targets)], tokenizer.pad_token_id, True)
    batch.pop("num_tokens")
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2400, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stdlib", action="store_true", help="sample's train split only")
    parser.add_argument(
        "--site-per-package",
        type=int,
        default=0,
        help="add at most this many functions of each installed third-party package (0: none)",
    )
    parser.add_argument(
        "--task-share",
        type=float,
        default=0.0,
        help="share of third-party functions trained as docstring -> function",
    )
    parser.add_argument(
        "--site-dir",
        default=sysconfig.get_paths()["purelib"],
        help="where the third-party packages are (default: this interpreter's site-packages)",
    )
    parser.add_argument(
        "--eos-after-cut",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end a target cut at 128 tokens with the end token (the committed weights do)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (fixes the weights)")
    parser.add_argument(
        "--family",
        choices=("t5", "llama"),
        default="t5",
        help="t5: the demo's encoder-decoder base; llama: the causal demo base (decoder-only)",
    )
    parser.add_argument(
        "--d-model",
        type=int,
        default=TINY_T5["d_model"],
        help="model width; heads of 32 and an FFN 4x as wide follow it",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help=f"T5: encoder and decoder layers each (default {TINY_T5['num_layers']}); llama: "
        f"decoder layers (default {CAUSAL_LAYERS})",
    )
    parser.add_argument(
        "--out", default=None, help=f"output folder (default {OUT.name} or {CAUSAL_OUT.name})"
    )
    args = parser.parse_args()
    causal = args.family == "llama"
    if args.layers is None:
        args.layers = CAUSAL_LAYERS if causal else TINY_T5["num_layers"]
    if args.out is None:
        args.out = str(CAUSAL_OUT if causal else OUT)
    if not 0.0 <= args.task_share <= 1.0:
        parser.error(f"--task-share is a share of functions, from 0 to 1; got {args.task_share}")
    if args.site_per_package < 0 or args.threads < 1 or args.steps < 1 or args.layers < 1:
        parser.error("--site-per-package must be >= 0, --threads, --steps and --layers >= 1")
    if args.d_model < TINY_T5["d_kv"] or args.d_model % TINY_T5["d_kv"]:
        parser.error(f"--d-model must be a multiple of the head size {TINY_T5['d_kv']}")
    if args.site_per_package and not Path(args.site_dir).is_dir():
        parser.error(f"--site-dir {args.site_dir} is not a folder: point it at a site-packages")
    start = time.perf_counter()
    # A fixed thread count fixes the reduction order: same weights.
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    rows = corpus(not args.no_stdlib, Path(args.site_dir), args.site_per_package, args.seed)
    print(f"{len(rows)} functions", flush=True)
    if causal:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **llama_architecture(args.d_model, args.layers),
        )
        model = LlamaForCausalLM(config)
    else:
        config = T5Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            **architecture(args.d_model, args.layers),
        )
        model = T5ForConditionalGeneration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (args.steps - s) / max(1, args.steps - warmup))),
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
            pairs += make_pairs(rows_epoch, rng, args.task_share)
        batch, pairs = pairs[: args.batch_size], pairs[args.batch_size :]
        if causal:
            loss = model(**causal_batch(tokenizer, batch, eos_after_cut=args.eos_after_cut)).loss
        else:
            inputs = encode([b[0] for b in batch])
            labels = encode_labels(
                tokenizer, [b[1] for b in batch], eos_after_cut=args.eos_after_cut
            )
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
    origins = {o: sum(r["origin"] == o for r in rows) for o in ("sample", "stdlib", "site")}
    summary = {
        "steps": args.steps,
        "examples": len(rows),
        "examples_by_origin": origins,
        "final_loss": final,
        "wall_s": wall,
    }
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "site_dir")}  # no paths
    (out / "pretraining.json").write_text(json.dumps({**summary, **settings}, indent=2) + "\n")
    print(f"final loss {final:.4f} on {len(rows)} functions; wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
