"""The error every layer raises for bad input from the user."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user: the message says what was wrong and how to fix it."""
