"""Time every reference-based metric (HumanEval aside) on N prediction/reference pairs per language.

References are real functions from the bundled CodeSearchNet-format sample
(data/sample/<language>/final/jsonl/*/*.jsonl.gz, field `code`, docstrings stripped as the
harness does; cycled to N), or synthetic code-like functions when the sample is absent.
Predictions are perturbed copies (renamed identifiers, dropped and duplicated lines, some empty),
so every metric does real work, including on invalid code. Target: all metrics, both
languages, 5,000 pairs each, within 60 s on 2 cores.

    python scripts/bench_metrics.py --pairs 5000 [--json timings.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import metrics  # noqa: E402

LANGUAGES = ("python", "javascript")


def sample_references(language: str) -> list[str]:
    from benchmark.data import STRIPPERS

    codes = []
    for path in sorted((ROOT / "data" / "sample" / language).glob("final/jsonl/*/*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            codes += [STRIPPERS[language](json.loads(line)["code"]) for line in fh if line.strip()]
    return codes


def synthetic_references(language: str, count: int, rng: random.Random) -> list[str]:
    """Code-like functions for when the sample data is not there."""
    names = ["items", "value", "total", "index", "result", "config", "node", "key", "count"]
    out = []
    for i in range(count):
        a, b, c = rng.sample(names, 3)
        if language == "python":
            out.append(
                f"def func_{i}({a}, {b}=None):\n    {c} = []\n    for x in {a}:\n"
                f"        if x > {rng.randint(0, 9)}:\n            {c}.append(x * {b})\n"
                f"    return {c}\n"
            )
        else:
            out.append(
                f"function func{i}({a}, {b}) {{\n  var {c} = [];\n"
                f"  for (var i = 0; i < {a}.length; i++) {{\n"
                f"    if ({a}[i] > {rng.randint(0, 9)}) {{ {c}.push({a}[i] * {b}); }}\n"
                f"  }}\n  return {c};\n}}"
            )
    return out


def perturb(code: str, rng: random.Random) -> str:
    if rng.random() < 0.02:
        return ""  # a model that produced nothing
    lines = code.splitlines()
    if len(lines) > 3 and rng.random() < 0.5:
        del lines[rng.randrange(1, len(lines))]
    if lines and rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines)), lines[rng.randrange(len(lines))])
    text = "\n".join(lines)
    names = sorted(set(re.findall(r"\b[a-z_]\w{2,}\b", text)))
    for name in rng.sample(names, k=min(2, len(names))):
        text = re.sub(rf"\b{name}\b", name + "_x", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5000, help="pairs per language (5000)")
    parser.add_argument("--json", default="", help="also write the timings to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    rng = random.Random(args.seed)
    chosen = metrics.resolve(["all"])
    seconds: dict[str, dict[str, float]] = {m.name: {} for m in chosen}
    values: dict[str, dict[str, float]] = {m.name: {} for m in chosen}
    for language in LANGUAGES:
        pool = sample_references(language) or synthetic_references(language, 1000, rng)
        refs = [pool[i % len(pool)] for i in range(args.pairs)]
        preds = [perturb(r, rng) for r in refs]
        for metric in chosen:
            if not metric.supports(language):
                continue
            start = time.perf_counter()
            result = metric.compute(preds, refs, language)
            seconds[metric.name][language] = time.perf_counter() - start
            values[metric.name][language] = result.corpus
            if len(result.per_example) != len(preds):
                raise SystemExit(f"{metric.name}: {len(result.per_example)} per-example values")

    header = f"{'metric':16} " + " ".join(f"{lang + ' s':>12} {'value':>9}" for lang in LANGUAGES)
    print(f"{args.pairs} pairs per language\n{header} {'total s':>9}")
    for name in seconds:
        cells = " ".join(
            f"{seconds[name].get(lang, 0):12.2f} {values[name].get(lang, float('nan')):9.4f}"
            for lang in LANGUAGES
        )
        print(f"{name:16} {cells} {sum(seconds[name].values()):9.2f}")
    per_language = {lang: sum(s.get(lang, 0) for s in seconds.values()) for lang in LANGUAGES}
    total = sum(per_language.values())
    cells = " ".join(f"{per_language[lang]:12.2f} {'':9}" for lang in LANGUAGES)
    print(f"{'all':16} {cells} {total:9.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"pairs": args.pairs, "seconds": seconds, "values": values}, indent=2)
        )


if __name__ == "__main__":
    main()
