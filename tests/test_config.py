"""Presets, overrides and the validation of every user-facing value."""

from __future__ import annotations

import pytest

from benchmark.cli import build_parser, main
from benchmark.config import UsageError, make_config, parse_overrides


def test_presets_load_with_their_values():
    seed = make_config("lora", "seed")
    assert seed.model.name == "Salesforce/codet5-small"
    assert (seed.data.source, seed.data.train_size, seed.data.val_size) == ("hub", 15000, 5000)
    assert (seed.train.epochs, seed.train.batch_size, seed.train.seed) == (2, 8, 42)
    assert seed.train.learning_rate == pytest.approx(1e-4)
    assert seed.data.eval_size == 50
    assert seed.languages == ["python", "javascript"]
    demo = make_config("lora", "demo")
    assert demo.data.source == "sample"


def test_overrides_are_typed():
    config = make_config(
        "lora",
        "demo",
        parse_overrides(["train.epochs=3 train.learning_rate=5e-4", "languages=javascript"])
        | {"method.r": "4", "data.skip_bad_rows": "true"},
    )
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.learning_rate == pytest.approx(5e-4)
    assert config.languages == ["javascript"]
    assert config.method_options["r"] == "4"  # validated by the method's own config
    assert config.data.skip_bad_rows is True


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.epochs": "two"}, "train.epochs: expected an integer, got 'two'"),
        ({"train.epochs": "0"}, "train.epochs must be at least 1"),
        ({"train.nope": "1"}, "unknown train field.*nope.*Known fields"),
        ({"bogus.x": "1"}, "unknown setting 'bogus.x'"),
        ({"train.mixed_precision": "fp8"}, "no, bf16, fp16"),
        ({"data.skip_bad_rows": "maybe"}, "expected true or false"),
        ({"eval.length_penalty": "2", "eval.num_beams": "1"}, "only acts in beam search"),
        ({"eval.length_penalty": "nan", "eval.num_beams": "4"}, "finite number"),
    ],
)
def test_bad_values_name_the_setting(overrides, message):
    with pytest.raises(UsageError, match=message):
        make_config("lora", "demo", overrides)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UsageError, match="Available presets: demo, demo-causal, seed"):
        make_config("lora", "nope")


def test_override_without_equals_is_rejected():
    with pytest.raises(UsageError, match="not key=value"):
        parse_overrides(["train.epochs"])


def test_cli_rejects_bad_numbers_and_languages(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--epochs", "abc"])
    assert "argument --epochs: expected a positive integer, got 'abc'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--languages", "python,cobol"])
    assert "unknown language(s) cobol" in capsys.readouterr().err
    args = parser.parse_args(["run", "--epochs", "", "--languages", ""])
    assert args.epochs == "" and args.languages == ""


def test_cli_unknown_method_is_a_clear_error(capsys):
    assert main(["run", "--method", "nope", "--preset", "demo"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'. Registered methods:" in err
