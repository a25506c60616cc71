"""`benchmark export`: a logged model as a folder that transformers (and peft) load with no
adaptbench. Each method is trained for a few steps on Python and logged once (lazily, per
method); each export is loaded in a fresh interpreter that cannot import adaptbench, and its
greedy output and logits are compared with the served, unmerged model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from benchmark import cli
from benchmark.export import export
from tests.conftest import REPO, SMALL_RUN, write_csn_tree
from tests.test_boundary import refused

pytestmark = pytest.mark.slow

IA3 = '{"peft_type": "IA3", "target_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"]}'
PROMPT_TUNING = '{"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4}'
CASES = {
    "lora": ("lora", {}),
    "full_layer": ("full_layer", {}),
    "hybrid": ("hybrid", {}),
    "ffn_expansion": ("ffn_expansion", {}),
    "none": ("none", {}),
    "peft-ia3": ("peft", {"method.config_json": IA3}),
    "peft-prompt-tuning": ("peft", {"method.config_json": PROMPT_TUNING}),
}
MERGEABLE = ["lora", "full_layer", "hybrid", "ffn_expansion", "none", "peft-ia3"]
PROMPTS = [
    "Return the sum of the first 3 squares of the values.",
    "Multiply every element of the array by 4 and return the result.",
    "Read a JSON file and return its content as a dictionary.",
]
NEW_TOKENS = 16

# Run in a fresh interpreter, cwd elsewhere, PYTHONPATH cleared: adaptbench's packages cannot be
# imported at all (they are installed in this venv), so only transformers and peft can load it.
LOAD_ALONE = """
import json, sys

ADAPTBENCH = {"benchmark", "methods", "metrics", "core", "reports", "tests"}


class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ADAPTBENCH:
            raise ImportError(f"{name} is adaptbench's: the export must not need it")
        return None


sys.meta_path.insert(0, Refuse())
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

folder, prompts, new_tokens, tensors = sys.argv[1:5]
prompts, new_tokens = json.loads(prompts), int(new_tokens)
note = json.load(open(f"{folder}/export.json"))
if note["kind"] == "peft_adapter":
    from peft import PeftModel

    config = json.load(open(f"{folder}/adapter_config.json"))
    base = AutoModelForSeq2SeqLM.from_pretrained(config["base_model_name_or_path"])
    model = PeftModel.from_pretrained(base, folder)
else:
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
model.eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
batch = tokenizer(prompts, truncation=True, max_length=note["max_source_length"], padding=True,
                  return_tensors="pt")
with torch.no_grad():
    tokens = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=new_tokens)
    logits = model(**batch, decoder_input_ids=tokens).logits
torch.save({"tokens": tokens, "logits": logits}, tensors)
loaded = sorted({m.split(".")[0] for m in sys.modules} & ADAPTBENCH)
print(json.dumps({
    "class": type(model).__name__,
    "dtype": str(next(model.parameters()).dtype),
    "codes": tokenizer.batch_decode(tokens, skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False),
    "adaptbench_modules": loaded,
}))
"""


class LoggedModels:
    """One small Python run per method case, trained the first time a test asks for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tree = write_csn_tree(root / "csn", languages=("python",))
        self.uris: dict[str, str] = {}

    def uri(self, case: str) -> str:
        if case not in self.uris:
            from benchmark.config import make_config
            from benchmark.runner import run

            method, extra = CASES[case]
            settings = {**SMALL_RUN, "data.source": str(self.tree), "languages": "python"}
            settings.update({"data.eval_size": "2", **extra})
            cwd = os.getcwd()
            os.chdir(self.root)
            try:
                run_id = run(make_config(method, "demo", settings))
            finally:
                os.chdir(cwd)
            self.uris[case] = f"runs:/{run_id}/generation_python_model"
        return self.uris[case]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("export_runs")
    store = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store
    mlflow.set_tracking_uri(store)
    models = LoggedModels(root)
    models.store = store
    yield models
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def load_alone(folder: Path, elsewhere: Path) -> tuple[dict, dict]:
    """(what the plain interpreter printed, its tensors) for the exported `folder`."""
    tensors = elsewhere / "plain.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_ALONE, str(folder), json.dumps(PROMPTS), str(NEW_TOKENS)]
        + [str(tensors)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["adaptbench_modules"] == []
    return printed, torch.load(tensors)


def served(uri: str) -> tuple[list[str], mlflow.pyfunc.PyFuncModel]:
    """The served model's greedy answers to PROMPTS, and the loaded model."""
    model = mlflow.pyfunc.load_model(uri)
    answer = model.predict(
        pd.DataFrame({"prompt": PROMPTS}), params={"num_beams": 1, "max_new_tokens": NEW_TOKENS}
    )
    return answer["code"].tolist(), model


def unmerged_logits(model: mlflow.pyfunc.PyFuncModel, tokens: torch.Tensor) -> torch.Tensor:
    inner = model.unwrap_python_model()
    batch = inner.tokenizer(
        PROMPTS,
        truncation=True,
        max_length=inner.meta["max_source_length"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return inner.model(**batch, decoder_input_ids=tokens).logits


def base_logits(tokens: torch.Tensor, max_length: int) -> torch.Tensor:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from benchmark.models import DEMO_MODEL

    base = AutoModelForSeq2SeqLM.from_pretrained(DEMO_MODEL, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL)
    batch = tokenizer(
        PROMPTS, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        return base(**batch, decoder_input_ids=tokens).logits


@pytest.mark.parametrize("case", MERGEABLE)
def test_merged_export_loads_with_transformers_alone_and_generates_as_served(
    case: str, logged: LoggedModels, tmp_path: Path
):
    uri = logged.uri(case)
    out = tmp_path / "exported"
    note = export(uri, out, merged=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plain, tensors = load_alone(out, elsewhere)
    assert plain["class"] == "T5ForConditionalGeneration" and plain["dtype"] == "torch.float32"
    expected, model = served(uri)
    assert plain["codes"] == expected
    # Folding the method in reorders float sums: the logits agree to fp32 rounding.
    difference = (unmerged_logits(model, tensors["tokens"]) - tensors["logits"]).abs().max()
    assert difference.item() < 1e-4
    if case != "none":  # and they are the trained model's, not the base's
        length = note["max_source_length"]
        base = (base_logits(tensors["tokens"], length) - tensors["logits"]).abs().max()
        assert base.item() > 1e-3
    assert {"config.json", "model.safetensors", "tokenizer.json", "export.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    recorded = json.loads((out / "export.json").read_text())
    assert recorded == note
    assert recorded["source_model_uri"] == uri and recorded["method"] == CASES[case][0]
    assert recorded["kind"] == "transformers" and recorded["merged"] is (case != "none")
    assert recorded["base"]["name"] == "demo"
    readme = (out / "README.md").read_text()
    assert uri in readme and "AutoModelForSeq2SeqLM.from_pretrained" in readme
    # The folder decodes as the model was served unless told otherwise.
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["num_beams"] == model.unwrap_python_model().meta["generation"]["num_beams"]


@pytest.mark.parametrize("case", ["lora", "peft-ia3", "peft-prompt-tuning"])
def test_a_peft_method_exports_its_adapter_that_peft_loads_alone(
    case: str, logged: LoggedModels, tmp_path: Path
):
    uri = logged.uri(case)
    out = tmp_path / "adapter"
    note = export(uri, out)
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert "model.safetensors" not in names  # the adapter, not a model
    adapter = json.loads((out / "adapter_config.json").read_text())
    # The demo base is not on the hub: the export carries it and the adapter points at it.
    assert adapter["base_model_name_or_path"] == str((out / "base").resolve())
    assert (out / "base" / "config.json").is_file()
    assert note["kind"] == "peft_adapter" and note["merged"] is False
    assert note["base"]["in_export"] is True
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plain, _ = load_alone(out, elsewhere)
    assert plain["codes"] == served(uri)[0]


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("full_layer", "method full_layer is not a PEFT adapter"),
        ("ffn_expansion", "method ffn_expansion is not a PEFT adapter"),
        ("hybrid", "method hybrid trains weights outside its PEFT adapter"),
    ],
)
def test_a_method_that_is_not_a_peft_adapter_needs_merged(
    case: str, fragment: str, logged: LoggedModels, tmp_path: Path, capsys
):
    out = tmp_path / "out"
    line = refused(["export", "--model-uri", logged.uri(case), "--out", str(out)], capsys)
    assert fragment in line and "pass --merged" in line
    assert list(tmp_path.iterdir()) == []  # nothing written, no half-made folder


def test_a_prompt_tuning_adapter_cannot_be_merged(logged: LoggedModels, tmp_path: Path, capsys):
    uri = logged.uri("peft-prompt-tuning")
    line = refused(["export", "--model-uri", uri, "--out", str(tmp_path / "o"), "--merged"], capsys)
    assert "PROMPT_TUNING PEFT adapter cannot be merged" in line
    assert "export it without --merged" in line
    assert list(tmp_path.iterdir()) == []


def test_the_cli_exports_and_refuses_to_overwrite(logged: LoggedModels, tmp_path: Path, capsys):
    uri = logged.uri("none")
    out = tmp_path / "none"
    assert cli.main(["export", "--model-uri", uri, "--out", str(out)]) == 0
    assert "a transformers folder" in capsys.readouterr().out
    first = (out / "model.safetensors").stat().st_mtime_ns
    line = refused(["export", "--model-uri", uri, "--out", str(out)], capsys)
    assert "exists and is not empty" in line and "--force" in line
    assert (out / "model.safetensors").stat().st_mtime_ns == first
    # --force replaces an earlier export, whole: a stale file of it does not survive.
    (out / "stale.bin").write_bytes(b"x")
    assert cli.main(["export", "--model-uri", uri, "--out", str(out), "--force"]) == 0
    assert not (out / "stale.bin").exists() and (out / "export.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none"]  # no staging left beside it


def test_force_never_replaces_a_folder_that_is_not_an_export(
    logged: LoggedModels, tmp_path: Path, capsys
):
    uri = logged.uri("none")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ([], ["--force"]):
        line = refused(["export", "--model-uri", uri, "--out", str(mine), *extra], capsys)
        assert str(mine) in line
    assert "not an adaptbench export" in line
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "a file, not a folder" in refused(
        ["export", "--model-uri", uri, "--out", str(afile)], capsys
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    export(uri, empty)  # an empty folder is as good as a new one
    assert (empty / "export.json").is_file()


def test_a_model_uri_mlflow_cannot_find_is_one_line(logged: LoggedModels, tmp_path: Path, capsys):
    logged.uri("none")  # the store exists
    line = refused(
        [
            "export",
            "--model-uri",
            "runs:/0123456789abcdef/generation_python_model",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert "--model-uri runs:/0123456789abcdef/generation_python_model" in line


def test_merged_takes_a_value_as_mlproject_passes_it():
    parser = cli.build_parser()
    base = ["export", "--model-uri", "m", "--out", "o"]
    assert parser.parse_args(base).merged is False
    assert parser.parse_args([*base, "--merged"]).merged is True
    assert parser.parse_args([*base, "--merged", "true"]).merged is True
    assert parser.parse_args([*base, "--merged", "false"]).merged is False
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--merged", "maybe"])


def test_mlproject_export_entry_point(logged: LoggedModels, tmp_path: Path):
    uri = logged.uri("lora")
    out = tmp_path / "from-mlproject"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_") and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")
    }
    env.update(MLFLOW_TRACKING_URI=logged.store, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false")
    args = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "export"]
    args += ["--env-manager", "local", "-P", f"model_uri={uri}", "-P", f"out={out}"]
    args += ["-P", "merged=true"]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    note = json.loads((out / "export.json").read_text())
    assert note["merged"] is True and note["kind"] == "transformers"
    assert note["source_model_uri"] == uri
