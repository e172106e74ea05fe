"""simple_toml gives exactly what tomllib gives: the same document, or the same error."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch import simple_toml

#: (text, whether simple_toml parses it itself rather than handing it to tomllib)
DOCUMENTS = [
    ('job = "reports.sales_summary"\ncron = "5 * * * *"\n', True),
    ('job = "x"\n\n# a comment\n[params]\nolder_than_days = 30 # days\n', True),
    ('name = "x"\n[params]\nname = "y"\n', True),
    ("a=+1\nb=-0\nc = true\nd = false\n", True),
    ("i = 99999999999999999999\nj = -9223372036854775809\n", True),
    ('a = "x"\r\n[ p ]\r\nn = 1\r\n', True),
    ('a = "é ü 日本 \t #"\n', True),
    ("", True),
    (" \t\n\n#\r\n", True),
    ("[p]\nx = 1\n[q]\np = 2\n", True),
    ("a = 1979-05-27T07:32:00Z\nb = 1979-05-27\n", False),
    ("f = inf\ng = 1.5\n", False),
    ('"quoted" = "v"\n', False),
    ('s = """\nmulti"""\n', False),
    ("a.b = 1\n", False),
    ("a = 0x10\nb = 1_000\n", False),
    ('a = "\\u00e9"\n', False),
    ("a = [1, 2]\nb = {c = 1}\n", False),
    ("a = 1\na = 2\n", False),
    ("[p]\n[p]\n", False),
    ("p = 1\n[p]\n", False),
    ("a = 1\r", False),
    ("\r", False),
    ('a = "x\r"\n', False),
    ('a = "\x00"\n', False),
    ("a = 1 # c\x7f\n", False),
    ("\ufeffa = 1\n", False),
    ("a = 00\n", False),
    ("a = TRUE\n", False),
    ('a = "x" b\n', False),
    ("a =\n", False),
    ("= 1\n", False),
    ('a = "open\n', False),
]


def outcome(parse: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", parse(text)
    except tomllib.TOMLDecodeError as exc:
        return "error", str(exc)


@pytest.mark.parametrize(("text", "plain"), DOCUMENTS)
def test_the_same_document_or_the_same_error_as_tomllib(text: str, plain: bool) -> None:
    assert outcome(simple_toml.loads, text) == outcome(tomllib.loads, text)
    assert (simple_toml._plain(text) is not None) is plain


PIECES = st.sampled_from(
    ["a", "b", "params", "-", "_", "1", " ", "\t", "=", '"', "'", "#", "[", "]", "\n", "\r",
     "\r\n", "+", "0", "9", "true", "false", ".", "é", "\\", "\x00", "{", "}", ",", "x = 1\n"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES, max_size=30).map("".join))
def test_any_text_parses_as_tomllib_parses_it(text: str) -> None:
    assert outcome(simple_toml.loads, text) == outcome(tomllib.loads, text)
