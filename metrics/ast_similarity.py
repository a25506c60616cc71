"""AST similarity: how alike the two programs' syntax trees are, ignoring names and literals."""

from __future__ import annotations

import importlib.metadata

import rapidfuzz
from rapidfuzz.distance import Indel

from metrics import Metric, MetricResult, register
from metrics._parsers import tree
from metrics._text import strip_fences
from metrics.pass_rate import is_valid


def node_types(code: str, language: str) -> list[str]:
    """Pre-order sequence of tree-sitter's named node types (error-tolerant, so CodeSearchNet's
    Python 2 references still get a tree)."""
    out, stack = [], [tree(strip_fences(code), language).root_node]
    while stack:
        node = stack.pop()
        if node.is_named:
            out.append(node.type)
        stack.extend(reversed(node.children))
    return out


@register
class AstSimilarity(Metric):
    """Indel similarity of the pre-order sequences of tree-sitter node types (0-1); 0 when the
    prediction is not valid code (as pass_rate decides). Identifiers and literal values are not
    node types, so renaming variables keeps 1.0. Tree edit distance would be exact but is about
    100x slower (0.25 s a pair)."""

    name = "ast_similarity"
    languages = ("python", "javascript")

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = []
        for prediction, reference in zip(predictions, references):
            if not is_valid(prediction, language):
                values.append(0.0)
                continue
            pred, ref = node_types(prediction, language), node_types(reference, language)
            values.append(Indel.normalized_similarity(pred, ref))
        return MetricResult(corpus=sum(values) / len(values) if values else 0.0, per_example=values)

    def signature(self) -> str:
        grammars = ",".join(
            f"{g}:{importlib.metadata.version(g)}"
            for g in ("tree-sitter-python", "tree-sitter-javascript")
        )
        return (
            "ast_similarity|tree-sitter node types:preorder|indel"
            f"|rapidfuzz:{rapidfuzz.__version__}|{grammars}"
        )
