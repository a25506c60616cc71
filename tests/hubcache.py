"""A replica of the Hugging Face hub cache as `hf download` leaves it, for the seed presets' repos.

`hf download Salesforce/codet5-small` and `hf download --repo-type dataset
google/code_x_glue_ct_code_to_text` fill `$HF_HOME/hub/` with, per repo,
`<type>s--<owner>--<name>/blobs/<sha>` (the files' contents: git sha1 for small files, sha256
for LFS ones), `refs/main` (the commit main pointed at), `snapshots/<commit>/<path>` (relative
symlinks into blobs) and `trees/<commit>.json` (the tree listing huggingface_hub >= 2 keeps).
Nothing here is downloaded: the model has codet5-small's architecture and random weights, the
tokenizer is the bundled demo BPE padded to codet5's 32,100 tokens and written as transformers
4.x wrote RobertaTokenizer files, the data set holds a few CodeXGLUE-layout parquet shards.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.conftest import CODET5_CONFIG, raw_row

MODEL_REPO = "Salesforce/codet5-small"
DATASET_REPO = "google/code_x_glue_ct_code_to_text"
MODEL_COMMIT = hashlib.sha1(b"replica of Salesforce/codet5-small").hexdigest()
DATASET_COMMIT = hashlib.sha1(b"replica of google/code_x_glue_ct_code_to_text").hexdigest()
DEMO_TOKENIZER = Path(__file__).resolve().parent.parent / "benchmark/assets/demo-tokenizer"

VOCAB_SIZE = 32000  # codet5's BPE vocabulary; 100 sentinels follow as added tokens
SENTINELS = [f"<extra_id_{i}>" for i in range(99, -1, -1)]  # 32000 = <extra_id_99>
LANGUAGES = ("python", "javascript")
SPLIT_ROWS = {"train": 40, "validation": 12, "test": 12}
LFS_SUFFIXES = (".bin", ".safetensors", ".parquet")


def _added_token(content: str, lstrip: bool = False) -> dict:
    # The dict form transformers 4.x wrote for AddedToken entries.
    return {
        "content": content,
        "lstrip": lstrip,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def tokenizer_files() -> dict[str, bytes]:
    """vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json (4.x format)."""
    demo = json.loads((DEMO_TOKENIZER / "tokenizer.json").read_text())
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for token in demo["model"]["vocab"]:
        vocab.setdefault(token, len(vocab))
    filler = 0
    while len(vocab) < VOCAB_SIZE:  # unreachable by merges, but decodable like any token
        vocab[f"fill{filler}"] = len(vocab)
        filler += 1
    merges = ["#version: 0.2"] + [" ".join(pair) for pair in demo["model"]["merges"]]
    special_map = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": _added_token("<mask>", lstrip=True),
        "additional_special_tokens": [_added_token(t) for t in SENTINELS],
    }
    tokenizer_config = {
        "errors": "replace",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "add_prefix_space": False,
        "model_max_length": 512,
        "tokenizer_class": "RobertaTokenizer",
    }
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False).encode(),
        "merges.txt": ("\n".join(merges) + "\n").encode(),
        "special_tokens_map.json": json.dumps(special_map).encode(),
        "tokenizer_config.json": json.dumps(tokenizer_config, indent=2).encode(),
    }


def write_tokenizer_folder(folder: Path) -> Path:
    """The tokenizer files alone, as a plain folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in tokenizer_files().items():
        (folder / name).write_bytes(content)
    return folder


def codet5_config(**sizes: int) -> dict:
    """codet5-small's config.json, with `sizes` (d_model, num_layers, ...) changed where given:
    the same architecture (T5 v1.0, ReLU FFN, tied embeddings, 32,100 tokens), smaller."""
    return {**json.loads(CODET5_CONFIG.read_text()), **sizes}


# codet5-small's architecture at a size that trains two steps in about a second on two cores.
SMALL_SIZES = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4)


def model_files(values: dict | None = None) -> dict[str, bytes]:
    """config.json and random pytorch_model.bin weights (codet5-small's config unless `values`),
    plus the tokenizer files."""
    import io

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    values = values or codet5_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config(**values))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    files = {
        "config.json": json.dumps(values, indent=2).encode(),
        "pytorch_model.bin": buffer.getvalue(),
        "README.md": b"---\nlicense: apache-2.0\n---\n# Replica of codet5-small (random weights)\n",
    }
    files.update(tokenizer_files())
    return files


QWEN_REPO = "Qwen/Qwen2.5-Coder-0.5B"  # the seed-causal preset's base
QWEN_COMMIT = hashlib.sha1(b"replica of Qwen/Qwen2.5-Coder-0.5B").hexdigest()
QWEN_CONFIG = CODET5_CONFIG.parent / "qwen2.5-coder-0.5b-config.json"
# Qwen2.5-Coder-0.5B's architecture (qwen2: QKV biases, grouped KV heads, tied embeddings), small.
QWEN_SMALL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_window_layers=2,
)


def qwen_tokenizer_files() -> dict[str, bytes]:
    """A Qwen2 tokenizer as the hub serves it: byte-level BPE in tokenizer.json, nothing added to
    what it encodes, `<|endoftext|>` its end and padding token, no start token. The bundled demo
    BPE stands in for Qwen's 151,643 merges."""
    tokenizer = json.loads((DEMO_TOKENIZER / "tokenizer.json").read_text())
    tokenizer["post_processor"] = None  # Qwen's appends nothing, unlike the T5-style demo's
    end = {"id": len(tokenizer["model"]["vocab"]), "content": "<|endoftext|>", "special": True}
    end.update(single_word=False, lstrip=False, rstrip=False, normalized=False)
    tokenizer["added_tokens"].append(end)
    config = {
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 32768,
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "Qwen2Tokenizer",
    }
    return {
        "tokenizer.json": json.dumps(tokenizer, ensure_ascii=False).encode(),
        "tokenizer_config.json": json.dumps(config, indent=2).encode(),
    }


def qwen_files(sizes: dict | None = None) -> dict[str, bytes]:
    """Qwen2.5-Coder-0.5B's config.json (at `sizes`, QWEN_SMALL unless given), random
    model.safetensors weights and its tokenizer files."""
    import torch
    from safetensors.torch import save
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = qwen_tokenizer_files()
    end = len(json.loads(tokenizer["tokenizer.json"])["model"]["vocab"])
    values = {**json.loads(QWEN_CONFIG.read_text()), **(sizes or QWEN_SMALL)}
    values.update(vocab_size=end + 1, bos_token_id=end, eos_token_id=end)
    config = AutoConfig.for_model(**{k: v for k, v in values.items() if k != "architectures"})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    files = {
        "config.json": json.dumps(values, indent=2).encode(),
        "model.safetensors": save(state, metadata={"format": "pt"}),
        "README.md": b"---\nlicense: apache-2.0\n---\n# Replica of Qwen2.5-Coder-0.5B (random)\n",
    }
    files.update(tokenizer)
    return files


def _row(language: str, i: int) -> dict:
    """A CodeXGLUE row: the raw CodeSearchNet fields with CodeXGLUE's integer id, no sha, and
    no partition (the split is the shard's)."""
    row = {k: v for k, v in raw_row(language, i, "train").items() if k not in ("sha", "partition")}
    return {"id": i, **row}


DATASET_CARD = """---
dataset_info:
{infos}
configs:
{configs}
---
# Replica of CodeXGLUE code-to-text (a few generated functions per split)
"""


def dataset_files(languages=LANGUAGES) -> dict[str, bytes]:
    """README.md (its `configs` map files to splits) and `<lang>/<split>-0000k-of-0000n.parquet`;
    Python's train split comes in two shards, so their order counts."""
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("int32"),
            **{k: datasets.Value("string") for k in ("repo", "path", "func_name")},
            "original_string": datasets.Value("string"),
            "language": datasets.Value("string"),
            "code": datasets.Value("string"),
            "code_tokens": datasets.List(datasets.Value("string")),
            "docstring": datasets.Value("string"),
            "docstring_tokens": datasets.List(datasets.Value("string")),
            "url": datasets.Value("string"),
        }
    )
    feature_yaml = "  features:\n" + "\n".join(
        f"  - name: {k}\n    "
        + ("sequence: string" if k.endswith("_tokens") else f"dtype: {v.dtype}")
        for k, v in features.items()
    )
    files: dict[str, bytes] = {}
    infos, configs = [], []
    for language in languages:
        configs.append(f"- config_name: {language}\n  data_files:")
        infos.append(f"- config_name: {language}\n{feature_yaml}\n  splits:")
        for n, (split, rows) in enumerate(SPLIT_ROWS.items()):
            offset = 1000 * n + (0 if language == "python" else 500)
            table = datasets.Dataset.from_list(
                [_row(language, offset + i) for i in range(rows)], features=features
            )
            shards = 2 if (language, split) == ("python", "train") else 1
            size = 0
            for k in range(shards):
                part = table.shard(shards, k, contiguous=True)
                content = _parquet_bytes(part)
                files[f"{language}/{split}-{k:05d}-of-{shards:05d}.parquet"] = content
                size += len(content)
            configs.append(f"  - split: {split}\n    path: {language}/{split}-*")
            infos.append(f"  - name: {split}\n    num_bytes: {size}\n    num_examples: {rows}")
    card = DATASET_CARD.format(infos="\n".join(infos), configs="\n".join(configs))
    files["README.md"] = card.encode()
    return files


def _parquet_bytes(table) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "part.parquet")
        table.to_parquet(str(path))
        return path.read_bytes()


def write_repo(hub: Path, repo_id: str, repo_type: str, commit: str, files: dict[str, bytes]):
    """One repo in huggingface_hub's cache layout; returns its snapshot folder."""
    storage = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    tree = {}
    for name, content in files.items():
        git_sha = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        entry = {"size": len(content), "blob_id": git_sha}
        blob_name = git_sha
        if name.endswith(LFS_SUFFIXES):
            blob_name = hashlib.sha256(content).hexdigest()
            entry.update(lfs_sha256=blob_name, lfs_size=len(content))
        blob = storage / "blobs" / blob_name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
        tree[name] = entry
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)  # no newline, as huggingface_hub writes it
    (storage / "trees").mkdir(exist_ok=True)
    listing = {"format_version": 1, "files": dict(sorted(tree.items()))}
    (storage / "trees" / f"{commit}.json").write_text(json.dumps(listing, indent=1))
    return snapshot


def write_hub_cache(
    hf_home: Path, model_config: dict | None = None, causal: bool = False
) -> dict[str, Path]:
    """Both repos of the seed preset (`causal`: of seed-causal) under `hf_home/hub`, as two
    `hf download` calls would leave them."""
    hub = hf_home / "hub"
    if causal:
        model = write_repo(hub, QWEN_REPO, "model", QWEN_COMMIT, qwen_files(model_config))
    else:
        model = write_repo(hub, MODEL_REPO, "model", MODEL_COMMIT, model_files(model_config))
    return {
        "model": model,
        "dataset": write_repo(hub, DATASET_REPO, "dataset", DATASET_COMMIT, dataset_files()),
    }


def write_datasets_cache(hf_home: Path, snapshot: Path, languages=LANGUAGES) -> Path:
    """datasets' own processed cache of the data set, as an online `load_dataset` leaves it
    (`datasets/google___<name>/<config>/0.0.0/<commit>/<name>-<split>.arrow`), built from a
    snapshot's shards by datasets' parquet builder."""
    import shutil

    from datasets.packaged_modules.parquet.parquet import Parquet

    from benchmark.data import _snapshot_files

    cache = hf_home / "datasets"
    staging = cache / "staging"
    name = DATASET_REPO.split("/")[1]
    for language in languages:
        builder = Parquet(
            cache_dir=str(staging),
            dataset_name=name,
            config_name=language,
            config_id=language,
            data_files=_snapshot_files(snapshot, language),
            hash=snapshot.name,
        )
        builder.download_and_prepare()
    target = cache / f"{DATASET_REPO.split('/')[0]}___{name}"
    (staging / name).rename(target)
    shutil.rmtree(staging)
    return target
