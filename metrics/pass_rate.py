"""Pass rate: the share of predictions that are syntactically valid code defining a function."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import sys
import warnings

from metrics import Metric, MetricResult, register
from metrics._parsers import top_nodes
from metrics._text import strip_fences


# pass_rate and ast_similarity both ask it of every prediction: the second asks this memory.
@functools.lru_cache(maxsize=1 << 14)
def parses(code: str, language: str) -> bool:
    """Python: `compile()` (stricter than `ast.parse`: it also rejects e.g. `return` outside a
    function); JavaScript: tree-sitter without ERROR or MISSING nodes, where a class method
    counts as valid (CodeSearchNet has many). A surrounding markdown fence is stripped first."""
    code = strip_fences(code)
    if not code.strip():
        return False
    if language == "python":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences: still valid code
            try:
                compile(code, "<prediction>", "exec", dont_inherit=True)
            except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
                # SyntaxError includes IndentationError; ValueError: NUL bytes.
                return False
        return True
    if language == "javascript":
        return top_nodes(code, language)[1]
    raise ValueError(f"pass_rate knows python and javascript, not {language!r}")


JS_FUNCTIONS = {
    "function_declaration",
    "generator_function_declaration",
    "function_expression",
    "function",
    "generator_function",
    "arrow_function",
    "method_definition",
}


def defines_function(code: str, language: str) -> bool:
    """Whether valid `code` defines a function: the task's output. Python: a top-level `def`
    or `async def` (decorated or not); JavaScript: a function declaration or expression, an
    arrow function or a method anywhere in it (`a.b = function () {...}` counts)."""
    code = strip_fences(code)
    if language == "python":
        tree = ast.parse(code)
        return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in tree.body)
    return has_function(top_nodes(code, language)[0])


def has_function(nodes: list) -> bool:
    """Whether a function, arrow function or method is among tree-sitter `nodes` or in them."""
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.type in JS_FUNCTIONS:
            return True
        stack.extend(node.children)
    return False


def is_valid(code: str, language: str) -> bool:
    """Valid code (`parses`) that defines a function (`defines_function`): an expression
    such as `defdefdef_` compiles, but it is not an answer to "write this function"."""
    if language == "javascript":  # one parse tells both
        code = strip_fences(code)
        if not code.strip():
            return False
        nodes, valid = top_nodes(code, language)
        return valid and has_function(nodes)
    return parses(code, language) and defines_function(code, language)


@register
class PassRate(Metric):
    """Share of predictions that are valid code defining a function (0-1): Python `compile()`
    in Python 3 (so Python 2 `print 'x'` fails) and a top-level `def`; JavaScript tree-sitter
    parse without ERROR/MISSING nodes (a class method alone counts) and a function, arrow
    function or method in it. Markdown fences are stripped; references are not looked at."""

    name = "pass_rate"
    languages = ("python", "javascript")

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = [float(is_valid(p, language)) for p in predictions]
        return MetricResult(corpus=sum(values) / len(values) if values else 0.0, per_example=values)

    def signature(self) -> str:
        ts = importlib.metadata.version("tree-sitter-javascript")
        return (
            f"pass_rate|python:compile:{sys.version_info[0]}.{sys.version_info[1]}"
            f"|javascript:tree-sitter-javascript:{ts}:methods-ok|fences:stripped"
            "|must-define-function"
        )
