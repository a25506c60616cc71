"""Command line: `python -m benchmark run|methods|...`; every command has `--help`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
import typing
from collections.abc import Callable
from pathlib import Path

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
        "languages, tasks, protocol, experiment (repeatable)",
    )
    parser.add_argument(
        "--overrides", default="", help="space-separated KEY=VALUE settings (MLproject's form)"
    )
    parser.add_argument("--experiment", default="", help="MLflow experiment (default adaptbench)")


def _collect_overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides = parse_overrides([args.overrides]) | parse_overrides(args.settings, whole=True)
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
    from benchmark.auth import preflight
    from benchmark.config import make_config
    from benchmark.distributed import is_main
    from benchmark.runner import run

    config = make_config(args.method, args.preset, _collect_overrides(args))
    # Against a tracking server: a wrong login or no write access stops here, logging nothing.
    preflight(
        config.experiment, run_id=args.resume or os.environ.get("MLFLOW_RUN_ID", ""), write=True
    )
    run_id = run(config, register_as=args.register_as, resume=args.resume, run_name=args.run_name)
    if is_main():  # launched on several processes, one table and one line
        _print_scores({run_id: config.method}, config.languages, by_language=True)
        print(
            f"run {run_id} finished: open `mlflow ui` and look in experiment "
            f"{_experiment_of(run_id, config.experiment)!r}"
        )
    return 0


def _experiment_of(run_id: str, fallback: str) -> str:
    """The experiment the run is in: `mlflow run` and --resume choose it, not the config."""
    try:
        import mlflow

        client = mlflow.tracking.MlflowClient()
        return client.get_experiment(client.get_run(run_id).info.experiment_id).name
    except Exception:  # only a message depends on it
        return fallback


def cmd_suite(args: argparse.Namespace) -> int:
    from benchmark.auth import preflight
    from benchmark.launchers import SlurmOptions
    from benchmark.suite import models_option, plan, run_suite, train_sizes_option
    from core import record as rec

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    sizes, models = train_sizes_option(args.train_sizes), models_option(args.models)
    configs = plan(args.preset, names, args.seeds, _collect_overrides(args), sizes, models)
    axes = [axis for axis, values in ((rec.TRAIN_SIZE, sizes), (rec.MODEL_NAME, models)) if values]
    preflight(configs[0].experiment, write=True)
    slurm = SlurmOptions(
        executor=args.slurm_executor,
        partition=args.slurm_partition,
        time_min=args.slurm_time,
        gpus_per_node=args.slurm_gpus,
        cpus_per_task=args.slurm_cpus,
        mem_gb=args.slurm_mem,
    )
    entries = run_suite(
        configs,
        launcher=args.launcher,
        overrides=_collect_overrides(args),
        max_parallel=args.max_parallel,
        slurm=slurm,
        axes=axes,
    )
    print()
    for entry in entries:
        detail = f"  {entry.error}" if entry.error else ""
        what = f"{entry.name:32}" if axes else f"{entry.method:16} seed {entry.seed:<6}"
        print(f"{what} {entry.status:9} {entry.run_id}{detail}")
    several = len({e.seed for e in entries}) > 1
    finished = {
        e.run_id: e.name if axes else f"{e.method} {e.seed}" if several else e.method
        for e in entries
        if e.status == "FINISHED"
    }
    _print_scores(finished, configs[0].languages, by_language=False)
    if not args.no_report:
        from reports.compare import build_report

        out = build_report(
            experiment=configs[0].experiment,
            filter_string=f"tags.preset = '{args.preset}'",
            out_dir=args.out,
            reference=args.reference,  # empty: none when it is in the report, else lora
        )
        print(f"report: {out / 'comparison.html'} (and comparison.md)")
    print(
        "MLflow UI on the same runs: mlflow ui --backend-store-uri <your store, default "
        "sqlite:///mlflow.db>, then open http://127.0.0.1:5000"
    )
    return 0 if all(e.status == "FINISHED" for e in entries) else 1


def _print_scores(runs: dict[str, str], languages: list[str], by_language: bool) -> None:
    """The scores of finished runs (`runs`: run id -> column name) as aligned tables: one
    column per task and language for one run, else one table per task and language with a
    column per run."""
    if not runs:
        return
    from mlflow.tracking import MlflowClient

    from benchmark import console
    from core import record as rec

    client = MlflowClient()
    found = {run_id: client.get_run(run_id).data for run_id in runs}
    if by_language:
        for run_id, data in found.items():
            columns = {
                scope: console.scores_of(data.params, data.metrics, scope)
                for scope in rec.scopes(data.params)
            }
            print(f"\nscores of {runs[run_id]} ({run_id}):")
            print(console.score_table(columns))
        return
    scopes = list(dict.fromkeys(s for d in found.values() for s in rec.scopes(d.params)))
    for scope in scopes:
        columns = {runs[i]: console.scores_of(d.params, d.metrics, scope) for i, d in found.items()}
        print(f"\n{scope} scores:")
        print(console.score_table(columns))
    print()


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmark.auth import preflight
    from reports.compare import build_report

    promotion = _promotion(args)
    preflight(args.experiment or "adaptbench", write=True)  # the report is logged as a run
    out = build_report(
        experiment=args.experiment or "adaptbench",
        filter_string=args.filter,
        out_dir=args.out,
        reference=args.reference,
        promote=promotion,
    )
    print(f"report: {out / 'comparison.md'} and {out / 'comparison.html'}")
    for step in promotion.steps if promotion else []:
        choice = step.choice
        print(
            f"{step.name}@{promotion.alias} -> version {step.version}"
            f"{' (registered now)' if step.registered_now else ''}: {choice.method}, run "
            f"{choice.run_id}, {choice.metric} {choice.value:.4g}"
        )
    return 0


def _promotion(args: argparse.Namespace):
    """`--promote`'s request, its alias checked; None without it (its options refused)."""
    if not args.promote:
        options = {"--promote-metric": args.promote_metric, "--register-as": args.register_as}
        for option, given in options.items():
            if given:
                raise UsageError(f"{option} is an option of --promote ALIAS: add --promote")
        return None
    import metrics
    from benchmark.model_registry import check_alias
    from reports.promote import Promotion

    check_alias(args.promote)
    if args.promote_metric:
        metrics.get_metric(args.promote_metric)  # unknown: one line naming the nearest
    return Promotion(args.promote, args.promote_metric, args.register_as)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 42,43,44, got {text!r}"
        ) from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def cmd_methods(args: argparse.Namespace) -> int:
    from methods import describe

    if args.model_config:
        _check_model_config(args.model_config)
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
        note = f"  ({row['note']})" if row.get("note") else ""
        print(f"{row['name']}{counts}{note}")
        for f in row["fields"]:
            print(f"    {f['name']} ({f['type']}, default {f['default']!r}): {f.get('help', '')}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from tasks import describe

    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if row["trains"]:
            what = f"trains: {row['input']} -> {row['target']}, serves {row['serves']}"
        else:
            what = f"evaluation only: scores the {row['model_of']} model"
        print(f"{row['name']}: {row['summary']}")
        print(f"    languages: {', '.join(row['languages'])}")
        print(f"    metrics: {', '.join(row['metrics'])}")
        print(f"    {what}")
        if row["published"]:
            print(f"    published: {row['published']}")
    return 0


def _check_model_config(path_text: str) -> None:
    """A `--model-config` that transformers can read as a config of a supported family (T5,
    llama-style, GPT-2), or a clear error naming the file and its fault."""
    path = Path(path_text)
    advice = "give a transformers config.json (e.g. tests/fixtures/codet5-small-config.json)"
    if not path.exists():
        raise UsageError(f"--model-config {path_text!r} does not exist: {advice} or its folder")
    file = path / "config.json" if path.is_dir() else path
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--model-config {str(file)!r} cannot be read ({err}): {advice}") from None
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--model-config {str(file)!r} is not valid JSON ({err.msg} at line {err.lineno}, "
            f"column {err.colno}): {advice}"
        ) from None
    if not isinstance(values, dict) or "model_type" not in values:
        raise UsageError(f"--model-config {str(file)!r} has no model_type: {advice}")
    from transformers import AutoConfig

    from core.families import family_of

    try:
        config = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(
            f"--model-config {str(file)!r}: transformers cannot read it ({_one_line(err)[:200]}): "
            f"{advice}"
        ) from None
    family_of(config, f"--model-config {str(file)!r}")


def cmd_generate(args: argparse.Namespace) -> int:
    import mlflow
    import pandas as pd

    prompts = args.prompt or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise UsageError("give at least one docstring, as an argument or one per line on stdin")
    model = mlflow.pyfunc.load_model(args.model_uri)
    asked = {
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "length_penalty": args.length_penalty,
    }
    if args.length_penalty is not None and args.num_beams == 1:
        raise UsageError(
            f"--length-penalty {args.length_penalty} only acts in beam search: drop it, or set "
            "--num-beams above 1"
        )
    params = {k: v for k, v in asked.items() if v is not None}  # the rest: the model's own
    result = model.predict(pd.DataFrame({"prompt": prompts}), params=params)
    for prompt, code in zip(prompts, result["code"]):
        if len(prompts) > 1:
            print(f"# {prompt}")
        print(code)
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    from benchmark.serving import build_app

    loopback = args.host in LOOPBACK or args.host.startswith("127.")
    if not loopback and not args.behind_proxy:
        raise UsageError(
            f"--host {args.host}: the model server has no authentication, so it listens on "
            "loopback only (127.0.0.1). Put an authenticating reverse proxy in front and pass "
            "--behind-proxy to listen elsewhere (see docs/team-server.md)"
        )
    import uvicorn

    app = build_app(args.model_uri)
    print(f"serving {args.model_uri} on http://{args.host}:{args.port}/invocations (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _flag_value(text: str) -> bool:
    """`--merged` alone, or with a value as MLproject passes it (true/false)."""
    value = text.strip().lower()
    if value in ("", "true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def cmd_export(args: argparse.Namespace) -> int:
    from benchmark.export import export

    note = export(args.model_uri, args.out, merged=args.merged, force=args.force)
    what = "a PEFT adapter folder" if note["kind"] == "peft_adapter" else "a transformers folder"
    merged = " (merged)" if note["merged"] else ""
    print(f"exported {args.model_uri} ({note['method']}) to {args.out}: {what}{merged}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m benchmark",
        description="adaptbench: fine-tune a code model with a parameter-efficient method, "
        "evaluate it and track everything in MLflow.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, third-party INFO lines too"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train and evaluate one method (one MLflow run)",
        description="Train and evaluate one method on each language; one MLflow run.",
        epilog="Example: python -m benchmark run --method ffn_expansion --preset demo "
        "--set train.epochs=1 --set method.expansion_dim=256",
    )
    run.add_argument("--method", default="lora", help="registered method (see `methods`)")
    run.add_argument(
        "--register-as",
        default="",
        metavar="NAME",
        help="register each task's model of each language in the Model Registry as "
        "NAME-<task>-<language>",
    )
    run.add_argument(
        "--resume",
        default="",
        metavar="RUN_ID",
        help="continue this killed run from its last checkpoint, in the same MLflow run (give "
        "the same method, preset and settings as when it started)",
    )
    run.add_argument(
        "--run-name", default="", help="the MLflow run's name (default: '<method> seed <seed>')"
    )
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    suite = sub.add_parser(
        "suite",
        help="run every method (or those named) as its own MLflow run, then compare",
        description="Run every registered method (or --methods) for each seed as a child run of "
        "one suite run; a failed method is recorded as a failed run and the suite goes on. "
        "Then write the comparison report.",
    )
    suite.add_argument(
        "--methods",
        default="",
        help="comma-separated methods (default: every method that needs no settings, and none, "
        "the base as it is)",
    )
    suite.add_argument("--seeds", type=_seeds, default=[42], help="comma-separated seeds")
    suite.add_argument(
        "--train-sizes",
        default="",
        metavar="N,N,...",
        help="sweep data.train_size: each method and seed trains once per size, e.g. "
        "100,300,1000 (the report draws quality against training examples)",
    )
    suite.add_argument(
        "--models",
        default="",
        metavar="NAME,NAME,...",
        help="sweep model.name: each method and seed once per base model (hub ids, local "
        "folders, demo, tiny or config:<path.json>; the report draws quality against base size)",
    )
    suite.add_argument("--out", default="reports/latest", help="report folder")
    suite.add_argument("--no-report", action="store_true", help="skip the comparison report")
    suite.add_argument(
        "--launcher",
        choices=("inline", "local", "slurm"),
        default="inline",
        help="where the child runs go: inline (this process, in turn), local (separate "
        "processes, --max-parallel at a time, a GPU or a share of the CPU threads each), slurm "
        "(one Slurm job each, through submitit)",
    )
    suite.add_argument(
        "--max-parallel", type=_positive, default=2, help="local launcher: processes at a time"
    )
    suite.add_argument(
        "--slurm-executor",
        choices=("slurm", "local"),
        default="slurm",
        help="slurm launcher: submit to Slurm, or run the same jobs as submitit's local "
        "processes (no cluster needed)",
    )
    suite.add_argument(
        "--slurm-partition", default="", help="Slurm partition (default: the site's)"
    )
    suite.add_argument("--slurm-time", type=_positive, default=240, help="minutes per job")
    suite.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per job")
    suite.add_argument("--slurm-cpus", type=_positive, default=8, help="CPUs per job")
    suite.add_argument("--slurm-mem", type=_positive, default=32, help="memory per job, GB")
    suite.add_argument(
        "--reference",
        default="",
        help="method the report tests the others against (default: none, the base as it is, "
        "when it is among the compared runs, else lora)",
    )
    _add_run_options(suite)
    suite.set_defaults(func=cmd_suite)

    compare = sub.add_parser(
        "compare",
        help="compare runs: tables with confidence intervals, plots, Markdown + HTML",
        description="Read runs from the tracking store (MLFLOW_TRACKING_URI) and write "
        "comparison.md and a self-contained comparison.html, also logged as a comparison run.",
    )
    compare.add_argument("--experiment", default="", help="experiment name (default adaptbench)")
    compare.add_argument(
        "--filter", default="", help="MLflow filter, e.g. \"tags.preset = 'demo'\""
    )
    compare.add_argument("--out", default="reports/latest", help="report folder")
    compare.add_argument(
        "--reference",
        default="",
        help="method the others are tested against (default: none, the base as it is, when it "
        "is among the compared runs, else lora)",
    )
    compare.add_argument(
        "--promote",
        default="",
        metavar="ALIAS",
        help="point ALIAS at the registered version of the best method's model of each "
        "language, tagged with the comparison run's id",
    )
    compare.add_argument(
        "--promote-metric",
        default="",
        metavar="METRIC",
        help="the metric --promote ranks by (default: the report's primary metric, bleu; its "
        "direction from the metric's higher_is_better)",
    )
    compare.add_argument(
        "--register-as",
        default="",
        metavar="NAME",
        help="with --promote: a best model that is not registered is registered as "
        "NAME-<task>-<language> (and an existing version under that name is the one promoted)",
    )
    compare.set_defaults(func=cmd_compare)

    meth = sub.add_parser(
        "methods",
        help="list registered methods, their config fields and parameter counts",
        description="List registered methods and their config fields; with --model-config, "
        "count trainable parameters on a randomly initialised model of that config.",
    )
    meth.add_argument("--model-config", default=None, help="a transformers config.json")
    meth.add_argument("--json", action="store_true", help="print JSON")
    meth.set_defaults(func=cmd_methods)

    task_list = sub.add_parser(
        "tasks",
        help="list registered tasks, their languages and metrics",
        description="List the registered tasks (pick them with --set tasks=NAME,...): the "
        "languages each covers, its default metrics, and whether it trains or scores the model "
        "another task trained.",
    )
    task_list.add_argument("--json", action="store_true", help="print JSON")
    task_list.set_defaults(func=cmd_tasks)

    gen = sub.add_parser(
        "generate",
        help="generate code from docstrings with a logged model (no server)",
        description="Load a logged model (runs:/<run_id>/<task>_<language>_model, "
        "models:/NAME/1, ...) and print the code it generates for each docstring.",
    )
    gen.add_argument("--model-uri", required=True, help="an MLflow model URI")
    gen.add_argument("prompt", nargs="*", help="docstrings (default: one per line on stdin)")
    gen.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation length cap (default: the setting the model was evaluated with)",
    )
    gen.add_argument(
        "--num-beams",
        type=int,
        help="beam search width, 1 = greedy (default: the model's evaluation setting)",
    )
    gen.add_argument(
        "--length-penalty",
        type=float,
        help="beam search only: above 1 favours longer code (default: the model's setting)",
    )
    gen.set_defaults(func=cmd_generate)

    serve = sub.add_parser(
        "serve",
        help="serve a logged model over HTTP (MLflow's scoring app, strict params)",
        description="Serve a logged model like `mlflow models serve --env-manager local` (same "
        "/invocations and /ping), from this environment, answering 400 to params the model does "
        "not take. Listens on 127.0.0.1 only unless --behind-proxy.",
        epilog="Example: .venv/bin/python -m benchmark serve -m "
        "runs:/<run_id>/generation_python_model -p 5001",
    )
    serve.add_argument("-m", "--model-uri", required=True, help="an MLflow model URI")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    serve.add_argument("-p", "--port", type=int, default=5000, help="port to listen on")
    serve.add_argument(
        "--behind-proxy",
        action="store_true",
        help="allow a non-loopback --host: an authenticating reverse proxy guards the port",
    )
    serve.set_defaults(func=cmd_serve)

    exp = sub.add_parser(
        "export",
        help="export a logged model as a plain transformers folder or a PEFT adapter folder",
        description="Write a logged model to a folder that transformers (and peft) load without "
        "adaptbench: with --merged the method folded into the base (save_pretrained); without, "
        "a PEFT-based method's adapter (adapter_config.json and its weights). Either way with "
        "the tokenizer, export.json and README.md saying where it came from.",
        epilog="Example: .venv/bin/python -m benchmark export --model-uri "
        "runs:/<run_id>/generation_python_model --out exported/lora-python --merged",
    )
    exp.add_argument("--model-uri", required=True, help="an MLflow model URI")
    exp.add_argument("--out", required=True, help="the folder to write (new or empty)")
    exp.add_argument(
        "--merged",
        nargs="?",
        const="true",
        default=False,
        type=_flag_value,
        metavar="true|false",
        help="fold the method into the base: a plain transformers model (also --merged=false)",
    )
    exp.add_argument(
        "--force", action="store_true", help="replace an earlier export in --out (only that)"
    )
    exp.set_defaults(func=cmd_export)
    return parser


class Parser(argparse.ArgumentParser):
    """argparse that remembers its last refusal, so `main` can record it on the run `mlflow run`
    opened (argparse prints it and exits on its own)."""

    last_error = ""

    def error(self, message: str) -> typing.NoReturn:
        Parser.last_error = f"{self.prog}: error: {message}"
        super().error(message)


THIRD_PARTY_QUIET = ("mlflow", "transformers", "datasets", "urllib3", "httpx", "filelock")


def _configure_logging(verbose: bool) -> None:
    from benchmark import console

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=console.LOG_FORMAT,
        datefmt=console.LOG_DATE_FORMAT,
    )
    if not verbose:
        # Third-party INFO lines, progress bars and known deprecation warnings say nothing a
        # user acts on (benchmark/console.py lists them); warnings and errors still show, and
        # -v shows everything.
        for name in THIRD_PARTY_QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
        console.quiet_third_party()


def _record_on_project_run(message: str) -> None:
    """Under `mlflow run`, leave the refusal on the run it opened (which it then marks FAILED);
    an error the runner already recorded there is kept. Only that new run is written."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        run = client.get_run(run_id)
        if run.info.status == "RUNNING" and "error" not in run.data.tags:
            client.set_tag(run_id, "error", message[:5000])
    except Exception:  # the store being unreachable is not this error's business
        logging.getLogger("adaptbench").debug("could not record the error on %s", run_id)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _loaded(module: str, name: str) -> type | None:
    """An exception class from `module` if that module is loaded (if it is not, nothing raised
    one): the error types are checked without importing torch or MLflow for a quick command."""
    found = sys.modules.get(module)
    return getattr(found, name, None) if found is not None else None


def _explain(err: Exception) -> tuple[str, int]:
    """The one line and the exit code for an error: 2 for bad input, 1 for the rest."""
    usage = [UsageError, _loaded("benchmark.data", "DataError")]
    usage += [_loaded("methods", "WeightsMismatchError"), _loaded("reports.compare", "ReportError")]
    if isinstance(err, tuple(kind for kind in usage if kind is not None)):
        return _one_line(err), 2
    mlflow_error = _loaded("mlflow.exceptions", "MlflowException")
    if mlflow_error is not None:  # a tracking server's 401/403, however deep: what to set
        from benchmark.auth import refusal_line

        refused = refusal_line(err)
        if refused is not None:
            return _one_line(refused), 2
    if mlflow_error is not None and isinstance(err, mlflow_error):
        return _one_line(err.message), 2
    diverged = _loaded("benchmark.training", "TrainingDiverged")
    if diverged is not None and isinstance(err, diverged):
        return f"training diverged: {_one_line(err)}", 1
    # A crash nobody foresaw: still one readable line.
    where = traceback.extract_tb(err.__traceback__)[-1]
    return (
        f"unexpected {type(err).__name__}: {_one_line(err)} (at {Path(where.filename).name}:"
        f"{where.lineno}; rerun with --debug for the traceback, and please report it)"
    ), 1


def main(argv: list[str] | None = None) -> int:
    """Parse, run the command, and turn every error into one line (the traceback with --debug)."""
    parser = build_parser()
    raw = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in raw  # taken wherever it stands, before or after the command
    Parser.last_error = ""
    try:
        args = parser.parse_args([a for a in raw if a != "--debug"])
    except SystemExit as done:  # --help, or a refusal argparse has printed
        if done.code == 2 and Parser.last_error:
            _record_on_project_run(Parser.last_error)
            return 2
        raise
    _configure_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    except Exception as err:
        if debug:
            raise
        message, code = _explain(err)
    print(f"error: {message}", file=sys.stderr)
    if args.command == "run":
        _record_on_project_run(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
