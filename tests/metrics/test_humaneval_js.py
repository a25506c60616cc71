"""HumanEval-JS: the translated problems, their tests under node, and pass@k on top of them."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from metrics import humaneval_js
from metrics._sandbox import Limits, node_binary, node_runner, run_program
from metrics.humaneval import PASS_CODE, pass_at_k
from metrics.humaneval_js import (
    LEFT_OUT,
    STOP_SEQUENCES,
    docstring_of,
    evaluate_humaneval_js,
    load_problems,
    program,
    truncate,
)

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = REPO / "tests" / "fixtures" / "humaneval_js_solutions"
EMPTY_BODY = "}\n"
THROWING_BODY = '  throw new Error("not written yet");\n}\n'


def _translator():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import translate_humaneval_js
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return translate_humaneval_js


def _solutions() -> dict[str, str]:
    """Hand-written JavaScript, one whole function per file, by task id."""
    return {f"HumanEval-JS/{f.stem}": f.read_text() for f in sorted(SOLUTIONS.glob("*.js"))}


def _body(function: str) -> str:
    """A whole function's body and closing brace: what a completion of the prompt is."""
    return function.split("{\n", 1)[1]


def _run_all(sources: list[str]) -> list:
    limits = Limits(timeout_s=20)  # generous: the machine may be busy; none of these loops
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda s: run_program(s, limits, PASS_CODE, node_runner()), sources))


def test_the_committed_problems_are_what_the_translator_writes_and_the_left_out_are_counted():
    translator = _translator()
    translated, left_out = translator.translate_all()
    assert translator.render(translated) == humaneval_js.DATA.read_text(encoding="utf-8")
    assert len(left_out) == LEFT_OUT and len(translated) + LEFT_OUT == 164
    assert [p["task_id"] for p in load_problems()] == [p["task_id"] for p in translated]
    # metrics/README.md names each left-out problem, and says how many are in.
    readme = (REPO / "metrics" / "README.md").read_text()
    section = readme.split("## HumanEval-JS", 1)[1].split("\n## ", 1)[0]
    for task_id in left_out:
        assert f"`{task_id}`" in section, task_id
    assert f"{len(translated)} of HumanEval's 164" in section


def test_the_problems_and_their_licence_note_are_packaged():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["metrics"]
    for name in ("data/humaneval_js.jsonl", "data/LICENCE"):
        assert (REPO / "metrics" / name).is_file()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
    licence = (REPO / "metrics" / "data" / "LICENCE").read_text()
    assert "MIT" in licence and "OpenAI" in licence and "MultiPL-E" in licence


def test_the_translator_writes_python_values_as_javascript_and_refuses_what_it_cannot():
    translator = _translator()
    assert translator.js_value([1, (2.5, 'a"b'), None, True, {"k": []}]) == (
        '[1, [2.5, "a\\"b"], undefined, true, {"k": []}]'
    )
    for value in ({1: "a"}, 2**60, float("inf"), {1, 2}):
        with pytest.raises(translator.Untranslatable):
            translator.js_value(value)
    tests = "def check(candidate):\n    assert candidate([1], 'x') == (1, None)\n    assert True\n"
    program_text, asserts = translator.js_tests(tests, "f")
    assert asserts == 1
    assert 'assert.deepStrictEqual(candidate([1], "x"), [1, undefined]);' in program_text
    looped = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == x\n"
    with pytest.raises(translator.Untranslatable, match="compute their cases in Python"):
        translator.js_tests(looped, "f")


def test_every_translated_problem_parses_under_node_check(tmp_path: Path):
    problems = load_problems()
    assert len(problems) == 164 - LEFT_OUT
    sources = [program(problem, EMPTY_BODY, "completion") for problem in problems]

    def check(source: str, name: str) -> subprocess.CompletedProcess:
        # Parsing only (--check runs nothing), so outside the sandbox.
        path = tmp_path / name
        path.write_text(source)
        return subprocess.run(
            [node_binary(), "--check", str(path)], capture_output=True, text=True, timeout=300
        )

    # All in one file, each in a function of its own, as node wraps a CommonJS module: one node
    # start instead of one a problem. Should it fail, each is checked alone to name the culprits.
    together = "".join(f"function problem{i}() {{\n{s}\n}}\n" for i, s in enumerate(sources))
    if check(together, "all.js").returncode != 0:
        failures = [
            (problem["task_id"], done.stderr[-500:])
            for problem, source in zip(problems, sources)
            if (done := check(source, f"{problem['entry_point']}.js")).returncode != 0
        ]
        pytest.fail(f"{len(failures)} problems do not parse under node: {failures}")
    assert check("function broken( {\n", "broken.js").returncode != 0  # it does check


def test_the_prompt_alone_and_a_throwing_body_fail_every_problem():
    problems = load_problems()
    sources = [
        program(p, body, "completion") for p in problems for body in (EMPTY_BODY, THROWING_BODY)
    ]
    outcomes = _run_all(sources)
    assert [o.status for o in outcomes] == ["failed"] * len(sources)
    for problem, empty, throwing in zip(problems, outcomes[::2], outcomes[1::2]):
        # Failed by an assert (the tests ran), and by the thrown error: not by a syntax error.
        assert "AssertionError" in empty.output, (problem["task_id"], empty.output)
        assert "not written yet" in throwing.output, (problem["task_id"], throwing.output)


def test_hand_written_solutions_pass_their_translated_tests_in_both_modes():
    solutions = _solutions()
    assert len(solutions) >= 20
    problems = {p["task_id"]: p for p in load_problems()}
    # A docstring -> code model names its function as it likes: renamed to the entry point.
    renamed = [
        program(
            problems[t], re.sub(r"function \w+", "function generated", code, count=1), "function"
        )
        for t, code in solutions.items()
    ]
    outcomes = _run_all(renamed)
    assert [o.status for o in outcomes] == ["passed"] * len(solutions), [
        (t, o.output[-300:]) for t, o in zip(solutions, outcomes) if o.status != "passed"
    ]
    # Through the evaluator, as completions of the prompts: these pass, the others' prompts alone
    # do not.
    by_prompt = {problems[t]["prompt"]: _body(code) for t, code in solutions.items()}
    results = evaluate_humaneval_js(
        lambda prompts, n: [[by_prompt.get(q, EMPTY_BODY)] * n for q in prompts],
        num_samples=1,
        ks=(1,),
        mode="completion",
        timeout_s=20,
        workers=4,
    )
    assert results["problems"] == len(problems) == 164 - LEFT_OUT
    assert results["pass_at_1"] == pytest.approx(len(solutions) / len(problems))


def test_pass_at_k_is_the_unbiased_estimator_shared_with_python():
    solution = _body(_solutions()["HumanEval-JS/0"])
    results = evaluate_humaneval_js(
        lambda prompts, n: [[solution, EMPTY_BODY, THROWING_BODY] for _ in prompts],
        num_samples=3,
        ks=(1, 2, 3, 10),
        mode="completion",
        limit=1,
        timeout_s=20,
    )
    assert results["pass_at_1"] == pytest.approx(pass_at_k(3, 1, 1)) == pytest.approx(1 / 3)
    assert results["pass_at_2"] == pytest.approx(pass_at_k(3, 1, 2)) == pytest.approx(2 / 3)
    assert results["pass_at_3"] == 1.0 and "pass_at_10" not in results
    assert results["programs_passed"] == pytest.approx(1 / 3)


def test_a_completion_is_cut_at_the_first_stop_sequence():
    body = "  return 1;\n}\n"
    for stop in STOP_SEQUENCES:
        assert truncate(body + stop + "junk(") == body
    problem = load_problems(1)[0]
    text = program(problem, body + "\nconsole.log('after')\nfunction more() {}", "completion")
    assert text.startswith(problem["prompt"] + body) and "after" not in text
    assert text.endswith(problem["test"])


def test_generate_must_return_n_completions_per_prompt():
    with pytest.raises(ValueError, match="must return 2 completions"):
        evaluate_humaneval_js(lambda prompts, n: [[""] for _ in prompts], num_samples=2, limit=2)


def test_the_prompts_are_jsdoc_signatures_and_the_docstring_reads_as_text():
    for problem in load_problems():
        prompt, entry = problem["prompt"], problem["entry_point"]
        assert prompt.startswith("/**\n") and f"\n */\nfunction {entry}(" in prompt
        assert prompt.endswith(") {\n") and prompt.count("*/") == 1
        assert "/**" not in docstring_of(problem) and docstring_of(problem)
    first = load_problems(1)[0]
    assert ">>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n * false" in first["prompt"]


def test_the_signature_names_the_problems_node_and_the_translation():
    signature = humaneval_js.signature(10, "function", 5.0)
    assert f"problems:{164 - LEFT_OUT}" in signature and "|node:v" in signature
    assert re.fullmatch(r"[0-9a-f]{12}", signature.split("translation:")[1])
