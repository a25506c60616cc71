"""Shared text handling for code metrics."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\s\w]")
_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def code_tokens(text: str) -> list[str]:
    """Identifiers, numbers and single punctuation marks: `is_even(n)==0` -> 5 tokens."""
    return _TOKEN.findall(text)


def strip_fences(text: str) -> str:
    """Remove a surrounding markdown code fence, if the whole text is one."""
    match = _FENCE.match(text)
    return match.group(1) if match else text
