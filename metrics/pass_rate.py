"""Pass rate: the share of predictions that are syntactically valid code."""

from __future__ import annotations

import importlib.metadata
import warnings

from metrics import Metric, MetricResult, register
from metrics._parsers import tree
from metrics._text import strip_fences


def is_valid(code: str, language: str) -> bool:
    """Python: `compile()` (stricter than `ast.parse`); JavaScript: tree-sitter without
    ERROR or MISSING nodes. A surrounding markdown fence is stripped first."""
    code = strip_fences(code)
    if not code.strip():
        return False
    if language == "python":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. invalid escape sequences: still valid code
            try:
                compile(code, "<prediction>", "exec", dont_inherit=True)
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                return False
        return True
    if language == "javascript":
        return not tree(code, language).root_node.has_error
    raise ValueError(f"pass_rate knows python and javascript, not {language!r}")


@register
class PassRate(Metric):
    """Share of predictions that parse: Python `compile()`, JavaScript tree-sitter (0-1)."""

    name = "pass_rate"
    languages = ("python", "javascript")

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = [float(is_valid(p, language)) for p in predictions]
        return MetricResult(corpus=sum(values) / len(values) if values else 0.0, per_example=values)

    def signature(self) -> str:
        ts = importlib.metadata.version("tree-sitter-javascript")
        return f"pass_rate|python:compile|javascript:tree-sitter-javascript:{ts}|fences:stripped"
