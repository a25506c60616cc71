"""The README's results tables, generated from runs: never typed by hand.

--collect reads the newest finished demo suite (the suite run tagged preset=demo and its child
runs) from an MLflow store and writes docs/results/demo.json: every method's scores with the
comparison report's intervals and paired tests against the base (`none`), the runs' times,
when and on what machine they ran, and the commit. Run it on the machine that ran the suite:
the CPU it records is this machine's. --render rewrites the README's blocks between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` from the committed JSON; --check only says
whether they are current (tests/test_docs_results.py asserts it).

    python -m benchmark suite --preset demo            # or make demo
    python scripts/docs_results.py --collect --render  # or make docs-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from core import record as rec  # noqa: E402  (the run record's names)

RESULTS = REPO / "docs" / "results" / "demo.json"
README = REPO / "README.md"
METHOD_ORDER = ("none", "lora", "full_layer", "hybrid", "ffn_expansion")
# The report's bootstrap (reports.compare.build_report's defaults): the numbers here are the
# numbers of the suite's comparison.md.
N_BOOT = 1000
BOOT_SEED = 0
# The demo table: score columns (with an interval where named), then differences from the base.
TABLE_SCORES = ("bleu", "edit_similarity", "pass_rate", "codebleu")
TABLE_INTERVALS = ("bleu", "pass_rate")
TABLE_DIFFERENCES = ("bleu", "pass_rate")
TWO_DECIMALS = ("bleu", "codexglue_bleu")  # BLEU on its 0-100 scale; the others are 0-1
SIGNIFICANCE = 0.05
TASK = "generation"  # the demo table is the docstring -> function task's


class ResultsError(ValueError):
    """What the store or the README lacks, and what to do about it."""


# ---------------------------------------------------------------- collecting


def machine() -> dict[str, Any]:
    """This machine's CPU, the cores this process may use, and Python's version."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the platform's name is what there is
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": model,
        "architecture": platform.machine(),
        "cores": cores,
        "cpu_features": [f for f in ("avx512f", "avx512_bf16", "amx_tile") if f in flags],
        "python": platform.python_version(),
    }


def newest_suite(client: Any, experiment: str, preset: str) -> Any:
    """The newest finished suite run of `preset` in `experiment`."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ResultsError(
            f"no experiment {experiment!r} in this store: run `make demo` first, or pass "
            "--tracking-uri / --experiment"
        )
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(
            f"tags.`{rec.KIND}` = '{rec.SUITE_KIND}' and tags.{rec.PRESET} = '{preset}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ResultsError(
            f"no finished {preset} suite run in experiment {experiment!r}: run "
            f"`python -m benchmark suite --preset {preset}` first"
        )
    return runs[0]


def _load_tables(client: Any, records: list[Any], scope: str, tmp: Path) -> None:
    import pandas as pd

    for record in records:
        path = client.download_artifacts(
            record.run_id, rec.examples_table(*rec.split_scope(scope)), str(tmp / record.run_id)
        )
        payload = json.loads(Path(path).read_text())
        table = pd.DataFrame(payload["data"], columns=payload["columns"])
        table["id"] = table["id"].astype(str)
        record.tables[scope] = table.set_index("id", drop=False)


def _method_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def collect(tracking_uri: str, experiment: str = "adaptbench", preset: str = "demo") -> dict:
    """The demo suite's numbers, as the comparison report computes them, and where they ran."""
    from mlflow.tracking import MlflowClient

    from reports.records import choose_comparable, default_reference, load_runs
    from reports.summary import summarise

    client = MlflowClient(tracking_uri=tracking_uri)
    suite = newest_suite(client, experiment, preset)
    records = load_runs(
        client, experiment, f"tags.mlflow.parentRunId = '{suite.info.run_id}'", tracking_uri
    )
    selection = choose_comparable(records)
    if selection.left_out:
        reasons = "; ".join(f"{o.run.method}: {o.reason}" for o in selection.left_out)
        raise ResultsError(f"suite {suite.info.run_id} has runs the report leaves out: {reasons}")
    children = {r.run_id: r for runs in selection.fresh.values() for r in runs}.values()
    children = sorted(children, key=lambda r: _method_key(r.method))
    reference = default_reference(r.method for r in children)
    languages: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scope, runs in selection.fresh.items():
            task, language = rec.split_scope(scope)
            if task != TASK:
                continue
            _load_tables(client, runs, scope, Path(tmp))
            section = summarise(
                scope, runs, selection.fingerprints[scope], reference, N_BOOT, BOOT_SEED
            )
            rows = sorted(section.rows, key=lambda row: _method_key(row.method))
            languages[language] = [_method_entry(row, scope) for row in rows]
    in_order = sorted(children, key=lambda r: r.start_time)
    commits = list(
        dict.fromkeys(client.get_run(r.run_id).data.tags.get(rec.GIT_COMMIT, "") for r in in_order)
    )
    loads = [
        r.metrics[rec.metric(*rec.split_scope(scope), rec.LOAD_AVERAGE)]
        for r in children
        for scope in r.scopes
        if rec.metric(*rec.split_scope(scope), rec.LOAD_AVERAGE) in r.metrics
    ]
    start = dt.datetime.fromtimestamp(suite.info.start_time / 1000, dt.UTC)
    return {
        "preset": preset,
        "suite_run_id": suite.info.run_id,
        "measured": start.strftime("%Y-%m-%d"),
        "machine": machine()
        | {
            "torch": children[0].params.get("version.torch", "?"),
            # The 1-minute load average while the runs trained, where they logged it.
            "training_load_average": sum(loads) / len(loads) if loads else None,
        },
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "reference": reference,
        "bootstrap": {"resamples": N_BOOT, "seed": BOOT_SEED, "level": 0.95},
        "times_s": {
            "suite": (suite.info.end_time - suite.info.start_time) / 1000,
            **{r.method: r.metrics.get(rec.WALL_TIME, float("nan")) for r in children},
        },
        "languages": languages,
    }


def _method_entry(row: Any, scope: str) -> dict:
    (run,) = row.runs  # one seed per method in the demo suite
    scores, differences = {}, {}
    for metric, estimate in row.estimates.items():
        # logged: the run's corpus value (what MLflow shows); point, low, high: the report's
        # bootstrap over the examples (for a metric averaged over examples, CodeBLEU's, the
        # point is that mean, which is not its corpus value).
        scores[metric] = {
            "logged": estimate.logged,
            "point": estimate.point,
            "low": estimate.low,
            "high": estimate.high,
        }
        if estimate.test is not None:
            test = estimate.test
            differences[metric] = {
                "value": test.difference,
                "low": test.low,
                "high": test.high,
                "p_value": test.p_value,
            }
    return {
        "method": row.method,
        "run_id": run.run_id,
        "seed": run.seed,
        "examples": len(run.tables[scope]),
        "scores": scores,
        "vs_reference": differences,
    }


# ---------------------------------------------------------------- rendering


def _number(metric: str, value: float, sign: bool = False) -> str:
    digits = 2 if metric in TWO_DECIMALS else 3
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _score_cell(metric: str, score: dict) -> str:
    text = _number(metric, score["logged"])
    if metric in TABLE_INTERVALS:
        text += f" [{_number(metric, score['low'])}, {_number(metric, score['high'])}]"
    return text


def _difference_cell(metric: str, difference: dict | None) -> str:
    if difference is None:
        return ""
    star = "*" if difference["p_value"] < SIGNIFICANCE else ""
    return (
        f"{_number(metric, difference['value'], sign=True)} "
        f"[{_number(metric, difference['low'])}, {_number(metric, difference['high'])}]{star}"
    )


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _commit(results: dict) -> str:
    commit = results["git_commit"]
    commits = commit if isinstance(commit, list) else [commit]
    dirty = " with uncommitted changes" if any(c.endswith("-dirty") for c in commits) else ""
    if len(commits) > 1:  # HEAD moved while the suite ran: the runs' commits, in run order
        return f"commits {', '.join(c[:7] for c in commits)}{dirty} (HEAD moved during the suite)"
    return f"commit {commits[0][:7]}{dirty}"


def _machine_text(box: dict) -> str:
    features = ", ".join(f.replace("_", "-").upper() for f in box["cpu_features"])
    text = f"{box['cores']} cores of an {box['architecture']} {box['cpu']}"
    text += f" ({features})" if features else ""
    load = box.get("training_load_average")
    if load is not None and math.isfinite(load):
        text += f", load average {load:.1f} while training"
    return text + f", torch {box['torch']}"


def demo_table(results: dict) -> str:
    """The README's table of base and adapted scores, with when and where it was measured."""
    reference = results["reference"]
    times = results["times_s"]
    methods = [m for m in times if m not in ("suite", reference)]
    lines = [
        f"Measured {results['measured']} on {_machine_text(results['machine'])}, "
        f"{_commit(results)}: suite run `{results['suite_run_id'][:8]}`, "
        f"{_duration(times['suite'])} ("
        + (f"the {len(methods)} methods " if len(methods) > 1 else "the method ")
        + f"{_duration(sum(times[m] for m in methods))}, the base's own run "
        f"{_duration(times.get(reference, 0.0))})."
        + (f" {results['note']}" if results.get("note") else "")
        + " Generated by `make docs-results` from "
        "[`docs/results/demo.json`](docs/results/demo.json); not edited by hand.",
        "",
        "| language | model | "
        + " | ".join(TABLE_SCORES)
        + " | "
        + " | ".join(f"{m} - base" for m in TABLE_DIFFERENCES)
        + " |",
        "|---" * (2 + len(TABLE_SCORES) + len(TABLE_DIFFERENCES)) + "|",
    ]
    significant, tested, within = 0, 0, []
    for language, entries in results["languages"].items():
        for entry in entries:
            method = entry["method"]
            cells = [language, f"base (`{method}`)" if method == reference else method]
            cells += [_score_cell(m, entry["scores"][m]) for m in TABLE_SCORES]
            for metric in TABLE_DIFFERENCES:
                difference = entry["vs_reference"].get(metric)
                cells.append(_difference_cell(metric, difference))
                if difference is None:
                    continue
                tested += 1
                if difference["p_value"] < SIGNIFICANCE:
                    significant += 1
                else:
                    within.append(
                        f"{method}'s {language.capitalize()} {metric} "
                        f"({_number(metric, difference['value'], sign=True)}, "
                        f"p = {difference['p_value']:.2f})"
                    )
            lines.append("| " + " | ".join(cells) + " |")
    summary = (
        f"Paired with the base, {significant} of these {tested} differences are significant "
        f"(p < {SIGNIFICANCE})"
    )
    if within:
        summary += "; not: " + ", ".join(within)
    return "\n".join([*lines, "", summary + "."])


BLOCKS = {"demo-table": demo_table}


def _block_pattern(name: str) -> re.Pattern:
    return re.compile(
        rf"(<!-- results:{re.escape(name)} -->\n)(.*?)(\n<!-- /results:{re.escape(name)} -->)",
        re.DOTALL,
    )


def rendered_blocks(results: dict) -> dict[str, str]:
    """Block name -> the text that belongs between its markers."""
    return {name: make(results) for name, make in BLOCKS.items()}


def readme_blocks(text: str) -> dict[str, str]:
    """Block name -> the text between its markers in `text`; a missing marker is an error."""
    out = {}
    for name in BLOCKS:
        found = _block_pattern(name).search(text)
        if found is None:
            raise ResultsError(
                f"README.md lacks the markers <!-- results:{name} --> ... "
                f"<!-- /results:{name} -->, each on a line of its own"
            )
        out[name] = found.group(2)
    return out


def render(text: str, results: dict) -> str:
    """`text` with every results block rewritten from `results`."""
    readme_blocks(text)  # every marker present
    for name, block in rendered_blocks(results).items():
        text = _block_pattern(name).sub(lambda m, b=block: m.group(1) + b + m.group(3), text)
    return text


def load_results(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_results(results: dict, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collect", action="store_true", help="read the runs, write the JSON")
    parser.add_argument("--render", action="store_true", help="rewrite README.md's tables")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="store holding the suite (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser.add_argument("--experiment", default="adaptbench")
    parser.add_argument(
        "--note", default="", help="with --collect: a sentence on the measurement, shown with it"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON file")
    args = parser.parse_args(argv)
    if not (args.collect or args.render or args.check):
        parser.error("say what to do: --collect, --render and/or --check")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per downloaded table
    try:
        if args.collect:
            results = collect(args.tracking_uri, args.experiment)
            if args.note:
                results["note"] = args.note
            write_results(results, args.results)
            print(f"wrote {args.results}")
        results = load_results(args.results)
        text = README.read_text(encoding="utf-8")
        if args.render:
            README.write_text(render(text, results), encoding="utf-8")
            print("README.md: results tables rewritten")
        elif args.check and render(text, results) != text:
            print("README.md's results tables differ from docs/results/demo.json: run --render")
            return 1
    except ResultsError as err:
        print(f"docs_results: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
