"""Pass rate: the share of predictions that are syntactically valid code."""

from __future__ import annotations

import importlib.metadata
import sys
import warnings

from metrics import Metric, MetricResult, register
from metrics._parsers import top_nodes
from metrics._text import strip_fences


def is_valid(code: str, language: str) -> bool:
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


@register
class PassRate(Metric):
    """Share of predictions that are valid code (0-1): Python `compile()` in Python 3 (so
    Python 2 `print 'x'` fails), JavaScript tree-sitter parse without ERROR/MISSING nodes (a
    class method alone counts). Markdown fences are stripped; references are not looked at."""

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
        )
