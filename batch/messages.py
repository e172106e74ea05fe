"""What a validation error says to a person: one short message per field, every field at once.

Pydantic words its errors for programmers (``String should match pattern '^[A-Za-z0-9]...'``,
``Value error, since must be before until``). The admin, the API and the CLI show these instead:
lower case, no pattern, the value that was refused when it helps (``must be a whole number, not
'ten'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

#: A refused value is quoted in a message only up to this many characters.
SHOWN_VALUE_LENGTH = 40
DATE_TIME_EXAMPLE = "2026-12-01T06:00:00+00:00"


def field_messages(
    exc: ValidationError, *, whole: str, patterns: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each field's first problem, worded for people; ``whole`` keys a problem of the model
    as a whole. ``patterns`` words a field's regular expression (``{pattern: rule}``)."""
    messages: dict[str, str] = {}
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or whole
        messages.setdefault(field, message_of(error, patterns or {}))
    return messages


def message_of(error: ErrorDetails, patterns: Mapping[str, str]) -> str:
    """One pydantic error in words: its type's wording, else pydantic's own made lower case."""
    context: dict[str, Any] = dict(error.get("ctx") or {})
    if error["type"] == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        return patterns.get(pattern) or f"does not have the expected form ({pattern})"
    wording = WORDING.get(error["type"])
    if wording is not None:
        return wording(context, error.get("input"))
    return _plain(error["msg"])


def _refused(value: Any) -> str:
    """ ", not 'ten'" for a short scalar value; "" for anything else."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    shown = repr(value)
    if len(shown) > SHOWN_VALUE_LENGTH:
        return ""
    return f", not {shown}"


def _plain(message: str) -> str:
    """Pydantic's message without its prefixes, starting in lower case."""
    for prefix, replacement in (
        ("Value error, ", ""),
        ("Assertion failed, ", ""),
        ("Input should be ", "must be "),
        ("Input should have ", "must have "),
    ):
        if message.startswith(prefix):
            message = replacement + message[len(prefix) :]
            break
    return message[:1].lower() + message[1:] if message[1:2].islower() else message


def _typed(kind: str) -> Callable[[dict[str, Any], Any], str]:
    return lambda context, value: f"must be {kind}{_refused(value)}"


def _bound(words: str, key: str) -> Callable[[dict[str, Any], Any], str]:
    return lambda context, value: f"must be {words} {context.get(key)}"


def _characters(words: str, key: str) -> Callable[[dict[str, Any], Any], str]:
    def say(context: dict[str, Any], value: Any) -> str:
        count = context.get(key)
        return f"{words} {count} character{'' if count == 1 else 's'}"

    return say


def _items(words: str, key: str) -> Callable[[dict[str, Any], Any], str]:
    def say(context: dict[str, Any], value: Any) -> str:
        count = context.get(key)
        return f"{words} {count} item{'' if count == 1 else 's'}"

    return say


A_DATE_TIME = f"a date and time with its zone, such as {DATE_TIME_EXAMPLE}"

#: Wording by pydantic error type: (context, refused value) -> message.
WORDING: dict[str, Callable[[dict[str, Any], Any], str]] = {
    "missing": lambda context, value: "required",
    "extra_forbidden": lambda context, value: "not a known field",
    "string_type": _typed("text"),
    "int_type": _typed("a whole number"),
    "int_parsing": _typed("a whole number"),
    "int_from_float": _typed("a whole number"),
    "int_parsing_size": lambda context, value: "too large a number",
    "float_type": _typed("a number"),
    "float_parsing": _typed("a number"),
    "finite_number": lambda context, value: "must be a finite number",
    "bool_type": _typed("true or false"),
    "bool_parsing": _typed("true or false"),
    "dict_type": lambda context, value: "must be a table of names and values",
    "list_type": lambda context, value: "must be a list",
    "greater_than": _bound("more than", "gt"),
    "greater_than_equal": _bound("at least", "ge"),
    "less_than": _bound("less than", "lt"),
    "less_than_equal": _bound("at most", "le"),
    "multiple_of": _bound("a multiple of", "multiple_of"),
    "string_too_short": lambda context, value: (
        "required"
        if context.get("min_length") == 1
        else _characters("must have at least", "min_length")(context, value)
    ),
    "string_too_long": _characters("must have at most", "max_length"),
    "too_short": _items("must have at least", "min_length"),
    "too_long": _items("must have at most", "max_length"),
    "literal_error": lambda context, value: f"must be {context.get('expected')}{_refused(value)}",
    "enum": lambda context, value: f"must be {context.get('expected')}{_refused(value)}",
    "datetime_type": _typed(A_DATE_TIME),
    "datetime_parsing": _typed(A_DATE_TIME),
    "datetime_from_date_parsing": _typed(A_DATE_TIME),
    "timezone_aware": lambda context, value: (
        f"must name its zone, such as {DATE_TIME_EXAMPLE} (Z for UTC)"
    ),
    "date_type": _typed("a date, such as 2026-12-01"),
    "date_parsing": _typed("a date, such as 2026-12-01"),
    "date_from_datetime_parsing": _typed("a date, such as 2026-12-01"),
}
