"""Where a suite's child runs execute.

- `inline`: in this process, one after another (the suite's own loop).
- `local`: separate processes, `max_parallel` at a time; each gets its own GPU through
  `CUDA_VISIBLE_DEVICES` where there are GPUs, else an equal share of the CPU threads.
- `slurm`: one Slurm job per child run through submitit, with its resources from the `--slurm-*`
  options; `executor="local"` runs the very same jobs as submitit's local processes (how the
  tests run it, on a machine without Slurm).

A child is `python -m benchmark run` with the child's method, seed and the suite's settings, in
the suite run's experiment and nested under it (`ADAPTBENCH_PARENT_RUN`). Each child run records
how it was launched (`launcher.*` tags: job id, state, log). A child that fails, or whose process
dies (killed, pre-empted), is a FAILED run with its `error`, which `run --resume` continues.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from core import record as rec  # the run record's names

log = logging.getLogger("adaptbench")

LAUNCHERS = ("inline", "local", "slurm")
PARENT_ENV = "ADAPTBENCH_PARENT_RUN"  # the suite run a child run nests under
CHILD_ENV = "ADAPTBENCH_CHILD"  # the child's position in the suite, tagged on its run
CHILD_TAG = "adaptbench.child"
POLL_S = 0.5


@dataclass
class Child:
    """One child run to launch: its method, seed and the command line that runs it."""

    index: int
    method: str
    seed: int
    argv: list[str]  # arguments of `python -m benchmark`


@dataclass
class Launched:
    """What became of a child: its run (if it got one), status, error and job."""

    child: Child
    run_id: str = ""
    status: str = "FAILED"
    error: str = ""
    job: dict[str, str] = field(default_factory=dict)


@dataclass
class SlurmOptions:
    """Resources of each child's Slurm job (submitit's `slurm_*` parameters)."""

    executor: str = "slurm"  # slurm, or local: submitit's local processes, same code path
    partition: str = ""
    time_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    extra: dict[str, Any] = field(default_factory=dict)


def child_argv(
    preset: str,
    method: str,
    seed: int,
    overrides: dict[str, Any],
    axes: dict[str, Any] | None = None,
    run_name: str = "",
) -> list[str]:
    """`python -m benchmark run` arguments for one child: the suite's settings, its own seed
    and its values of the swept axes (`data.train_size`, `model.name`), under `run_name`."""
    argv = ["run", "--method", method, "--preset", preset]
    own = {"train.seed", *(axes or {})}
    for key, value in overrides.items():
        if key not in own:
            argv += ["--set", f"{key}={_text(value)}"]
    for key, value in (axes or {}).items():
        argv += ["--set", f"{key}={_text(value)}"]
    argv += ["--set", f"train.seed={seed}"]
    return argv + (["--run-name", run_name] if run_name else [])


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def child_env(suite_run: Any, index: int, slot: int, max_parallel: int) -> dict[str, str]:
    """The child's environment: this one's, in the suite run's store and experiment, nested
    under it (never `mlflow run`'s run: that is the suite's), with its share of the machine."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env.update(
        MLFLOW_TRACKING_URI=mlflow.get_tracking_uri(),
        MLFLOW_EXPERIMENT_ID=suite_run.info.experiment_id,
        **{PARENT_ENV: suite_run.info.run_id, CHILD_ENV: str(index)},
    )
    gpus = _gpu_count()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    else:
        threads = str(max(1, (os.cpu_count() or 1) // max(1, max_parallel)))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch build with CUDA: CPU shares
        return 0


def run_local(
    children: list[Child], suite_run: Any, max_parallel: int, log_dir: Path
) -> list[Launched]:
    """Each child as its own process, `max_parallel` at a time; their logs in `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(children), {}, []
    free_slots = list(range(max(1, max_parallel)))
    while pending or running:
        while pending and free_slots:
            child, slot = pending.pop(0), free_slots.pop(0)
            path = log_dir / f"{child.index:03d}-{child.method}-seed{child.seed}.log"
            with path.open("w") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "benchmark", *child.argv],
                    env=child_env(suite_run, child.index, slot, max_parallel),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            log.info("child %d (%s seed %d): pid %d, log %s", child.index, child.method,
                     child.seed, proc.pid, path)  # fmt: skip
            running[proc.pid] = (child, proc, slot, path)
        time.sleep(POLL_S)
        for pid, (child, proc, slot, path) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[pid]
            free_slots.append(slot)
            job = {"id": str(pid), "state": _exit_state(code), "log": str(path)}
            done.append(gather(child, suite_run, job, code == 0, _tail(path)))
    return sorted(done, key=lambda launched: launched.child.index)


def run_slurm(
    children: list[Child], suite_run: Any, options: SlurmOptions, log_dir: Path
) -> list[Launched]:
    """Each child as one Slurm job (or submitit's local process); waits for all of them."""
    try:
        import submitit
    except ImportError:
        from core.errors import UsageError

        raise UsageError("--launcher slurm needs submitit: pip install submitit") from None
    if options.executor == "local":
        executor = submitit.LocalExecutor(folder=str(log_dir))
        executor.update_parameters(timeout_min=options.time_min)
    else:
        executor = submitit.AutoExecutor(folder=str(log_dir), cluster="slurm")
        parameters = {
            "timeout_min": options.time_min,
            "gpus_per_node": options.gpus_per_node,
            "cpus_per_task": options.cpus_per_task,
            "mem_gb": options.mem_gb,
            "slurm_job_name": "adaptbench",
            **options.extra,
        }
        if options.partition:
            parameters["slurm_partition"] = options.partition
        executor.update_parameters(**parameters)
    jobs = []
    for child in children:
        if options.executor == "local":  # every job at once on this machine: a share each
            env = child_env(suite_run, child.index, child.index, len(children))
        else:  # Slurm gives each job its GPUs and CPUs: use what the job was given
            env = child_env(suite_run, child.index, 0, 1)
            env.pop("CUDA_VISIBLE_DEVICES", None)
            threads = str(options.cpus_per_task)
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        job = executor.submit(run_child, child.argv, env)
        log.info("child %d (%s seed %d): job %s", child.index, child.method, child.seed, job.job_id)
        jobs.append((child, job))
    done = []
    for child, job in jobs:
        try:
            code = job.result()
        except Exception as err:  # noqa: BLE001 - the job failed, was cancelled or pre-empted
            code, failure = None, " ".join(str(err).split())[-2000:]
        else:
            failure = ""
        paths = job.paths
        info = {"id": str(job.job_id), "state": str(job.state), "log": str(paths.stdout)}
        tail = failure or _tail(Path(paths.stdout)) + _tail(Path(paths.stderr))
        done.append(gather(child, suite_run, info, code == 0, tail))
    return done


def run_child(argv: list[str], env: dict[str, str]) -> int:
    """The job of one child (in its own process): the CLI's `run` in the child's environment."""
    os.environ.clear()
    os.environ.update(env)
    from benchmark.cli import main

    return main(argv)


def gather(
    child: Child, suite_run: Any, job: dict[str, str], succeeded: bool, output_tail: str
) -> Launched:
    """The child's run and outcome; a run its process left RUNNING (killed, pre-empted) is marked
    FAILED with why, so the suite and the report see it, and `--resume` can continue it."""
    client = MlflowClient()
    found = client.search_runs(
        [suite_run.info.experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{suite_run.info.run_id}' and "
            f"tags.`{CHILD_TAG}` = '{child.index}'"
        ),
    )
    launched = Launched(child, job=job)
    if not found:
        launched.error = f"the child never started a run ({job['state']}): {output_tail[-1500:]}"
        return launched
    run = found[0]
    launched.run_id = run.info.run_id
    client.set_tag(run.info.run_id, "launcher.job_id", job["id"])
    client.set_tag(run.info.run_id, "launcher.state", job["state"])
    client.set_tag(run.info.run_id, "launcher.log", job["log"])
    status = client.get_run(run.info.run_id).info.status
    if status == "RUNNING":  # its process died before it could end the run
        error = (
            f"the child's process ended ({job['state']}) before its run did: continue it with "
            f"python -m benchmark run {shlex.join(child.argv[1:])} --resume {run.info.run_id}"
        )
        client.set_tag(run.info.run_id, rec.ERROR, error)
        client.set_terminated(run.info.run_id, "FAILED")
        status = "FAILED"
    launched.status = status if succeeded or status != "FINISHED" else "FAILED"
    tags = client.get_run(run.info.run_id).data.tags
    launched.error = (
        "" if launched.status == "FINISHED" else tags.get(rec.ERROR, output_tail[-500:])
    )
    return launched


def _exit_state(code: int) -> str:
    return (
        "COMPLETED"
        if code == 0
        else (f"KILLED (signal {-code})" if code < 0 else f"FAILED ({code})")
    )


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
