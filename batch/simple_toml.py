"""The plain TOML that schedule files are written in, parsed fast; tomllib for anything else.

tomllib is pure Python and parses about 7,000 small files a second here: most of an import of
10,000 files. Schedule files hold a handful of ``key = value`` lines and maybe a ``[params]``
table, so those are parsed here line by line, by rules that give exactly what tomllib gives:
bare keys, basic strings without escapes, decimal integers, booleans, comments, one level of
tables. A line outside those rules, or a key given twice, hands the whole text to tomllib,
which parses it (or words the error) as it always did.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

#: Characters TOML refuses in strings and comments: the controls but tab.
_TEXT = r"[^\x00-\x08\x0a-\x1f\x7f"
_LINE = re.compile(
    r"[ \t]*(?:"
    r"(?P<key>[A-Za-z0-9_-]+)[ \t]*=[ \t]*(?:"
    rf'"(?P<string>{_TEXT}"\\]*)"'
    r"|(?P<integer>[+-]?(?:0|[1-9][0-9]*))"
    r"|(?P<boolean>true|false)"
    r")"
    r"|\[[ \t]*(?P<table>[A-Za-z0-9_-]+)[ \t]*\]"
    rf")?[ \t]*(?:#{_TEXT}]*)?"
)


def loads(text: str) -> dict[str, Any]:
    """What ``tomllib.loads(text)`` returns (or raises), faster for plain files."""
    parsed = _plain(text)
    return tomllib.loads(text) if parsed is None else parsed


def _plain(text: str) -> dict[str, Any] | None:
    lines = text.replace("\r\n", "\n")
    if "\r" in lines:
        return None  # a carriage return that ends no line
    document: dict[str, Any] = {}
    table = document
    for line in lines.split("\n"):
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        key, name = match["key"], match["table"]
        if name is not None:
            if name in document:
                return None  # a table defined twice, or over a key: tomllib words the error
            table = document[name] = {}
        elif key is not None:
            if key in table:
                return None
            if match["string"] is not None:
                table[key] = match["string"]
            elif match["integer"] is not None:
                table[key] = int(match["integer"])
            else:
                table[key] = match["boolean"] == "true"
    return document
