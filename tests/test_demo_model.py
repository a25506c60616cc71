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
from benchmark.models import DEMO_MODEL, load_base
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


def test_no_validation_or_test_example_was_in_the_pretraining_data():
    with gzip.open(DEMO_MODEL / "pretraining_fingerprints.txt.gz", "rt") as fh:
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


@pytest.mark.slow
def test_pretraining_is_reproducible(tmp_path: Path):
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
                "--out",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
        outputs.append((out / "model.safetensors").read_bytes())
    assert outputs[0] == outputs[1]


def test_demo_tokenizer_round_trips_code_and_has_codet5_special_ids():
    from transformers import AutoTokenizer

    from benchmark.config import DataConfig
    from benchmark.data import load_tasks
    from benchmark.models import DEMO_TOKENIZER

    tokenizer = AutoTokenizer.from_pretrained(DEMO_TOKENIZER)
    assert (
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ) == (0, 1, 2, 3)
    tasks = load_tasks(
        ["python", "javascript"], DataConfig(train_size=25, val_size=0, eval_size=25)
    )
    for task in tasks.values():
        for ex in task.train + task.evaluation:
            ids = tokenizer(ex.code)["input_ids"]
            assert ids[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(ids, skip_special_tokens=True) == ex.code
