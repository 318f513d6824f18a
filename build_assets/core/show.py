"""Values as they appear in one-line messages: quoted, escaped and shortened."""

from __future__ import annotations

import reprlib
from typing import Any

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 4
_repr.maxlevel = 2


def show(value: Any, limit: int = 60) -> str:
    """`value` as it appears in a one-line message: quoted, escaped and shortened."""
    if not isinstance(value, str):
        return _repr.repr(value)
    text = value if value.isprintable() else value.encode("unicode_escape").decode("ascii")
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[: limit - 1]}…' ({len(value):,} characters)"
