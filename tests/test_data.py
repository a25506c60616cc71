"""Data loading: both schemas, the directory layout, docstring removal, clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from benchmark.config import DataConfig, UsageError
from benchmark.data import (
    DataError,
    fingerprint,
    first_paragraph,
    load_languages,
    strip_javascript_docstring,
    strip_python_docstring,
)

SMALL = dict(train_size=30, val_size=5, eval_size=5, apply_csn_filters=True)


def _fold(text: str) -> str:
    return " ".join(text.split())


def test_raw_tree_and_hf_parquet_give_the_same_examples(csn_tree: Path, hf_parquet: Path):
    raw = load_languages(["python", "javascript"], DataConfig(source=str(csn_tree), **SMALL))
    hf = load_languages(["python", "javascript"], DataConfig(source=str(hf_parquet), **SMALL))
    for lang in ("python", "javascript"):
        assert len(raw[lang].train) == 30
        assert len(raw[lang].evaluation) == 5
        assert len(raw[lang].validation) == 5
        assert [e.code for e in raw[lang].train] == [e.code for e in hf[lang].train]
        assert [e.docstring for e in raw[lang].train] == [e.docstring for e in hf[lang].train]


def test_no_python_target_contains_its_docstring(csn_tree: Path):
    tasks = load_languages(["python"], DataConfig(source=str(csn_tree), **SMALL))
    task = tasks["python"]
    for ex in task.train + task.validation + task.evaluation:
        assert '"""' not in ex.code
        assert _fold(ex.docstring) not in _fold(ex.code)
        assert "Extra details" not in ex.code  # the whole docstring went, not just its summary
        assert ex.code.startswith("def sum_squares_")
        assert "return total" in ex.code
        # the source is the docstring's first paragraph only
        assert ex.docstring.startswith("Return the sum") and "Extra" not in ex.docstring


def test_splits_are_disjoint_and_selection_is_seeded(csn_tree: Path):
    a = load_languages(["python"], DataConfig(source=str(csn_tree), **SMALL))["python"]
    b = load_languages(["python"], DataConfig(source=str(csn_tree), **SMALL))["python"]
    c = load_languages(["python"], DataConfig(source=str(csn_tree), selection_seed=7, **SMALL))[
        "python"
    ]
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    train_codes = {e.code for e in a.train}
    assert not train_codes & {e.code for e in a.evaluation}
    assert not train_codes & {e.code for e in a.validation}


def test_strip_python_docstring_variants():
    method = 'def f(self):\n        """Doc line.\n\n        More."""\n        return 1\n'
    assert strip_python_docstring(method) == "def f(self):\n        return 1\n"
    single = "def g():\n    'Single quoted doc.'\n    return 2\n"
    assert strip_python_docstring(single) == "def g():\n    return 2\n"
    # Python 2 code does not parse with ast: the pattern route still removes the docstring.
    py2 = 'def h(x):\n    """Print it."""\n    print "x", x\n    return x\n'
    assert strip_python_docstring(py2) == 'def h(x):\n    print "x", x\n    return x\n'
    one_line = 'def k(): """Doc."""; return 3\n'
    assert '"""' not in strip_python_docstring(one_line)
    no_doc = "def m():\n    return 4\n"
    assert strip_python_docstring(no_doc) == no_doc


def test_strip_javascript_docstring():
    code = (
        "/**\n * Add two numbers.\n * @param {number} a\n */\n"
        "function add(a, b) {\n  return a + b;\n}"
    )
    assert strip_javascript_docstring(code).startswith("function add")


def test_first_paragraph():
    assert (
        first_paragraph("  Summary line\n  continues.\n\n  Details.") == "Summary line continues."
    )


def test_fingerprint_changes_with_any_example(csn_tree: Path):
    task = load_languages(["python"], DataConfig(source=str(csn_tree), **SMALL))["python"]
    before = fingerprint(task.train)
    assert fingerprint(task.train[:-1]) != before
    assert fingerprint(list(reversed(task.train))) != before


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_malformed_line_names_file_and_line(tmp_path: Path):
    from tests.conftest import raw_row

    good = [json.dumps(raw_row("python", i, "train")) for i in range(3, 8)]
    lines = good[:2] + ['{"repo": "x", "code": '] + good[2:]
    path = _write_jsonl(tmp_path / "python" / "final" / "jsonl" / "train" / "p_0.jsonl.gz", lines)
    with pytest.raises(DataError) as err:
        load_languages(["python"], DataConfig(source=str(tmp_path), **SMALL))
    message = str(err.value)
    assert f"{path}:3" in message and "malformed JSON" in message
    assert "skip_bad_rows" in message


def test_missing_field_names_the_field(tmp_path: Path):
    from tests.conftest import raw_row

    row = raw_row("python", 3, "train")
    broken = dict(row)
    del broken["docstring"]
    broken["func_documentation_string"] = 1  # neither schema complete after the first row
    lines = [json.dumps(row), json.dumps({k: v for k, v in row.items() if k != "code"})]
    path = _write_jsonl(tmp_path / "d" / "train.jsonl.gz", lines)
    with pytest.raises(DataError) as err:
        load_languages(["python"], DataConfig(source=str(path.parent), **SMALL))
    assert f"{path}:2" in str(err.value) and "'code'" in str(err.value)


def test_skip_bad_rows_counts_them(tmp_path: Path):
    from tests.conftest import raw_row

    rows = [json.dumps(raw_row("python", i, s)) for s in ("train", "test") for i in range(3, 12)]
    rows.insert(4, "not json at all")
    rows.insert(7, json.dumps({"repo": "x"}))
    _write_jsonl(tmp_path / "d" / "all.jsonl.gz", rows)
    config = DataConfig(
        source=str(tmp_path / "d"), train_size=5, val_size=0, eval_size=3, skip_bad_rows=True
    )
    task = load_languages(["python"], config)["python"]
    assert task.stats.bad_rows == 2
    assert len(task.train) == 5


def test_unknown_language_lists_the_languages_found(csn_tree: Path):
    with pytest.raises(DataError, match="Languages found: javascript, python"):
        load_languages(["go"], DataConfig(source=str(csn_tree), **SMALL))


def test_missing_source_is_a_usage_error(tmp_path: Path):
    with pytest.raises(UsageError, match="neither"):
        load_languages(["python"], DataConfig(source=str(tmp_path / "nope")))


def test_csn_filters_drop_short_test_and_dunder_functions(tmp_path: Path):
    from tests.conftest import raw_row

    base = raw_row("python", 3, "train")
    variants = [
        dict(base, func_name="test_something"),
        dict(base, func_name="Thing.__init__", code=base["code"].replace("sum_squares_3", "x")),
        dict(base, docstring="Doit.", code=base["code"].replace("3", "4")),
        dict(
            base,
            code='def f(a,\n      b):\n    """Short thing here."""\n    pass\n',
            docstring="Short thing here.",
        ),
        dict(base, code="def f():\n    return 1\n", docstring="Return one value."),
    ]
    rows = [json.dumps(dict(v, partition="train")) for v in variants]
    rows.append(json.dumps(raw_row("python", 50, "train")))
    rows.append(json.dumps(raw_row("python", 99, "test")))
    _write_jsonl(tmp_path / "d" / "all.jsonl.gz", rows)
    config = DataConfig(source=str(tmp_path / "d"), train_size=10, val_size=0, eval_size=1)
    task = load_languages(["python"], config)["python"]
    assert [e.func_name for e in task.train] == ["fn_50"]
    assert task.stats.dropped == {
        "test_function": 1,
        "dunder": 1,
        "short_docstring": 1,
        "trivial_body": 1,
        "short_code": 1,
    }
    unfiltered = load_languages(
        ["python"],
        DataConfig(
            source=str(tmp_path / "d"),
            train_size=10,
            val_size=0,
            eval_size=1,
            apply_csn_filters=False,
        ),
    )["python"]
    assert len(unfiltered.train) == 6


def test_bundled_sample_targets_never_contain_their_docstring():
    config = DataConfig(source="sample", train_size=5000, val_size=5000, eval_size=5000)
    tasks = load_languages(["python", "javascript"], config)
    checked = 0
    for task in tasks.values():
        for ex in task.train + task.validation + task.evaluation:
            assert _fold(ex.docstring) not in _fold(ex.code), ex.id
            checked += 1
    python = tasks["python"]
    assert len(python.train) >= 900 and len(python.evaluation) >= 150
    assert not any('"""' in ex.code.split("\n", 2)[1] for ex in python.train if "\n" in ex.code)
    assert checked > 2500


def test_evaluating_on_the_whole_validation_split_warns_and_leaves_no_loss_examples(caplog):
    """data.eval_split=validation: the evaluation and the validation loss share the split,
    disjoint; when the evaluation takes all of it, the run goes on without a validation loss
    (it used to crash on an empty batch) and says why."""
    import logging

    from benchmark.training import encode

    config = DataConfig(
        source="sample", train_size=50, val_size=100, eval_size=1000, eval_split="validation"
    )
    with caplog.at_level(logging.WARNING, logger="adaptbench"):
        task = load_languages(["python"], config)["python"]
    assert task.evaluation and not task.validation
    assert "no python validation examples left" in caplog.text and "data.eval_size" in caplog.text
    assert encode(task.validation, None, 48, 128) == []

    config.eval_size = 50
    kept = load_languages(["python"], config)["python"]
    assert len(kept.evaluation) == 50 and kept.validation
    ids = {ex.id for ex in kept.validation}
    assert not ids & {ex.id for ex in kept.evaluation}
