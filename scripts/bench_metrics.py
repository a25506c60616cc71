"""Time every reference-based metric (HumanEval aside) on N prediction/reference pairs per language.

References are real functions from the bundled CodeSearchNet-format sample
(data/sample/<language>/final/jsonl/*/*.jsonl.gz, field `code`, docstrings stripped as the
harness does; cycled to N), or synthetic code-like functions when the sample is absent.
Predictions are perturbed copies (renamed identifiers, dropped and duplicated lines, some empty),
so every metric does real work, including on invalid code. Target: all metrics, both
languages, 5,000 pairs each, within 30 s on 2 cores.

Each metric's wall time is printed beside its CPU time (this process and its children: CodeBLEU
runs in child processes), and the load average before and after: on a machine shared with
other work the wall time says as much about the others as about the metrics.

    python scripts/bench_metrics.py --pairs 5000 [--json timings.json]

`--check-against REV` times the metrics of git revision REV (from `git archive REV metrics
core`) and these in turn, `--rounds` times, each in a fresh process on the same pairs, prints
the medians of both, and fails unless every per-example value and every corpus value is the
same, to the last bit:

    python scripts/bench_metrics.py --pairs 5000 --check-against HEAD --rounds 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def cpu_seconds() -> float:
    """CPU time of this process and of its children waited for so far."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pairs(language: str, count: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """`count` (prediction, reference) pairs of `language` (see the module doc)."""
    pool = sample_references(language) or synthetic_references(language, 1000, rng)
    refs = [pool[i % len(pool)] for i in range(count)]
    return [perturb(r, rng) for r in refs], refs


def measure(count: int, seed: int) -> dict:
    """Every default metric on `count` pairs per language: wall and CPU seconds, corpus values,
    and per-example values."""
    import metrics

    rng = random.Random(seed)
    chosen = metrics.resolve(["all"])
    out: dict = {key: {m.name: {} for m in chosen} for key in ("seconds", "cpu", "values")}
    out["per_example"] = {m.name: {} for m in chosen}
    for language in LANGUAGES:
        preds, refs = pairs(language, count, rng)
        for metric in chosen:
            if not metric.supports(language):
                continue
            start, cpu = time.perf_counter(), cpu_seconds()
            result = metric.compute(preds, refs, language)
            out["seconds"][metric.name][language] = time.perf_counter() - start
            out["cpu"][metric.name][language] = cpu_seconds() - cpu
            out["values"][metric.name][language] = result.corpus
            out["per_example"][metric.name][language] = result.per_example
            if len(result.per_example) != len(preds):
                raise SystemExit(f"{metric.name}: {len(result.per_example)} per-example values")
    return out


def revision_tree(revision: str, folder: str) -> None:
    """The metrics and core packages of git `revision`, written into `folder`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "metrics", "core"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)


def measure_in_child(count: int, seed: int, metrics_root: str = "") -> dict:
    """`measure` in a fresh process, with the metrics under `metrics_root` (default: these)."""
    with tempfile.TemporaryDirectory(prefix="metrics-values-") as folder:
        out = Path(folder) / "values.json"
        command = [sys.executable, __file__, "--pairs", str(count), "--seed", str(seed)]
        if metrics_root:
            command += ["--metrics-root", metrics_root]
        subprocess.run(command + ["--values-out", str(out)], check=True, stdout=subprocess.DEVNULL)
        found = json.loads(out.read_text())
    return found


def differences(old: dict, new: dict) -> list[str]:
    """Where two `measure` results differ in a value (compared as their reprs: bit for bit)."""
    found = []
    for name, per_language in new["per_example"].items():
        for language, values in per_language.items():
            before = old["per_example"].get(name, {}).get(language)
            corpus = old["values"].get(name, {}).get(language)
            if before is None:
                found.append(f"{name} {language}: not computed at the revision")
                continue
            if repr(corpus) != repr(new["values"][name][language]):
                found.append(
                    f"{name} {language}: corpus {corpus!r} -> {new['values'][name][language]!r}"
                )
            changed = [i for i, (a, b) in enumerate(zip(before, values)) if repr(a) != repr(b)]
            if changed or len(before) != len(values):
                i = changed[0] if changed else min(len(before), len(values))
                found.append(
                    f"{name} {language}: {len(changed)} per-example values differ (first: pair {i})"
                )
    return found


def print_table(found: dict) -> None:
    seconds, cpu, values = found["seconds"], found["cpu"], found["values"]
    header = f"{'metric':16} " + " ".join(
        f"{lang[:6] + ' s':>9} {'cpu s':>6} {'value':>9}" for lang in LANGUAGES
    )
    print(f"{header} {'total s':>8} {'cpu s':>6}")
    for name in seconds:
        cells = " ".join(
            f"{seconds[name].get(lang, 0):9.2f} {cpu[name].get(lang, 0):6.2f} "
            f"{values[name].get(lang, float('nan')):9.4f}"
            for lang in LANGUAGES
        )
        print(
            f"{name:16} {cells} {sum(seconds[name].values()):8.2f} {sum(cpu[name].values()):6.2f}"
        )
    per_language = {lang: sum(s.get(lang, 0) for s in seconds.values()) for lang in LANGUAGES}
    cpu_language = {lang: sum(s.get(lang, 0) for s in cpu.values()) for lang in LANGUAGES}
    cells = " ".join(
        f"{per_language[lang]:9.2f} {cpu_language[lang]:6.2f} {'':9}" for lang in LANGUAGES
    )
    total, total_cpu = sum(per_language.values()), sum(cpu_language.values())
    print(f"{'all':16} {cells} {total:8.2f} {total_cpu:6.2f}")


def totals(found: dict) -> dict[str, dict[str, float]]:
    """Each metric's seconds and CPU seconds over both languages, and `all` of them."""
    out = {
        name: {key: sum(found[key][name].values()) for key in ("seconds", "cpu")}
        for name in found["seconds"]
    }
    out["all"] = {key: sum(v[key] for v in out.values()) for key in ("seconds", "cpu")}
    return out


def compare(revision: str, rounds: int, count: int, seed: int) -> dict:
    """`rounds` rounds, each the metrics of `revision` then these, in fresh processes on the
    same pairs; prints medians of both, and fails unless every value is the same bit for bit."""
    medians = {}
    with tempfile.TemporaryDirectory(prefix="metrics-at-") as folder:
        revision_tree(revision, folder)
        runs: dict[str, list[dict]] = {revision: [], "working tree": []}
        loads = []
        for round_index in range(rounds):
            for side, root in ((revision, folder), ("working tree", "")):
                loads.append(os.getloadavg()[0])
                runs[side].append(measure_in_child(count, seed, root))
                took = totals(runs[side][-1])["all"]
                print(
                    f"round {round_index + 1}, {side}: {took['seconds']:.1f} s, "
                    f"{took['cpu']:.1f} CPU s (load {loads[-1]:.1f})",
                    flush=True,
                )
    for side, found in runs.items():
        per_run = [totals(f) for f in found]
        medians[side] = {
            name: {
                key: statistics.median(run[name][key] for run in per_run)
                for key in ("seconds", "cpu")
            }
            for name in per_run[0]
        }
    print(f"\nmedians of {rounds} rounds, {count} pairs per language, both languages")
    print(f"{'metric':16} {'before s':>9} {'cpu s':>7} {'after s':>9} {'cpu s':>7} {'cpu x':>6}")
    before, after = medians[revision], medians["working tree"]
    for name in after:
        b, a = before.get(name, {"seconds": 0, "cpu": 0}), after[name]
        ratio = b["cpu"] / a["cpu"] if a["cpu"] else float("nan")
        print(
            f"{name:16} {b['seconds']:9.2f} {b['cpu']:7.2f} {a['seconds']:9.2f} {a['cpu']:7.2f} "
            f"{ratio:6.2f}"
        )
    print(f"load average (1 min) at each run: {', '.join(f'{x:.1f}' for x in loads)}")
    found_differences = []
    for old, new in zip(runs[revision], runs["working tree"]):
        found_differences += differences(old, new)
    if found_differences:
        raise SystemExit(f"values differ from {revision}'s:\n" + "\n".join(found_differences))
    new = runs["working tree"][0]
    count_values = sum(len(v) for per in new["per_example"].values() for v in per.values())
    print(
        f"identical to {revision} in every round: {count_values} per-example values and every "
        "corpus value, bit for bit"
    )
    return {"medians": medians, "loads": loads, "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=5000, help="pairs per language (5000)")
    parser.add_argument("--json", default="", help="also write the timings to this JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--check-against",
        default="",
        metavar="REV",
        help="time the metrics of git revision REV and these in turn, each in a fresh process on "
        "the same pairs, and fail unless every value is identical",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of --check-against (medians are printed)"
    )
    parser.add_argument("--metrics-root", default="", help=argparse.SUPPRESS)
    parser.add_argument("--values-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pairs < 1 or args.rounds < 1:
        parser.error("--pairs and --rounds must be at least 1")
    if args.metrics_root:  # a child of compare: that revision's metrics and core
        sys.path.insert(0, args.metrics_root)
    if args.check_against:
        report = compare(args.check_against, args.rounds, args.pairs, args.seed)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return
    load_before = os.getloadavg()
    found = measure(args.pairs, args.seed)
    load_after = os.getloadavg()
    if args.values_out:
        Path(args.values_out).write_text(json.dumps(found))
        return
    print(f"{args.pairs} pairs per language")
    print_table(found)
    print(
        f"load average (1, 5, 15 min) before {', '.join(f'{x:.1f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.1f}' for x in load_after)}; {os.cpu_count()} CPUs"
    )
    if args.json:
        keep = ("seconds", "cpu", "values")
        Path(args.json).write_text(
            json.dumps(
                {"pairs": args.pairs, "load_before": load_before, "load_after": load_after}
                | {key: found[key] for key in keep},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
