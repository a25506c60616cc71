"""A logged model is verified when it loads: its manifest, damaged files, old bundles, a hub base
out of reach. Each test damages a copy of the demo run's downloaded Python model."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from benchmark import packaging
from tests.conftest import REPO

pytestmark = pytest.mark.slow

LOG_AGAIN = "the model must be logged again"


@pytest.fixture(scope="module")
def logged_model(demo_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo run's Python model as MLflow downloads it: MLmodel, code and the bundle."""
    # MLflow 3 finds the logged model a runs:/ URI names in the global store, whatever the
    # tracking_uri given: the demo run's store is made the global one for the download.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(demo_run["uri"])
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{demo_run['run_id']}/generation_python_model",
            dst_path=str(tmp_path_factory.mktemp("logged")),
            tracking_uri=demo_run["uri"],
        )
    finally:
        mlflow.set_tracking_uri(previous)
    return Path(local)


@pytest.fixture
def model(logged_model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(logged_model, copy)
    return copy


def bundle_of(model: Path) -> Path:
    return model / "artifacts" / "bundle"


def refusal(model: Path) -> str:
    """The message `mlflow.pyfunc.load_model` raises for `model` (it must raise)."""
    with pytest.raises(MlflowException) as err:
        mlflow.pyfunc.load_model(str(model))
    message = err.value.message
    assert "\n" not in message, message
    return message


def flip_bytes(path: Path) -> None:
    """Same size, other content: every byte of the last quarter inverted (tensor data)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) * 3 // 4, len(data)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x9f not json at all")


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "weights-truncated": ("trained.safetensors", cut_in_half, "cut or replaced"),
    "weights-zero-bytes": ("trained.safetensors", empty, "cut or replaced"),
    "weights-flipped": ("trained.safetensors", flip_bytes, "corrupted"),
    "base-flipped": ("base/model.safetensors", flip_bytes, "corrupted"),
    "tokenizer-deleted": ("tokenizer/tokenizer.json", Path.unlink, "is missing"),
    "meta-cut": ("adaptbench.json", cut_in_half, "cut or replaced"),
    "meta-garbage": ("adaptbench.json", garbage, "cut or replaced"),
    "manifest-cut": ("manifest.json", cut_in_half, "not the manifest"),
}


def test_the_manifest_lists_every_file_of_the_bundle(logged_model: Path):
    bundle = bundle_of(logged_model)
    listed = json.loads((bundle / "manifest.json").read_text())["files"]
    files = [p for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json"]
    on_disk = {p.relative_to(bundle).as_posix() for p in files}
    assert set(listed) == on_disk
    assert {"trained.safetensors", "adaptbench.json", "tokenizer/tokenizer.json"} <= on_disk
    weights = listed["trained.safetensors"]
    assert weights["size"] == (bundle / "trained.safetensors").stat().st_size
    assert len(weights["sha256"]) == 64
    assert json.loads((bundle / "adaptbench.json").read_text())["format"] == 2


def test_an_intact_copy_loads_and_predicts(model: Path):
    out = mlflow.pyfunc.load_model(str(model)).predict(pd.DataFrame({"prompt": ["Sum."]}))
    assert len(out) == 1 and isinstance(out["code"][0], str)


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_file_is_refused_by_name(model: Path, case: str):
    name, damage, problem = DAMAGE[case]
    damage(bundle_of(model) / name)
    message = refusal(model)
    assert f"file {name} " in message
    assert problem in message
    assert LOG_AGAIN in message


def test_a_file_the_manifest_does_not_list_is_refused(model: Path):
    # transformers would load a second weights file from base/ or an added_tokens.json.
    (bundle_of(model) / "base" / "pytorch_model.bin").write_bytes(b"\x00" * 64)
    message = refusal(model)
    assert "base/pytorch_model.bin" in message and "not in its manifest" in message
    assert LOG_AGAIN in message


def test_a_missing_manifest_is_refused_when_the_bundle_had_one(model: Path):
    (bundle_of(model) / "manifest.json").unlink()
    message = refusal(model)
    assert "manifest.json is missing" in message and LOG_AGAIN in message


def as_format_1(bundle: Path) -> None:
    """What write_bundle wrote before the manifest: the same files, format 1, no manifest."""
    meta = json.loads((bundle / "adaptbench.json").read_text())
    (bundle / "adaptbench.json").write_text(json.dumps({**meta, "format": 1}))
    (bundle / "manifest.json").unlink()


def test_a_bundle_from_before_the_manifest_loads_with_a_warning(
    model: Path, caplog: pytest.LogCaptureFixture
):
    as_format_1(bundle_of(model))
    with caplog.at_level(logging.WARNING, logger="benchmark.packaging"):
        loaded = mlflow.pyfunc.load_model(str(model))
    assert any("before adaptbench wrote a manifest" in r.getMessage() for r in caplog.records)
    out = loaded.predict(pd.DataFrame({"prompt": ["Sum."]}))
    assert isinstance(out["code"][0], str)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"format": 1, "method": "lo', "is not valid JSON"),
        ('["a list"]', "not the metadata adaptbench writes"),
        ('{"format": 1, "base": {"model": {}}}', "lacks method, method_config"),
    ],
    ids=["cut", "a-list", "keys-missing"],
)
def test_a_bad_meta_file_is_refused_without_a_manifest_too(
    model: Path, content: str, fragment: str
):
    bundle = bundle_of(model)
    as_format_1(bundle)
    (bundle / "adaptbench.json").write_text(content)
    message = refusal(model)
    assert "adaptbench.json" in message and fragment in message and LOG_AGAIN in message


def test_a_newer_bundle_format_is_refused(model: Path):
    bundle = bundle_of(model)
    meta = json.loads((bundle / "adaptbench.json").read_text())
    (bundle / "adaptbench.json").write_text(json.dumps({**meta, "format": 99}))
    packaging.write_manifest(bundle)
    assert "format 99" in refusal(model)


def generate(model: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m benchmark generate --model-uri <model>` in a subprocess."""
    environment = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HF_HOME")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "benchmark", "generate", "--model-uri", str(model), "Sum."],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,  # only a hang guard: a refusal comes back in seconds
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The CLI's error line; it must be the last of stderr, after no traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    return last


def test_generate_refuses_damaged_weights_in_one_line(model: Path):
    flip_bytes(bundle_of(model) / "trained.safetensors")
    line = one_line_error(generate(model))
    assert "file trained.safetensors " in line and LOG_AGAIN in line


def test_a_hub_base_out_of_reach_names_what_it_needs(model: Path, tmp_path: Path):
    # A model logged from a hub base without bundle_base: its base must come from the hub or a
    # cache. Here neither has it: offline, with an empty Hugging Face home.
    bundle = bundle_of(model)
    meta = json.loads((bundle / "adaptbench.json").read_text())
    meta["base"].update(bundled=False, source="hub", revision="0123abcd" * 5)
    meta["base"]["model"]["name"] = "adaptbench-tests/absent-t5"
    (bundle / "adaptbench.json").write_text(json.dumps(meta))
    shutil.rmtree(bundle / "base")
    packaging.write_manifest(bundle)
    empty_home = tmp_path / "hf-home"
    empty_home.mkdir()
    line = one_line_error(generate(model, HF_HUB_OFFLINE="1", HF_HOME=str(empty_home)))
    assert "adaptbench-tests/absent-t5 at revision " + "0123abcd" * 5 in line
    assert "HF_HUB_OFFLINE=1" in line and "Hugging Face cache" in line
    assert "--set bundle_base=true" in line
