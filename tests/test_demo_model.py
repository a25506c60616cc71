"""The demo's pretrained base: loads offline, is reproducible, never saw the demo's test data."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark.config import ModelConfig
from benchmark.data import STRIPPERS
from benchmark.models import DEMO_CAUSAL_MODEL, DEMO_MODEL, load_base
from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "pretrain_demo_model.py"


def _code_key(code: str) -> str:
    sys.path.insert(0, str(REPO / "scripts"))
    from pretrain_demo_model import code_key

    return code_key(code)


def test_demo_model_loads_offline_in_fp32():
    model, tokenizer, info = load_base(ModelConfig(name="demo"))
    assert info.source == "local"
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def test_committed_weights_fit_the_size_budget():
    total = sum(p.stat().st_size for p in DEMO_MODEL.rglob("*") if p.is_file())
    total += sum(p.stat().st_size for p in (REPO / "benchmark/assets/demo-tokenizer").rglob("*"))
    assert total <= 16 * 2**20


@pytest.mark.parametrize("folder", [DEMO_MODEL, DEMO_CAUSAL_MODEL], ids=["t5", "causal"])
def test_no_validation_or_test_example_was_in_the_pretraining_data(folder):
    with gzip.open(folder / "pretraining_fingerprints.txt.gz", "rt") as fh:
        seen = set(fh.read().split())
    assert len(seen) > 1500
    held_out = 0
    for split in ("valid", "test"):
        for path in sorted((REPO / "data/sample").glob(f"*/final/jsonl/{split}/*.jsonl.gz")):
            with gzip.open(path, "rt") as fh:
                for line in fh:
                    row = json.loads(line)
                    code = STRIPPERS[row["language"]](row["code"]).strip("\n")
                    assert _code_key(code) not in seen, row["func_name"]
                    held_out += 1
    assert held_out > 500


def _pretraining_script():
    sys.path.insert(0, str(REPO / "scripts"))
    import pretrain_demo_model

    return pretrain_demo_model


def _site(root: Path, files: dict[str, str]) -> Path:
    """A stand-in site-packages: `files` maps package-relative paths to source."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def _held_out_python_function() -> dict:
    with gzip.open(REPO / "data/sample/python/final/jsonl/test/python_test_0.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    return next(r for r in rows if "." not in r["func_name"] and r["code"].startswith("def "))


UNRELATED = (
    "def scale_values(values, factor):\n"
    '    """Multiply every value by the given factor."""\n'
    "    out = []\n"
    "    for value in values:\n"
    "        out.append(value * factor)\n"
    "    return out\n"
)


def test_third_party_code_joins_the_corpus_but_not_a_near_copy_of_a_test_function(tmp_path):
    script = _pretraining_script()
    held = _held_out_python_function()
    # A vendored, lightly edited copy: one line added, so its exact fingerprint differs.
    near_copy = held["code"].rstrip("\n") + "\n    return None\n"
    site = _site(tmp_path / "site", {"pkg/copy.py": near_copy, "pkg/other.py": UNRELATED})
    rows = script.corpus(False, site, 10, 0)
    third_party = [r for r in rows if r["origin"] == "site"]
    assert [r["summary"] for r in third_party] == ["Multiply every value by the given factor."]
    assert '"""' not in third_party[0]["code"]  # docstring removed, as from the demo's targets
    # Without the held-out original, the same copy would have been taken.
    alone = script.site_packages_rows(site, 10, 0)
    assert held["func_name"] in {r["func_name"] for r in alone}


def test_third_party_functions_are_capped_per_package_reproducibly(tmp_path):
    script = _pretraining_script()
    files = {
        f"big/m{i}.py": UNRELATED.replace("scale_values", f"scale_values_{i}") for i in range(6)
    }
    files["small/m.py"] = UNRELATED
    site = _site(tmp_path / "site", files)
    picks = [
        [r["func_name"] for r in script.site_packages_rows(site, 4, seed)] for seed in (0, 0, 1)
    ]
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]
    assert len(picks[0]) == 5 and picks[0].count("scale_values") == 1


def test_pretraining_targets_end_with_the_end_token_unless_cut():
    from transformers import AutoTokenizer

    from benchmark.models import DEMO_TOKENIZER

    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    short, long = "def f():\n    return 1\n", "def g():\n" + "    x = 1\n" * 200
    labels = _pretraining_script().encode_labels(tokenizer, [short, long], 32, eos_after_cut=False)
    short_ids = tokenizer(short)["input_ids"]
    assert labels.shape == (2, 32)
    assert labels[0, : len(short_ids)].tolist() == short_ids  # ends with </s>
    assert (labels[0, len(short_ids) :] == -100).all()
    assert labels[1].tolist() == tokenizer(long)["input_ids"][:32]
    assert tokenizer.eos_token_id not in labels[1].tolist()
    # The committed weights' way: the cut target's last token is the end token.
    kept = _pretraining_script().encode_labels(tokenizer, [short, long], 32, eos_after_cut=True)
    assert kept[1, -1].item() == tokenizer.eos_token_id
    assert kept[1, :31].tolist() == labels[1, :31].tolist()


def test_the_scripts_default_architecture_is_the_committed_one_and_width_scales_it():
    from benchmark.models import TINY_T5

    architecture = _pretraining_script().architecture
    committed = json.loads((DEMO_MODEL / "config.json").read_text())
    default = architecture(TINY_T5["d_model"], TINY_T5["num_layers"])  # the script's defaults
    assert {k: committed[k] for k in default} == default
    wider = architecture(64, 1)
    assert (wider["d_model"], wider["d_ff"], wider["num_heads"], wider["d_kv"]) == (64, 256, 2, 32)
    assert (wider["num_layers"], wider["num_decoder_layers"]) == (1, 1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task-share", "1.5"], "--task-share is a share of functions"),
        (["--d-model", "100"], "--d-model must be a multiple of the head size 32"),
    ],
)
def test_pretraining_script_refuses_bad_settings_with_a_message(tmp_path, flags, message):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *flags, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pretraining_is_reproducible(tmp_path: Path):
    files = {f"pkg/m{i}.py": UNRELATED.replace("values", f"values{i}") for i in range(4)}
    site = _site(tmp_path / "site", files)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                "--steps",
                "3",
                "--batch-size",
                "8",
                "--no-stdlib",
                "--site-dir",
                str(site),
                "--site-per-package",
                "3",
                "--task-share",
                "0.5",
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        outputs.append((out / "model.safetensors").read_bytes())
        summary = json.loads((out / "pretraining.json").read_text())
        assert summary["examples_by_origin"]["site"] == 3
    assert outputs[0] == outputs[1]


def test_demo_tokenizer_round_trips_code_and_has_codet5_special_ids():
    from transformers import AutoTokenizer

    from benchmark.config import DataConfig
    from benchmark.data import load_languages
    from benchmark.models import DEMO_TOKENIZER

    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    assert (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ) == (0, 1, 2, 3)
    tasks = load_languages(
        ["python", "javascript"], DataConfig(train_size=25, val_size=0, eval_size=25)
    )
    for task in tasks.values():
        for ex in task.train + task.evaluation:
            ids = tokenizer(ex.code)["input_ids"]
            assert ids[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(ids, skip_special_tokens=True) == ex.code
