"""Command line: `python -m benchmark run|methods|...`; every command has `--help`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from benchmark.config import KNOWN_LANGUAGES, UsageError, available_presets, parse_overrides


def _optional(kind: Callable[[str], float], what: str, minimum: float) -> Callable[[str], str]:
    """An argparse type: empty means "use the preset's value", else a validated number."""

    def check(text: str) -> str:
        if text.strip() == "":
            return ""
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return text.strip()

    return check


def _languages(text: str) -> str:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN_LANGUAGES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown language(s) {', '.join(unknown)}; known: {', '.join(KNOWN_LANGUAGES)} "
            "(comma-separated, e.g. python,javascript)"
        )
    return ",".join(names)


# Flags that MLproject passes, mapped to the setting they override.
RUN_FLAGS = {
    "epochs": ("train.epochs", _optional(int, "a positive integer", 1)),
    "batch_size": ("train.batch_size", _optional(int, "a positive integer", 1)),
    "learning_rate": ("train.learning_rate", _optional(float, "a positive number", 1e-12)),
    "seed": ("train.seed", _optional(int, "a non-negative integer", 0)),
    "train_size": ("data.train_size", _optional(int, "a positive integer", 1)),
    "eval_size": ("data.eval_size", _optional(int, "a positive integer", 1)),
}


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="demo", help=f"settings preset: {', '.join(available_presets())}"
    )
    parser.add_argument(
        "--languages",
        default="",
        type=_languages,
        help="comma-separated languages, in order (default: the preset's)",
    )
    for name, (setting, kind) in RUN_FLAGS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default="",
            type=kind,
            help=f"overrides {setting}",
        )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting: data.*, model.*, train.*, eval.*, method.<field>, "
        "languages, protocol, experiment (repeatable)",
    )
    parser.add_argument(
        "--overrides", default="", help="space-separated KEY=VALUE settings (MLproject's form)"
    )
    parser.add_argument("--experiment", default="", help="MLflow experiment (default adaptbench)")


def _collect_overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides = parse_overrides([args.overrides, *args.settings])
    if args.languages:
        overrides["languages"] = args.languages
    if args.experiment:
        overrides["experiment"] = args.experiment
    for name, (setting, _) in RUN_FLAGS.items():
        value = getattr(args, name)
        if value != "":
            overrides[setting] = value
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.config import make_config
    from benchmark.runner import run

    config = make_config(args.method, args.preset, _collect_overrides(args))
    run_id = run(config)
    print(f"run {run_id} finished: open `mlflow ui` and look in experiment {config.experiment!r}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from methods import describe

    rows = describe(args.model_config)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        counts = ""
        if row.get("trainable") is not None:
            counts = (
                f"  trainable {row['trainable']:,} of {row['total']:,} ({100 * row['share']:.2f} %)"
            )
        print(f"{row['name']}{counts}")
        for f in row["fields"]:
            print(f"    {f['name']} ({f['type']}, default {f['default']!r}): {f.get('help', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="adaptbench: fine-tune a code model with a parameter-efficient method, "
        "evaluate it and track everything in MLflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train and evaluate one method (one MLflow run)",
        description="Train and evaluate one method on each language; one MLflow run.",
        epilog="Example: python -m benchmark run --method ffn_expansion --preset demo "
        "--set train.epochs=1 --set method.expansion_dim=256",
    )
    run.add_argument("--method", default="lora", help="registered method (see `methods`)")
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    meth = sub.add_parser(
        "methods",
        help="list registered methods, their config fields and parameter counts",
        description="List registered methods and their config fields; with --model-config, "
        "count trainable parameters on a randomly initialised model of that config.",
    )
    meth.add_argument("--model-config", default=None, help="a transformers config.json")
    meth.add_argument("--json", action="store_true", help="print JSON")
    meth.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from benchmark.data import DataError
    from benchmark.training import TrainingDiverged
    from methods import WeightsMismatchError

    try:
        return args.func(args)
    except (UsageError, DataError, WeightsMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
