"""Inference cost and the merged check alone, outside a run: the measurement every run makes
(`benchmark/inference.py`) on logged models, or on methods applied untrained to a preset's base.

    python benchmarks/inference.py --tracking-uri sqlite:///mlflow.db \
        --model-uri models:/m-... --model-uri runs:/<run_id>/python_model --language python
    python benchmarks/inference.py --method lora --method ffn_expansion   # the demo base

Each model is evaluated on the preset's evaluation examples of `--language` with the preset's
decoding (`--set eval.num_beams=1` ...), merged by its method and evaluated again (the merged
scores, changed predictions and the largest logit difference), then timed against the base in
this process as a run times it (`--rounds` passes over the prompts; more rounds than a run's
one make p95 steadier). `--threads 1` on a machine shared with other work: two threads a core
both wants are many times slower than one. Prints a table and writes JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import methods  # noqa: E402
from benchmark import inference  # noqa: E402
from benchmark.config import make_config, parse_overrides  # noqa: E402
from benchmark.evaluation import evaluate  # noqa: E402
from benchmark.models import load_base  # noqa: E402
from core import record as rec  # noqa: E402


def _models(args: argparse.Namespace, tmp: Path) -> list[tuple[str, str, Any, Any, dict]]:
    """(label, method name, model, tokenizer, method options) for each model asked for."""
    from benchmark.export import bundle_of
    from benchmark.packaging import load_bundle

    found = []
    for uri in args.model_uri:
        model, tokenizer, meta = load_bundle(bundle_of(uri, tmp / str(len(found))))
        found.append((uri, meta["method"], model, tokenizer, meta["method_config"]))
    for name in args.method:
        config = make_config(name, args.preset, parse_overrides(args.set, whole=True))
        base, tokenizer, _ = load_base(config.model)
        model = methods.get_method(name, config.method_options).apply(base).eval()
        found.append((f"{name} (untrained)", name, model, tokenizer, config.method_options))
    return found


def _evaluation(config: Any, language: str) -> list:
    from benchmark import data

    load = getattr(data, "load_languages", None) or data.load_tasks  # (its name before tasks)
    return load([language], config.data)[language].evaluation


def measure_one(
    args: argparse.Namespace, label: str, method_name: str, model: Any, tokenizer: Any, options
) -> dict[str, Any]:
    overrides = parse_overrides(args.set, whole=True)
    config = make_config(method_name, args.preset, overrides)
    method = methods.get_method(method_name, options)
    examples = _evaluation(config, args.language)
    task = None
    try:
        import tasks

        task = tasks.resolve(config.tasks)[0]
    except (ImportError, AttributeError):  # before tasks: docstring -> code
        pass
    extra = {"task": task} if task is not None else {}
    result = evaluate(
        model,
        tokenizer,
        examples,
        args.language,
        config.eval,
        config.data.max_source_length,
        **extra,
    )
    merged, reason = inference.merge_copy(method, model)
    out: dict[str, Any] = {
        "model": label,
        "method": method_name,
        "scores": {name: r.corpus for name, r in result.scores.items()},
        "merge_unavailable": reason,
    }
    if merged is not None:
        out.update(
            inference.merged_scores(config, merged, model, tokenizer, examples, result, task)
        )
    base, _, _ = load_base(config.model)
    models = {rec.BASE_MODEL: base.eval(), rec.ADAPTED_MODEL: model}
    if merged is not None:
        models[rec.MERGED_MODEL] = merged
    prompts = inference.inputs(examples, task)[: config.eval.inference_prompts or 8]
    out["figures"] = inference.measure(
        models,
        tokenizer,
        prompts,
        config.data.max_source_length,
        new_tokens=config.eval.inference_new_tokens,
        batch_size=config.eval.batch_size,
        rounds=args.rounds,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out["figures"][rec.BASE_MODEL][rec.SIZE_BYTES] = inference.saved_size(base, Path(tmp) / "b")
        out["figures"][rec.ADAPTED_MODEL][rec.TRAINED_BYTES] = method.save_trained(
            model, Path(tmp) / "t.safetensors"
        )
        if merged is not None:
            out["figures"][rec.MERGED_MODEL][rec.SIZE_BYTES] = inference.saved_size(
                merged, Path(tmp) / "m"
            )
    out["memory_kind"] = inference.memory_kind(model)
    return out


def _ratio_line(row: dict[str, Any]) -> str:
    figures = row["figures"]
    base = figures[rec.BASE_MODEL]
    cells = [row["model"]]
    for which in (rec.ADAPTED_MODEL, rec.MERGED_MODEL):
        got = figures.get(which)
        for key in (rec.LATENCY_P50, rec.LATENCY_P95, rec.TOKENS_PER_S, rec.PEAK_MEMORY):
            cells.append(f"{got[key] / base[key]:.2f}x" if got else "-")
    diff = row.get(rec.merged_name(rec.MAX_LOGIT_DIFF))
    changed = row.get(rec.merged_name(rec.CHANGED_PREDICTIONS))
    cells.append("-" if diff is None else f"{diff:.1e}, {changed:.0f} changed")
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", action="append", default=[], help="a logged model")
    parser.add_argument(
        "--method", action="append", default=[], help="a method, untrained on the base"
    )
    parser.add_argument("--tracking-uri", default="", help="the store of --model-uri")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--language", default="python")
    parser.add_argument("--set", action="append", default=[], help="a setting, key=value")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the timed prompts")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if not args.model_uri and not args.method:
        args.method = ["none", "lora"]
    if args.tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptbench-inference-") as tmp:
        for label, name, model, tokenizer, options in _models(args, Path(tmp)):
            rows.append(measure_one(args, label, name, model, tokenizer, options))
            print(json.dumps(rows[-1], indent=1), flush=True)
    print(
        "model | unmerged p50 | p95 | tokens/s | memory | merged p50 | p95 | tokens/s | memory "
        "| merged: max logit diff"
    )
    for row in rows:
        print(_ratio_line(row))
    if args.out:
        machine = {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__,
        }
        Path(args.out).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
