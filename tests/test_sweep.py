"""Sweeps: `suite --train-sizes` and `--models` make every method x seed x size x base a child run
(whichever launcher runs it), and the report keeps the sweep points apart and draws the curves."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import mlflow
import mlflow.tracking._tracking_service.utils as tracking_utils
import pytest
from mlflow.tracking import MlflowClient, fluent

from benchmark import cli, launchers
from benchmark.config import UsageError, make_config
from benchmark.suite import child_name, plan, swept_axes
from core import record as rec
from reports.compare import build_report
from tests.conftest import CODET5_CONFIG
from tests.reports.test_reports import ALL_RIGHT, HALF, _log_run
from tests.test_boundary import refused

TINY_CONFIG = f"config:{CODET5_CONFIG}"


def test_plan_makes_every_combination_of_method_seed_size_and_base():
    configs = plan("demo", ["lora", "none"], [1, 2], {}, [8, 16, 32], ["demo", TINY_CONFIG])
    found = [(c.method, c.train.seed, c.data.train_size, c.model.name) for c in configs]
    expected = itertools.product(["lora", "none"], [1, 2], [8, 16, 32], ["demo", TINY_CONFIG])
    assert found == list(expected)  # method, then seed, then size, then base
    axes = swept_axes(configs)
    assert axes == (rec.TRAIN_SIZE, rec.MODEL_NAME)
    names = [child_name(c, axes) for c in configs]
    assert names[:2] == ["lora seed 1 n=8 base=demo", "lora seed 1 n=8 base=codet5-small-config"]
    assert len(set(names)) == len(names) == 24
    # One axis swept: only its value in the name; none: the name as before.
    sizes = plan("demo", ["lora"], [42], {}, [300])
    assert [child_name(c, swept_axes(sizes, [rec.TRAIN_SIZE])) for c in sizes] == [
        "lora seed 42 n=300"
    ]
    (plain,) = plan("demo", ["lora"], [42], {})
    assert swept_axes([plain]) == () and child_name(plain) == "lora seed 42"
    assert plain.data.train_size == 1000 and plain.model.name == "demo"  # the preset's


def test_a_launched_child_rebuilds_its_sweep_point_from_its_command_line():
    """The local and Slurm launchers run `python -m benchmark <argv>`: the argv must give the
    very config the plan made, swept axes and run name included."""
    overrides = {"languages": "python", "train.epochs": "1", "method.r": "4"}
    configs = plan("demo", ["lora"], [7], overrides, [8, 32], ["demo", TINY_CONFIG])
    axes = swept_axes(configs)
    for config in configs:
        name = child_name(config, axes)
        argv = launchers.child_argv(
            config.preset,
            config.method,
            config.train.seed,
            overrides,
            {axis: getattr_axis(config, axis) for axis in axes},
            name,
        )
        args = cli.build_parser().parse_args(argv)
        rebuilt = make_config(args.method, args.preset, cli._collect_overrides(args))
        assert rebuilt == config, argv
        assert args.run_name == name


def getattr_axis(config, axis: str):
    return {rec.TRAIN_SIZE: config.data.train_size, rec.MODEL_NAME: config.model.name}[axis]


@pytest.mark.parametrize(
    "option, named",
    [
        (["--train-sizes", "8,0"], "'0' is not a whole number of at least 1"),
        (["--train-sizes", "8,-3"], "'-3' is not a whole number of at least 1"),
        (["--train-sizes", "8,many"], "'many' is not a whole number of at least 1"),
        (["--train-sizes", "1.5"], "'1.5' is not a whole number of at least 1"),
        (["--train-sizes", "8,16,8"], "names 8 twice"),
        (["--train-sizes", "8,16", "--set", "data.train_size=4"], "both set data.train_size"),
        (["--train-sizes", "8,16", "--train-size", "4"], "both set data.train_size"),
        (["--models", "demo,config:/no/such.json"], "no config file at /no/such.json"),
        (["--models", "demo,demo"], "names 'demo' twice"),
    ],
)
def test_bad_sweep_axes_are_one_line_errors_before_any_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, option, named
):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    line = refused(["suite", "--preset", "demo", "--methods", "lora", *option], capsys)
    assert named in line and line.split(":")[1].strip().startswith(option[0]), line
    assert not store.exists()  # refused before the tracking store was even opened


# ---------------------------------------------------------------- the report of a sweep


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory):
    """Synthetic runs of a sweep over sizes and bases: at n=16 on the large base lora is right
    everywhere, none half the time; at the other points both are right half the time."""
    tmp = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking_utils, "_tracking_uri", None)
        patch.setattr(fluent, "_active_experiment_id", None)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("sweep")
        points = [(8, "small", 1_000_000), (16, "small", 1_000_000), (16, "large", 8_000_000)]
        for method, (size, base, params) in itertools.product(["lora", "none"], points):
            better = method == "lora" and size == 16 and base == "large"
            run_id = _log_run(method, ALL_RIGHT if better else HALF, languages=("python",))
            with mlflow.start_run(run_id=run_id):
                # _log_run's runs train 49,152 parameters: the base is `params` large.
                total = params + 49_152
                mlflow.log_params(
                    {rec.TRAIN_SIZE: size, rec.MODEL_NAME: base, rec.TOTAL_PARAMS: total}
                )
        out = build_report(experiment="sweep", out_dir=tmp / "out", n_boot=300, tracking_uri=uri)
        yield (out / "comparison.md").read_text(), out


def test_a_sweep_keeps_each_table_to_one_point_and_draws_the_curves(sweep_store):
    report, out = sweep_store
    # The tables: one run per method (the point with the largest size, then the newest), and
    # no run of another point counted as a re-run of the same method and seed.
    assert "## generation/python\n\n2 runs, 2 methods;" in report
    assert "re-run of" not in report
    sweep = report.split("## Sweep", 1)[1].split("## Left out", 1)[0]
    assert "The method tables above are at n=16, base " in sweep
    # One column per sweep point in the values table, and one winner row per point and metric.
    header = next(line for line in sweep.splitlines() if line.startswith("| bleu: method"))
    assert header.count("n=") == 3 and "base large" in header and "base small" in header
    rows = [line for line in sweep.splitlines() if re.match(r"\| n=\d+, base \w+ \| bleu \|", line)]
    assert len(rows) == 3
    (clear,) = [line for line in rows if line.startswith("| n=16, base large |")]
    assert "| lora |" in clear and "*" in clear.split("|")[6]  # significant over none
    for line in rows:
        if line is not clear:
            assert "(tied)" in line and "p=1.000" in line
    assert "`lora` is best at n=16, base large (significantly)" in sweep
    assert (out / "sweep_generation_python.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png_width(out / "sweep_generation_python.png") > 1200  # two panels: size and base
    assert "![generation/python: quality along the sweep](sweep_generation_python.png)" in sweep


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


@pytest.mark.slow
def test_a_tiny_sweep_through_the_suite(mlflow_store: str, csn_tree: Path, tmp_path: Path, capsys):
    """Three training sizes, two methods: six child runs named by their size, and the report's
    curves and winner table."""
    settings = {
        "data.source": str(csn_tree),
        "data.val_size": "2",
        "data.eval_size": "4",
        "train.max_steps": "1",
        "train.batch_size": "8",
        "eval.max_new_tokens": "4",
        "eval.num_beams": "1",
        "eval.length_penalty": "1.0",
        "train.checkpoint_dir": "",
    }
    args = [part for k, v in settings.items() for part in ("--set", f"{k}={v}")]
    out = tmp_path / "report"
    code = cli.main(
        ["suite", "--preset", "demo", "--methods", "lora,none", "--languages", "python",
         "--train-sizes", "8,16,32", "--out", str(out), *args]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("adaptbench").experiment_id])
    (suite,) = [r for r in runs if r.data.tags.get(rec.KIND) == rec.SUITE_KIND]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == suite.info.run_id]
    found = {(r.data.tags[rec.METHOD], r.data.params[rec.TRAIN_SIZE]) for r in children}
    assert len(children) == 6 and found == set(
        itertools.product(["lora", "none"], ["8", "16", "32"])
    )
    for run in children:
        method, size = run.data.tags[rec.METHOD], run.data.params[rec.TRAIN_SIZE]
        assert run.info.run_name == f"{method} seed 42 n={size}"
        assert run.data.params[rec.train_examples_param("python")] == size
    report = (out / "comparison.md").read_text()
    assert "## generation/python\n\n2 runs, 2 methods;" in report  # the n=32 point only
    sweep = report.split("## Sweep", 1)[1].split("## Left out", 1)[0]
    winners = [line for line in sweep.splitlines() if re.match(r"\| n=\d+ \| bleu \|", line)]
    assert [line.split("|")[1].strip() for line in winners] == ["n=8", "n=16", "n=32"]
    assert png_width(out / "sweep_generation_python.png") < 1000  # one panel: only the size
    assert "](sweep_generation_python.png)" in sweep
    assert "python, bleu: " in sweep


def test_plan_refuses_a_sweep_axis_also_set(mlflow_store):
    with pytest.raises(UsageError, match="--models and model.name=tiny both set model.name"):
        plan("demo", ["lora"], [42], {"model.name": "tiny"}, models=["demo"])
