"""CodeSearchNet cleaning: one raw row in, one example (docstring's first paragraph -> the
function without its docstring) or the reason it is dropped, CodeSearchNet's filters and the leak
check included. Reading sources and choosing examples is `benchmark.data`'s business."""

from __future__ import annotations

import ast
import hashlib
import io
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Example:
    id: str
    language: str
    docstring: str  # the model's input: the docstring's first paragraph
    code: str  # the target: the function without its docstring
    repo: str = ""
    path: str = ""
    func_name: str = ""
    url: str = ""


@dataclass
class RawRow:
    """One row as read from a source, before cleaning; `origin` says where it came from."""

    fields: dict[str, Any]
    split: str
    origin: str


# ---------------------------------------------------------------- cleaning


def first_paragraph(docstring: str) -> str:
    """The docstring's first paragraph with whitespace folded (CodeSearchNet's summary)."""
    text = docstring.strip()
    paragraph = re.split(r"\n\s*\n", text, maxsplit=1)[0]
    return " ".join(paragraph.split())


def _fold(text: str) -> str:
    return " ".join(text.split())


_PY_DOCSTRING = re.compile(
    r"""(?P<head>\A[^\n]*?(?:def|class)\s[^\n]*(?:\n[^\n]*?)*?:[ \t]*(?:\#[^\n]*)?\n)"""
    r"""(?P<doc>[ \t]*[rRuUbB]{0,2}(?P<q>\"\"\"|'''|"|')(?:.|\n)*?(?P=q)[ \t]*(?:\n|\Z))"""
)


def strip_python_docstring(code: str) -> str:
    """Remove the function's docstring statement (by `ast` when it parses, else by pattern)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        tree = None
    if (
        tree is not None
        and tree.body
        and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ):
        body = tree.body[0].body
        first = body[0] if body else None
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            lines = code.splitlines(keepends=True)
            start, end = first.lineno - 1, first.end_lineno  # 0-based start, exclusive end
            head = lines[start][: first.col_offset]
            tail = lines[end - 1][first.end_col_offset :]
            if head.strip() or tail.strip().lstrip(";").strip():
                # The docstring shares a line with other code: cut just its characters.
                kept = head + tail.lstrip().lstrip(";").lstrip()
                return "".join(lines[:start]) + kept + "".join(lines[end:])
            return "".join(lines[:start] + lines[end:])
        return code
    match = _PY_DOCSTRING.search(code)
    if match:
        return code[: match.start("doc")] + code[match.end("doc") :]
    return code


_JSDOC = re.compile(r"\A\s*/\*\*.*?\*/\s*", re.DOTALL)


def strip_javascript_docstring(code: str) -> str:
    """Remove a leading JSDoc block (CodeSearchNet keeps JSDoc outside `code`, but not always)."""
    return _JSDOC.sub("", code, count=1)


STRIPPERS = {"python": strip_python_docstring, "javascript": strip_javascript_docstring}


def _python_body_is_trivial(code: str) -> bool:
    """True when the body (docstring removed) is only `pass`, `...` or one `raise`."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = tree.body[0].body
    if len(body) != 1:
        return False
    node = body[0]
    is_ellipsis = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    return isinstance(node, (ast.Pass, ast.Raise)) or is_ellipsis


def _comment_free_lines(code: str, language: str) -> int:
    if language == "python":
        try:
            tokens = tokenize.generate_tokens(io.StringIO(code).readline)
            rows = {t.start[0] for t in tokens if t.type not in PY_NON_CODE}
            return len(rows)
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass
    return sum(1 for line in code.splitlines() if line.strip())


PY_NON_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def clean(row: RawRow, language: str, csn_filters: bool) -> Example | str:
    """An `Example`, or the reason (a short key) the row is dropped."""
    f = row.fields
    raw_doc = f["docstring"] or ""
    docstring = first_paragraph(raw_doc)
    code = STRIPPERS.get(language, lambda c: c)(f["code"] or "")
    code = code.strip("\n")
    if not docstring:
        return "no_docstring"
    if not code.strip():
        return "no_code"
    func_name = str(f.get("func_name") or "")
    path = str(f.get("path") or "")
    if csn_filters:
        if len(re.findall(r"\w+|[^\s\w]", docstring)) < 3:
            return "short_docstring"
        # Counted on the function as written (docstring included), as CodeSearchNet did.
        if _comment_free_lines(f["code"], language) < 3:
            return "short_code"
        if "test" in func_name.lower() or "test" in path.lower():
            return "test_function"
        short_name = func_name.rsplit(".", 1)[-1]
        if short_name.startswith("__") and short_name.endswith("__"):
            return "dunder"
        if language == "python" and _python_body_is_trivial(code):
            return "trivial_body"
    # The leak check: any verbatim copy of the summary left in the target drops the example.
    if len(docstring) >= 12 and _fold(docstring) in _fold(code):
        return "docstring_in_code"
    ident = str(f.get("id") or "") or _row_id(f, row.origin)
    return Example(
        id=ident,
        language=language,
        docstring=docstring,
        code=code,
        repo=str(f.get("repo") or ""),
        path=path,
        func_name=func_name,
        url=str(f.get("url") or ""),
    )


def _row_id(fields: dict[str, Any], origin: str) -> str:
    key = "\x1f".join(str(fields.get(k) or "") for k in ("repo", "path", "func_name", "code"))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def fingerprint(examples: Iterable[Example]) -> str:
    """sha256 over the exact examples (ids, inputs and targets), in order."""
    digest = hashlib.sha256()
    for ex in examples:
        for part in (ex.id, ex.language, ex.docstring, ex.code):
            digest.update(part.encode())
            digest.update(b"\x1f")
        digest.update(b"\x1e")
    return digest.hexdigest()
