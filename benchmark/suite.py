"""The suite: every method (and seed) as its own MLflow run, then the comparison report.

A sweep adds axes: every training size (`--train-sizes`, `data.train_size`) and base model
(`--models`, `model.name`) of each method and seed is a child run of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

import methods
from benchmark import console, launchers, tracking
from benchmark.config import RunConfig, UsageError, make_config
from benchmark.runner import run
from core import record as rec  # the run record's names

log = logging.getLogger("adaptbench")


@dataclass
class SuiteEntry:
    method: str
    seed: int
    run_id: str
    status: str  # FINISHED or FAILED
    error: str = ""
    name: str = ""  # the run's name: '<method> seed <seed>', and the swept axes' values


def train_sizes_option(text: str) -> list[int]:
    """`--train-sizes 100,300,1000` as sizes ([] when empty: not swept); a bad one is refused."""
    sizes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            size = int(part)
        except ValueError:
            size = 0
        if size < 1:
            raise UsageError(
                f"--train-sizes {text!r}: {part!r} is not a whole number of at least 1: give "
                "training examples per language, comma-separated, e.g. --train-sizes 100,300,1000"
            )
        if size in sizes:
            raise UsageError(f"--train-sizes {text!r} names {size} twice: name each size once")
        sizes.append(size)
    return sizes


def models_option(text: str) -> list[str]:
    """`--models a,b` as base model names, as `model.name` takes them ([] when empty)."""
    names: list[str] = []
    for name in (p.strip() for p in text.split(",")):
        if not name:
            continue
        path = Path(name.removeprefix("config:")).expanduser()
        if name.startswith("config:") and not path.is_file():
            raise UsageError(
                f"--models {text!r}: no config file at {path} for {name!r}: give a "
                "transformers config.json as config:<path.json>, a local folder or a hub id"
            )
        if name in names:
            raise UsageError(f"--models {text!r} names {name!r} twice: name each model once")
        names.append(name)
    return names


def model_label(name: str) -> str:
    """A base model's short name in a run name: the hub id's, folder's or config file's."""
    tail = name.removeprefix("config:").rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".json") or name


def axis_values(config: RunConfig, axes: Sequence[str]) -> dict[str, Any]:
    """The config's values of the swept `axes` (`rec.SWEEP_AXES`), as settings."""
    values = {rec.TRAIN_SIZE: config.data.train_size, rec.MODEL_NAME: config.model.name}
    return {axis: values[axis] for axis in axes}


def child_name(config: RunConfig, axes: Sequence[str] = ()) -> str:
    """'<method> seed <seed>', then the swept axes' values: 'lora seed 42 n=300 base=demo'."""
    name = f"{config.method} seed {config.train.seed}"
    if rec.TRAIN_SIZE in axes:
        name += f" n={config.data.train_size}"
    if rec.MODEL_NAME in axes:
        name += f" base={model_label(config.model.name)}"
    return name


def swept_axes(configs: list[RunConfig], given: Sequence[str] = ()) -> tuple[str, ...]:
    """The axes `given` on the command line, and any whose value differs among `configs`."""
    return tuple(
        axis
        for axis in rec.SWEEP_AXES
        if axis in given or len({str(axis_values(c, [axis])[axis]) for c in configs}) > 1
    )


def plan(
    preset: str,
    method_names: list[str],
    seeds: list[int],
    overrides: dict[str, Any],
    train_sizes: Sequence[int] = (),
    models: Sequence[str] = (),
) -> list[RunConfig]:
    """Every (method, seed, training size, base model) config, validated before anything
    trains; empty `train_sizes` / `models`: the preset's (or the overrides') one."""
    swept = ((train_sizes, rec.TRAIN_SIZE, "--train-sizes"), (models, rec.MODEL_NAME, "--models"))
    for values, axis, option in swept:
        if values and axis in overrides:
            raise UsageError(
                f"{option} and {axis}={overrides[axis]} both set {axis}: give the values to "
                f"sweep with {option} alone"
            )
    names = method_names or [
        n for n in methods.available() if methods.method_class(n).in_default_suite
    ]
    configs = []
    method_settings = sorted(k for k in overrides if k.startswith("method."))
    for name, seed, size, model in itertools.product(
        names, seeds, list(train_sizes) or [None], list(models) or [None]
    ):
        axes = {k: v for k, v in ((rec.TRAIN_SIZE, size), (rec.MODEL_NAME, model)) if v}
        config = make_config(name, preset, {**overrides, "train.seed": seed, **axes})
        try:
            methods.get_method(name, config.method_options)  # a bad option fails now
        except UsageError as err:
            fields = {f.name for f in dataclasses.fields(methods.method_class(name).Config)}
            lacking = [k for k in method_settings if k.removeprefix("method.") not in fields]
            if not lacking:  # a bad value, not a setting the method lacks
                raise
            raise UsageError(
                f"{err}. In a suite, {', '.join(lacking)} applies to every method: "
                f"run the methods it fits on their own (--methods), not {name!r}"
            ) from err
        configs.append(config)
    return configs


class SuiteClock:
    """Where a suite stands: the child run's position, the time since the suite started and
    an estimate of the time left (the mean duration of the finished runs times those left)."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.clock = total, clock
        self.start = clock()
        self.durations: list[float] = []

    def position(self) -> str:
        return f"[{min(len(self.durations) + 1, self.total)}/{self.total}]"

    def finished(self, seconds: float) -> float:
        self.durations.append(seconds)
        return seconds

    def so_far(self) -> str:
        text = f"elapsed {console.duration(self.clock() - self.start)}"
        left = self.total - len(self.durations)
        if self.durations and left:
            mean = sum(self.durations) / len(self.durations)
            text += f", about {console.duration(mean * left)} left"
        return text


def run_suite(
    configs: list[RunConfig],
    launcher: str = "inline",
    overrides: dict[str, Any] | None = None,
    max_parallel: int = 1,
    slurm: launchers.SlurmOptions | None = None,
    axes: Sequence[str] = (),
) -> list[SuiteEntry]:
    """Run each config as a child of one suite run; a failure is recorded and the suite goes on.

    `launcher` says where the children run (`benchmark.launchers`): `inline` here, one after
    another; `local` as `max_parallel` processes at a time; `slurm` as one job each. The others
    rebuild each child's config from the suite's `overrides` and its values of the swept `axes`
    (`swept_axes`: those given, and any the configs differ in), as `plan` did."""
    first = configs[0]
    axes = swept_axes(configs, axes)
    if mlflow.active_run() is None and not os.environ.get("MLFLOW_RUN_ID"):
        tracking.set_experiment(first.experiment)
    entries: list[SuiteEntry] = []
    with mlflow.start_run(run_name=f"suite-{first.preset}") as suite_run:
        mlflow.set_tags({rec.KIND: rec.SUITE_KIND, rec.PRESET: first.preset, "launcher": launcher})
        if launcher != "inline":
            entries = _run_elsewhere(
                configs, suite_run, launcher, overrides or {}, max_parallel, slurm, axes
            )
            mlflow.log_dict([e.__dict__ for e in entries], "suite.json")
            return entries
        clock = SuiteClock(len(configs))
        for config in configs:
            name = child_name(config, axes)
            label = f"{clock.position()} {name}"
            log.info("%s: started (%s)", label, clock.so_far())
            started = time.monotonic()
            try:
                run_id = run(config, nested=True, run_name=name)
                entries.append(
                    SuiteEntry(config.method, config.train.seed, run_id, "FINISHED", name=name)
                )
            except Exception as err:  # noqa: BLE001 - one method's failure must not stop the rest
                run_id = getattr(err, "mlflow_run_id", "")
                message = f"{type(err).__name__}: {err}"
                entries.append(
                    SuiteEntry(config.method, config.train.seed, run_id, "FAILED", message, name)
                )
            took = clock.finished(time.monotonic() - started)
            entry = entries[-1]
            if entry.status == "FINISHED":
                log.info("%s: FINISHED in %s (%s)", label, console.duration(took), clock.so_far())
            else:
                log.error(
                    "%s: FAILED after %s (%s): %s",
                    label,
                    console.duration(took),
                    clock.so_far(),
                    entry.error,
                )
        mlflow.log_dict([e.__dict__ for e in entries], "suite.json")
    return entries


def _run_elsewhere(
    configs: list[RunConfig],
    suite_run: Any,
    launcher: str,
    overrides: dict[str, Any],
    max_parallel: int,
    slurm: launchers.SlurmOptions | None,
    axes: Sequence[str],
) -> list[SuiteEntry]:
    """The children as processes or jobs; the suite run records which failed, and their logs."""
    names = [child_name(config, axes) for config in configs]
    children = [
        launchers.Child(
            index=i,
            method=config.method,
            seed=config.train.seed,
            argv=launchers.child_argv(
                config.preset,
                config.method,
                config.train.seed,
                overrides,
                axis_values(config, axes),
                names[i] if axes else "",
            ),
        )
        for i, config in enumerate(configs)
    ]
    folder = Path(configs[0].train.checkpoint_dir or "checkpoints").resolve()
    root = folder / suite_run.info.run_id / "logs"  # recorded on each child run: absolute
    log.info(
        "suite: %d child runs through the %s launcher, logs in %s", len(children), launcher, root
    )
    started = time.monotonic()
    if launcher == "local":
        done = launchers.run_local(children, suite_run, max_parallel, root)
    else:
        done = launchers.run_slurm(children, suite_run, slurm or launchers.SlurmOptions(), root)
    entries = []
    for item in done:
        name = names[item.child.index]
        entries.append(
            SuiteEntry(
                item.child.method, item.child.seed, item.run_id, item.status, item.error, name
            )
        )
        level = logging.INFO if item.status == "FINISHED" else logging.ERROR
        log.log(
            level,
            "[%d/%d] %s: %s (job %s, log %s)%s",
            item.child.index + 1,
            len(children),
            name,
            item.status,
            item.job.get("id", "?"),
            item.job.get("log", "?"),
            f": {item.error}" if item.error else "",
        )
    failed = [e.run_id or e.method for e in entries if e.status != "FINISHED"]
    mlflow.set_tag("failed_children", ",".join(failed)[:5000])
    log.info("suite: all children done in %s", console.duration(time.monotonic() - started))
    return entries
