"""tree-sitter parsers for the code metrics (one per language, built once)."""

from __future__ import annotations

import functools

import tree_sitter_javascript
import tree_sitter_python
from tree_sitter import Language, Parser

GRAMMARS = {"python": tree_sitter_python, "javascript": tree_sitter_javascript}


@functools.cache
def parser(language: str) -> Parser:
    return Parser(Language(GRAMMARS[language].language()))


def tree(code: str, language: str):
    """tree-sitter's (error-tolerant) syntax tree of `code`."""
    return parser(language).parse(code.encode("utf-8", errors="replace"))
