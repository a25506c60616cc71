"""Time every metric (HumanEval aside) on N prediction/reference pairs per language.

References are real functions from the bundled sample (cycled to N); predictions are perturbed
copies (renamed identifiers, dropped and duplicated lines), so every metric does real work.
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
from benchmark.data import STRIPPERS  # noqa: E402


def references(language: str, count: int) -> list[str]:
    codes = []
    for path in sorted((ROOT / "data" / "sample" / language).rglob("*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            codes += [STRIPPERS[language](json.loads(line)["code"]) for line in fh]
    return [codes[i % len(codes)] for i in range(count)]


def perturb(code: str, rng: random.Random) -> str:
    lines = code.splitlines()
    if len(lines) > 3 and rng.random() < 0.5:
        del lines[rng.randrange(1, len(lines))]
    if rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines)), lines[rng.randrange(len(lines))])
    text = "\n".join(lines)
    names = sorted(set(re.findall(r"\b[a-z_]\w{2,}\b", text)))
    for name in rng.sample(names, k=min(2, len(names))):
        text = re.sub(rf"\b{name}\b", name + "_x", text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=5000, help="pairs per language")
    parser.add_argument("--json", default="", help="also write the timings to this JSON file")
    args = parser.parse_args()
    rng = random.Random(0)
    timings: dict[str, dict[str, float]] = {}
    for language in ("python", "javascript"):
        refs = references(language, args.pairs)
        preds = [perturb(r, rng) for r in refs]
        for metric in metrics.resolve(["all"]):
            start = time.perf_counter()
            result = metric.compute(preds, refs, language)
            seconds = time.perf_counter() - start
            timings.setdefault(metric.name, {})[language] = seconds
            print(f"{metric.name:16} {language:10} {seconds:7.2f} s   value {result.corpus:.4f}")
    total = sum(sum(v.values()) for v in timings.values())
    per_language = {
        lang: sum(v[lang] for v in timings.values()) for lang in ("python", "javascript")
    }
    print(
        f"\nall metrics, {args.pairs} pairs: python {per_language['python']:.1f} s, "
        f"javascript {per_language['javascript']:.1f} s, both {total:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": args.pairs, "seconds": timings}, indent=2))


if __name__ == "__main__":
    main()
