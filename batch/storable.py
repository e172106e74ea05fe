"""What every supported database can store: text without NUL characters or lone surrogates.

SQLite refuses a lone surrogate (``"\\ud800"``) when it encodes the row at commit, PostgreSQL
refuses a NUL character in text and in JSON. Such input is refused at validation, with the
rest of a request's errors, so no commit ever fails on it.
"""

from __future__ import annotations

from typing import Any

NUL_MESSAGE = "must not contain NUL characters (\\u0000)"
SURROGATE_MESSAGE = "must be valid Unicode text: it holds a lone surrogate"


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return NUL_MESSAGE
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def value_problem(value: Any) -> str | None:
    """Why a JSON value (its strings and keys, at any depth) cannot be stored, or None."""
    pending = [value]
    while pending:  # a loop, not recursion: a deeply nested value must not overflow the stack
        item = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return problem
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return None
