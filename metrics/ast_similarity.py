"""AST similarity: how alike the two programs' syntax trees are, ignoring names and literals."""

from __future__ import annotations

import ast
import importlib.metadata
import sys

import rapidfuzz
from rapidfuzz.distance import Indel

from metrics import Metric, MetricResult, register
from metrics._parsers import top_nodes
from metrics._text import strip_fences
from metrics.pass_rate import parses

# Implied by a node's place (a Name being read or assigned), so they only add noise.
_PY_SKIPPED = (ast.expr_context,)
# tree-sitter marks comments as named nodes; Python's `ast` has none, so neither do we.
_TS_SKIPPED = {"comment"}


def python_node_types(code: str) -> list[str] | None:
    """Pre-order sequence of Python `ast` node class names; None when `ast` cannot parse it."""
    try:
        root = ast.parse(code)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
        return None
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, _PY_SKIPPED):
            out.append(type(node).__name__)
        stack.extend(reversed(list(ast.iter_child_nodes(node))))
    return out


def tree_sitter_node_types(code: str, language: str) -> list[str]:
    """Pre-order sequence of tree-sitter's named node types (error-tolerant, so a reference
    that does not parse still gets a sequence; its ERROR nodes count as types)."""
    return node_types(top_nodes(code, language)[0])


def node_types(nodes: list) -> list[str]:
    """Pre-order sequence of the named node types of tree-sitter `nodes` and their subtrees."""
    out: list[str] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        if node.is_named and node.type not in _TS_SKIPPED:
            out.append(node.type)
        stack.extend(reversed(node.children))
    return out


def pair_similarity(prediction: str, reference: str, language: str) -> float:
    if language == "python":
        if not parses(prediction, language):
            return 0.0
        prediction, reference = strip_fences(prediction), strip_fences(reference)
        pred, ref = python_node_types(prediction), python_node_types(reference)
        if ref is None or pred is None:
            # A Python 2 reference (CodeSearchNet has some): both sides through tree-sitter,
            # which parses what it can; the two kinds of sequence must never be mixed.
            pred = tree_sitter_node_types(prediction, language)
            ref = tree_sitter_node_types(reference, language)
        return Indel.normalized_similarity(pred, ref)
    # One parse of the prediction says both whether it parses (as `parses` asks it) and what
    # its node types are.
    prediction = strip_fences(prediction)
    if not prediction.strip():
        return 0.0
    nodes, valid = top_nodes(prediction, language)
    if not valid:
        return 0.0
    reference_types = tree_sitter_node_types(strip_fences(reference), language)
    return Indel.normalized_similarity(node_types(nodes), reference_types)


@register
class AstSimilarity(Metric):
    """Indel similarity (rapidfuzz, 1 - (insertions + deletions) / (len a + len b)) of the
    pre-order sequences of syntax-tree node types of prediction and reference (0-1).

    Python: `ast` node class names (without Load/Store/Del contexts); a reference `ast` cannot
    parse (Python 2) falls back to tree-sitter node types on both sides. JavaScript:
    tree-sitter-javascript named node types, comments left out, class methods parsed inside a
    class. A prediction that does not parse (as pass_rate parses it) scores 0. Identifiers
    and literal values are not node types, so renaming variables keeps 1.0. Tree edit
    distance would be exact but is about 100x slower (0.25 s a pair).
    """

    name = "ast_similarity"
    languages = ("python", "javascript")

    def compute(self, predictions: list[str], references: list[str], language: str) -> MetricResult:
        values = [pair_similarity(p, r, language) for p, r in zip(predictions, references)]
        return MetricResult(corpus=sum(values) / len(values) if values else 0.0, per_example=values)

    def signature(self) -> str:
        grammars = ",".join(
            f"{g}:{importlib.metadata.version(g)}"
            for g in ("tree-sitter", "tree-sitter-python", "tree-sitter-javascript")
        )
        python = f"{sys.version_info[0]}.{sys.version_info[1]}"
        return (
            f"ast_similarity|python:ast:{python}(py2 refs:tree-sitter)|javascript:tree-sitter"
            f"|preorder node types|indel|rapidfuzz:{rapidfuzz.__version__}|{grammars}"
        )
