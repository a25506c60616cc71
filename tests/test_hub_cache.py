"""The seed preset's hub path as a user meets it offline: a hub cache filled by `hf download`
(replicated in tests/hubcache.py: codet5-small's layout and tokenizer format, CodeXGLUE's parquet
shards), the commit each run logs, the tokenizer's 4.x files, the data's route, and an
unreachable hub failing in seconds instead of minutes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import hub
from benchmark.config import DataConfig, ModelConfig, UsageError
from benchmark.data import load_languages, split_hub_source
from benchmark.models import DEMO_MODEL, _tokenizer, load_base, resolve_commit
from tests import hubcache
from tests.conftest import CODET5_CONFIG, REPO, write_csn_tree

METHODS = ("lora", "full_layer", "hybrid", "ffn_expansion", "none")
TINY_DATA = dict(train_size=8, val_size=4, eval_size=4)


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds both seed repos (a small codet5-shaped model)."""
    home = tmp_path_factory.mktemp("hf_home")
    hubcache.write_hub_cache(home, hubcache.codet5_config(**hubcache.SMALL_SIZES))
    return home


@pytest.fixture
def use_cache(hub_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process reads `hub_home`'s hub cache, offline, with an empty datasets cache."""
    import datasets.config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    return hub_home


def _dataset_snapshot(home: Path) -> Path:
    repo = f"datasets--{hubcache.DATASET_REPO.replace('/', '--')}"
    return home / "hub" / repo / "snapshots" / hubcache.DATASET_COMMIT


# ---------------------------------------------------------------- the tokenizer's 4.x files


@pytest.mark.parametrize("holder", ["special_tokens_map.json", "tokenizer_config.json"])
def test_plain_autotokenizer_fails_on_the_4x_dict_entries(tmp_path: Path, holder: str):
    """The fault being worked around: if transformers ever loads these itself, the workaround is
    merely redundant."""
    from transformers import AutoTokenizer

    folder = _tokenizer_with_entries_in(tmp_path, holder)
    try:
        AutoTokenizer.from_pretrained(str(folder))
    except TypeError as err:
        assert "Input must be a List" in str(err)
    else:
        pytest.skip("this transformers loads dict additional_special_tokens itself")


@pytest.mark.parametrize("holder", ["special_tokens_map.json", "tokenizer_config.json"])
def test_a_4x_format_tokenizer_loads_with_its_sentinels_and_flags(tmp_path: Path, holder: str):
    tokenizer = _tokenizer(str(_tokenizer_with_entries_in(tmp_path, holder)))
    assert len(tokenizer) == 32100  # codet5-small's vocab_size
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>", "<mask>"]) == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert tokenizer.convert_tokens_to_ids("<extra_id_99>") == 32000
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == 32099
    assert tokenizer.added_tokens_decoder[4].lstrip  # <mask>'s flag survives
    ids = tokenizer("def add(a, b): <extra_id_0> return a + b").input_ids
    assert 32099 in ids  # a sentinel in the text is one token, not split into BPE pieces
    assert "<extra_id_0>" not in tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer.decode(tokenizer("return a + b").input_ids, skip_special_tokens=True) == (
        "return a + b"
    )


def _tokenizer_with_entries_in(tmp_path: Path, holder: str) -> Path:
    """The replica's tokenizer folder with the dict entries in `holder` only."""
    folder = hubcache.write_tokenizer_folder(tmp_path / "tokenizer")
    if holder == "tokenizer_config.json":
        special = json.loads((folder / "special_tokens_map.json").read_text())
        config = json.loads((folder / holder).read_text())
        config["additional_special_tokens"] = special.pop("additional_special_tokens")
        (folder / holder).write_text(json.dumps(config))
        (folder / "special_tokens_map.json").write_text(json.dumps(special))
    return folder


# ---------------------------------------------------------------- the commit a run logs


def test_the_revision_is_the_cache_snapshot_commit(use_cache: Path):
    assert resolve_commit(hubcache.MODEL_REPO) == hubcache.MODEL_COMMIT
    assert resolve_commit(hubcache.MODEL_REPO, "main") == hubcache.MODEL_COMMIT
    assert resolve_commit(hubcache.MODEL_REPO, hubcache.MODEL_COMMIT) == hubcache.MODEL_COMMIT
    model, tokenizer, info = load_base(ModelConfig(name=hubcache.MODEL_REPO))
    assert (info.source, info.revision) == ("hub", hubcache.MODEL_COMMIT)
    assert len(tokenizer) == model.config.vocab_size == 32100


@pytest.mark.parametrize(
    "name, revision",
    [
        (hubcache.MODEL_REPO, "v2.0"),
        (hubcache.MODEL_REPO, "0" * 40),
        ("Salesforce/codet5-base", ""),
    ],
)
def test_a_model_the_cache_lacks_is_refused_naming_the_download(
    use_cache: Path, name: str, revision: str
):
    with pytest.raises(UsageError) as info:
        load_base(ModelConfig(name=name, revision=revision))
    message = str(info.value)
    assert f"hf download {name}" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_a_local_folder_logs_a_content_digest_or_its_snapshot_commit(use_cache: Path):
    _, _, demo = load_base(ModelConfig(name="demo"))
    assert demo.source == "local" and demo.revision.startswith("local-")
    assert load_base(ModelConfig(name=str(DEMO_MODEL)))[2].revision == demo.revision
    snapshot = use_cache / "hub/models--Salesforce--codet5-small/snapshots" / hubcache.MODEL_COMMIT
    assert load_base(ModelConfig(name=str(snapshot)))[2].revision == hubcache.MODEL_COMMIT


# ---------------------------------------------------------------- the data's route


def test_offline_data_come_from_the_hub_cache_snapshot(use_cache: Path):
    tasks = load_languages(["python", "javascript"], DataConfig(source="hub", **TINY_DATA))
    for lang, task in tasks.items():
        assert split_hub_source(task.source) == (
            hubcache.DATASET_REPO,
            hubcache.DATASET_COMMIT,
            "hub cache",
        )
        assert (len(task.train), len(task.validation), len(task.evaluation)) == (8, 4, 4)
        assert all(ex.language == lang for ex in task.train)
    assert not (use_cache / "datasets").exists()  # hub cache only: nothing converted or copied


def test_the_hub_cache_route_gives_load_datasets_rows_in_load_datasets_order(
    use_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    """Online, load_dataset reads the same shards: its data card's configs, its file order
    (Python's train split is two shards) and its shuffle give the same examples."""
    import datasets
    import datasets.config

    config = DataConfig(source="hub", train_size=30, val_size=6, eval_size=6)
    offline = load_languages(["python", "javascript"], config)
    snapshot = _dataset_snapshot(use_cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hub_commit", lambda *args: hubcache.DATASET_COMMIT)
    monkeypatch.setattr(
        "benchmark.data._load_dataset",
        lambda name, lang, commit: datasets.load_dataset(str(snapshot), lang),
    )
    online = load_languages(["python", "javascript"], config)
    for lang in ("python", "javascript"):
        assert online[lang].source.endswith("via load_dataset")
        assert [e.id for e in online[lang].train] == [e.id for e in offline[lang].train]
        assert online[lang].fingerprint() == offline[lang].fingerprint()
    # the shuffle reached into the second train shard (ids 20..39)
    assert {e.id for e in offline["python"].train[:10]} & {str(i) for i in range(20, 40)}


def test_without_the_hub_cache_datasets_own_cache_serves_quietly(
    use_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
):
    import datasets
    import datasets.config
    from huggingface_hub import constants

    snapshot = _dataset_snapshot(use_cache)
    expected = load_languages(["python"], DataConfig(source="hub", **TINY_DATA))["python"]
    cache_home = tmp_path / "home"
    hubcache.write_datasets_cache(cache_home, snapshot, ["python"])
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache_home / "datasets")
    datasets.load_dataset(hubcache.DATASET_REPO, "python")
    notices = [r.getMessage() for r in caplog.records if "latest cached" in r.getMessage()]
    assert len(notices) == 2  # what a plain load_dataset says, every time
    caplog.clear()
    task = load_languages(["python"], DataConfig(source="hub", **TINY_DATA))["python"]
    assert not [r for r in caplog.records if "latest cached" in r.getMessage()]
    assert split_hub_source(task.source) == (
        hubcache.DATASET_REPO,
        hubcache.DATASET_COMMIT,
        "datasets cache",
    )
    assert task.fingerprint() == expected.fingerprint()


def test_offline_with_neither_cache_says_how_to_fill_one(
    use_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(UsageError) as info:
        load_languages(["python"], DataConfig(source="hub", **TINY_DATA))
    message = str(info.value)
    assert "hf download --repo-type dataset google/code_x_glue_ct_code_to_text" in message
    assert "data.source" in message and "\n" not in message


# ---------------------------------------------------------------- an unreachable hub


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """Online mode with the hub's endpoint on a loopback port nobody listens on."""
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    check = hub._unreachable
    check.cache_clear()
    yield endpoint
    check.cache_clear()


def test_an_unreachable_hub_is_asked_once_and_fails_each_load_fast(
    unreachable_hub: str, monkeypatch: pytest.MonkeyPatch
):
    from huggingface_hub import utils

    asked = []
    session = utils.get_session()
    real_head = session.head
    monkeypatch.setattr(session, "head", lambda *a, **k: asked.append(a) or real_head(*a, **k))
    for _ in range(2):
        start = time.perf_counter()
        with pytest.raises(UsageError) as info:
            load_base(ModelConfig(name=hubcache.MODEL_REPO))
        assert time.perf_counter() - start < 10
    assert len(asked) == 1
    message = str(info.value)
    assert unreachable_hub in message and "HF_HUB_OFFLINE=1" in message
    assert "hf download Salesforce/codet5-small" in message and "\n" not in message


def test_local_models_and_data_never_ask_the_hub(
    unreachable_hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def refuse(endpoint: str) -> str:
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(hub, "_unreachable", refuse)
    for name in ("demo", "tiny", f"config:{CODET5_CONFIG}", str(DEMO_MODEL)):
        load_base(ModelConfig(name=name))
    load_languages(["python"], DataConfig(source="sample", **TINY_DATA))
    load_languages(["python"], DataConfig(source=str(write_csn_tree(tmp_path)), **TINY_DATA))


@pytest.mark.slow  # an interpreter and an MLflow store start: 15-30 s
def test_the_seed_preset_against_an_unreachable_hub_stops_in_seconds(tmp_path: Path):
    env = _user_env(tmp_path, HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE")
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "--method", "lora", "--preset", "seed"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    assert process.returncode != 0
    (line,) = [x for x in process.stderr.splitlines() if x.startswith("error:")]
    assert "cannot be reached" in line and "HF_HUB_OFFLINE=1" in line
    assert "hf download --repo-type dataset google/code_x_glue_ct_code_to_text" in line
    assert elapsed < 60, f"took {elapsed:.0f} s"  # the interpreter's start is most of it


# ---------------------------------------------------------------- the seed preset, end to end


def _user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's shell: offline, this HF_HOME, a fresh store, nothing left by the test process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "HF_", "TRANSFORMERS_")) and k != "VIRTUAL_ENV"
    }
    env.update(
        HF_HUB_OFFLINE="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
        PYTHONPATH=str(REPO),
        TOKENIZERS_PARALLELISM="false",
        **extra,
    )
    return env


RELOAD = """
import json, sys
import mlflow, pandas as pd
out = {}
for run_id, language, prompts in json.loads(sys.stdin.read()):
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/generation_{language}_model")
    codes = model.predict(pd.DataFrame({"prompt": prompts}))["code"].tolist()
    meta = model.unwrap_python_model().meta["base"]
    out[f"{run_id}/{language}"] = {"codes": codes, "revision": meta["revision"]}
print(json.dumps(out))
"""


# The seed presets as a user with internet runs them: the hub's repos, the base's family.
SEED_PRESETS = {
    "seed": (hubcache.MODEL_REPO, hubcache.MODEL_COMMIT, "t5"),
    "seed-causal": (hubcache.QWEN_REPO, hubcache.QWEN_COMMIT, "llama"),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", SEED_PRESETS)
def test_seed_preset_offline_from_an_hf_download_cache_trains_logs_and_reloads(
    tmp_path: Path, preset: str
):
    """Every method on a seed preset's hub path (HF_HUB_OFFLINE=1, only what `hf download`
    leaves, no datasets cache), each logged model rebuilt in a fresh process from the logged
    commit after the hub's main moved on, predicting what the run evaluated. seed-causal: the
    same on a Qwen2.5-Coder-shaped decoder-only base, its tokenizer adding no end token."""
    import mlflow
    from mlflow.tracking import MlflowClient

    repo, commit, family = SEED_PRESETS[preset]
    causal = preset == "seed-causal"
    home = tmp_path / "hf"
    small = hubcache.QWEN_SMALL if causal else hubcache.codet5_config(**hubcache.SMALL_SIZES)
    hubcache.write_hub_cache(home, small, causal=causal)
    env = _user_env(tmp_path, HF_HOME=str(home))
    settings = ["data.train_size=8", "data.val_size=4", "data.eval_size=4"]
    settings += ["train.max_steps=2", "eval.max_new_tokens=8"]
    args = [sys.executable, "-m", "benchmark", "suite", "--preset", preset, "--no-report"]
    args += ["--methods", ",".join(METHODS)] + [f"--set={s}" for s in settings]
    # Only a hang guard: five methods' runs took over 10 minutes at load 6 on 2 cores.
    process = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2400
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert not (home / "datasets").exists()

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("adaptbench")
    runs = [
        r for r in client.search_runs([experiment.experiment_id]) if "run.method" in r.data.params
    ]
    assert sorted(r.data.params["run.method"] for r in runs) == sorted(METHODS)
    requests, expected = [], {}
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags.get("error")
        params = run.data.params
        assert params["model.source"] == "hub"
        assert params["model.resolved_revision"] == commit
        assert (params["model.name"], params["model.family"]) == (repo, family)
        for language in ("python", "javascript"):
            source = params[f"data.{language}.source"]
            assert split_hub_source(source) == (
                hubcache.DATASET_REPO,
                hubcache.DATASET_COMMIT,
                "hub cache",
            )
            path = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path=f"eval/generation/{language}_examples.json",
                tracking_uri=env["MLFLOW_TRACKING_URI"],
            )
            table = json.loads(Path(path).read_text())
            rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
            requests.append((run.info.run_id, language, [r["docstring"] for r in rows]))
            expected[f"{run.info.run_id}/{language}"] = [r["prediction"] for r in rows]

    # The hub's main moves on to other weights: a base loaded from main would now differ.
    if causal:
        other = hubcache.qwen_files({**small, "initializer_range": 0.5})
    else:
        other = hubcache.model_files({**small, "initializer_factor": 2.0})
    hubcache.write_repo(home / "hub", repo, "model", "f" * 40, other)
    reload = subprocess.run(
        [sys.executable, "-c", RELOAD],
        input=json.dumps(requests),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert reload.returncode == 0, reload.stderr[-3000:]
    reloaded = json.loads(reload.stdout.strip().splitlines()[-1])
    assert set(reloaded) == set(expected)
    for key, result in reloaded.items():
        assert result["revision"] == commit, key
        assert result["codes"] == expected[key], key
