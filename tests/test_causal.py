"""Decoder-only bases: the batch layout, left-padded generation, resumable training, and whole
runs on tiny Llama-style and GPT-2-style models that log, serve and export like T5 runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from benchmark.checkpoint import Checkpointer
from benchmark.config import ModelConfig, TrainConfig, make_config
from benchmark.evaluation import generate
from benchmark.models import load_base
from benchmark.retention import mean_loss
from benchmark.training import Feature, collate, make_accelerator, source_ids, train
from core import families
from core import record as rec
from core.errors import UsageError
from tests.conftest import SMALL_RUN, write_csn_tree
from tests.test_training import features

CAUSAL = ["llama", "gpt2"]
PROMPTS = [
    "Return the sum of the first 3 squares of the values.",
    "Multiply every element of the array by 7 and return the result, a new array of numbers.",
    "Sort.",
]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A decoder-only style tokenizer: no end token added to what it encodes (as GPT-2's)."""
    words = ["<pad>", "<eos>", "<unk>", "def", "f", "(", ")", ":", "return", "sum", "x"]
    inner = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=inner, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_causal(family: str, seed: int = 0, vocab: int = 64) -> torch.nn.Module:
    values = {**families.FAMILIES[family].tiny, "vocab_size": vocab}
    values.update(pad_token_id=0, eos_token_id=1, bos_token_id=1)
    config = AutoConfig.for_model(**values)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def test_the_causal_batch_is_prompt_then_target_with_the_loss_on_the_target_only():
    batch = collate([Feature([5, 6, 1], [7, 8, 1]), Feature([9, 1], [3, 1])], 0, causal=True)
    assert batch["input_ids"].tolist() == [[5, 6, 1, 7, 8, 1], [9, 1, 3, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    # The prompt and the padding are masked; the target's end token is learned.
    assert batch["labels"].tolist() == [[-100, -100, -100, 7, 8, 1], [-100, -100, 3, 1, -100, -100]]
    assert batch["num_tokens"] == 10  # real tokens, as for a seq2seq batch of the same features
    seq2seq = collate([Feature([5, 6, 1], [7, 8, 1])], 0)
    assert seq2seq["input_ids"].tolist() == [[5, 6, 1]] and seq2seq["labels"].tolist() == [
        [7, 8, 1]
    ]


def test_a_causal_prompt_ends_with_the_end_token_whatever_the_tokenizer_adds():
    tokenizer = word_tokenizer()
    assert tokenizer("def f")["input_ids"] == [3, 4]  # nothing added by the tokenizer itself
    assert source_ids(tokenizer, ["def f", "def f ( x ) : return x"], 5, causal=True) == [
        [3, 4, 1],
        [3, 4, 5, 10, 1],  # cut to leave room for it
    ]
    assert source_ids(tokenizer, ["def f"], 5) == [[3, 4]]  # seq2seq: as the tokenizer gives
    demo = load_base(ModelConfig(name="tiny-llama"))[1]  # a T5-style tokenizer ends with it
    ids = source_ids(demo, ["Return x."], 32, causal=True)[0]
    assert ids == demo("Return x.")["input_ids"] and ids[-1] == demo.eos_token_id


@pytest.mark.parametrize("family", CAUSAL)
def test_tiny_causal_bases_are_built_with_their_family_and_the_demo_tokenizer(family: str):
    model, tokenizer, info = load_base(ModelConfig(name=f"tiny-{family}"))
    assert info.family == family and info.source == "built"
    assert type(model).__name__.endswith("ForCausalLM") or type(model).__name__ == "GPT2LMHeadModel"
    assert families.is_causal(model) and model.config.vocab_size == len(tokenizer)
    again = load_base(ModelConfig(name=f"tiny-{family}"))[0]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert info.revision == load_base(ModelConfig(name=f"tiny-{family}"))[2].revision


def test_an_unsupported_family_is_one_line_naming_it_and_the_supported_ones(tmp_path: Path):
    (tmp_path / "bart.json").write_text(json.dumps({"model_type": "bart", "d_model": 16}))
    with pytest.raises(UsageError, match="model type 'bart'.*t5 .*llama .*gpt2"):
        load_base(ModelConfig(name=f"config:{tmp_path / 'bart.json'}"))
    with pytest.raises(UsageError, match="no such tiny model; use one of tiny, tiny-t5"):
        load_base(ModelConfig(name="tiny-bert"))


@pytest.mark.parametrize("family", CAUSAL)
def test_left_padded_generation_gives_each_prompt_what_it_gets_alone(family: str):
    model, tokenizer, _ = load_base(ModelConfig(name=f"tiny-{family}"))
    settings = dict(max_new_tokens=6, batch_size=3, progress=False)
    together = generate(model, tokenizer, PROMPTS, 64, **settings)
    alone = [generate(model, tokenizer, [p], 64, **settings)[0] for p in PROMPTS]
    assert together == alone
    # Only the new tokens come back: never the prompt.
    assert not any(text.startswith(prompt[:10]) for text, prompt in zip(together, PROMPTS))


@pytest.mark.parametrize("family", CAUSAL)
def test_causal_training_learns_the_targets_and_resumes_to_the_same_weights(
    family: str, tmp_path: Path
):
    config = TrainConfig(epochs=2, batch_size=4, learning_rate=3e-3, warmup_ratio=0.2, seed=3)
    data = features(24)

    def run(folder: Path | None) -> tuple[dict, list[float]]:
        accelerator = make_accelerator(config)
        torch.manual_seed(0)
        model = tiny_causal(family)
        checkpointer = Checkpointer(folder, 2, 20, accelerator) if folder else None
        result = train(
            model, data, features(6, seed=1), 0, config, accelerator, None, "t", checkpointer
        )
        assert mean_loss(model, data, 0) < before  # the targets, after their prompts, are learned
        return {k: v.clone() for k, v in model.state_dict().items()}, result.val_losses

    before = mean_loss(tiny_causal(family), data, 0)
    weights, val_losses = run(tmp_path / "full")
    resume = tmp_path / "resume"
    resume.mkdir()
    shutil.copytree(tmp_path / "full" / "step-00000004", resume / "step-00000004")
    resumed, resumed_losses = run(resume)
    assert resumed_losses == val_losses
    assert all(torch.equal(resumed[k], v) for k, v in weights.items())


@pytest.mark.parametrize("family", CAUSAL)
def test_the_validation_loss_covers_the_target_tokens_only(family: str):
    model = tiny_causal(family).eval()
    feature = Feature([5, 6, 7, 1], [8, 9, 1])
    batch = collate([feature], 0, causal=True)
    batch.pop("num_tokens")
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(input_ids=batch["input_ids"]).logits[0]
    # Positions 3..5 (the prompt's end token, 8, 9) predict the target 8, 9, 1.
    expected = torch.nn.functional.cross_entropy(logits[3:6], torch.tensor([8, 9, 1]))
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, method",
    [("llama", "lora"), ("llama", "ffn_expansion"), ("gpt2", "lora"), ("gpt2", "ffn_expansion")],
)
def test_a_causal_run_logs_serves_and_exports_like_a_t5_run(
    family: str, method: str, mlflow_store: str, tmp_path: Path
):
    from benchmark.export import export
    from benchmark.runner import run

    tree = write_csn_tree(tmp_path / "csn")
    settings = {**SMALL_RUN, "data.source": str(tree), "model.name": f"tiny-{family}"}
    settings.update({"eval.inference_prompts": "2", "eval.retention_examples": "4"})
    config = make_config(method, "demo", settings)
    config.languages = ["python"]
    run_id = run(config)
    client = MlflowClient()
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED"
    params, metrics, tags = record.data.params, record.data.metrics, record.data.tags
    assert params[rec.MODEL_FAMILY] == family
    assert int(params[rec.TRAINABLE_PARAMS]) > 0
    for name in ("bleu", "final_val_loss", "train_time_s"):
        assert rec.metric("generation", "python", name) in metrics
    history = client.get_metric_history(run_id, rec.metric("generation", "python", "train/loss"))
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert (
        params[rec.retention_objective_param("pretraining-text")] == "next-token prediction of code"
    )
    # The merged model (ffn_expansion widens the MLP; lora folds in) decodes as the trained one.
    merged = rec.merged_metric(rec.scope("generation", "python"), rec.CHANGED_PREDICTIONS)
    assert metrics[merged] == 0

    # Served: the logged model, rebuilt in this process, answers as the run evaluated.
    path = client.download_artifacts(run_id, "eval/generation/python_examples.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    row = pd.DataFrame(table["data"], columns=table["columns"]).iloc[0]
    uri = tags[rec.model_uri_tag("generation", "python")]
    served = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"prompt": [row["docstring"]]}))
    assert served["code"].tolist() == [row["prediction"]]

    # Exported merged, it is a plain transformers model of its family's class.
    note = export(uri, tmp_path / "export", merged=True)
    assert note["family"] == family and note["auto_class"] == "AutoModelForCausalLM"
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert families.family_of(plain.config).name == family
    assert "AutoModelForCausalLM.from_pretrained" in (tmp_path / "export" / "README.md").read_text()
