"""tree-sitter parsers for the code metrics (one per language, built once)."""

from __future__ import annotations

import functools

import tree_sitter_javascript
import tree_sitter_python
from tree_sitter import Language, Node, Parser

GRAMMARS = {"python": tree_sitter_python, "javascript": tree_sitter_javascript}
# CodeSearchNet's JavaScript functions include class methods (`name(args) { ... }`), which
# parse only inside a class body: such code is parsed wrapped in this class.
_CLASS_OPEN, _CLASS_CLOSE = "class _ {\n", "\n}"


@functools.cache
def parser(language: str) -> Parser:
    if language not in GRAMMARS:
        raise ValueError(f"no tree-sitter grammar for {language!r}; known: {', '.join(GRAMMARS)}")
    return Parser(Language(GRAMMARS[language].language()))


def tree(code: str, language: str):
    """tree-sitter's (error-tolerant) syntax tree of `code`."""
    return parser(language).parse(code.encode("utf-8", errors="replace"))


def top_nodes(code: str, language: str) -> tuple[list[Node], bool]:
    """The top-level nodes of `code` and whether it parsed without ERROR or MISSING nodes.

    JavaScript that fails alone but parses as a class member (a method) gives the members,
    not the wrapper, so a method and the same method in a reference compare as equals.
    """
    root = tree(code, language).root_node
    if not root.has_error or language != "javascript":
        return list(root.children), not root.has_error
    wrapped = tree(_CLASS_OPEN + code + _CLASS_CLOSE, language).root_node
    if wrapped.has_error:
        return list(root.children), False
    body = wrapped.children[0].child_by_field_name("body")
    return [c for c in body.children if c.type not in ("{", "}")], True
