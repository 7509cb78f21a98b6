"""Whole-file validation: every row is checked before training; problems name file, line and field."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from alignkit.data.formats import Row, RowError
from alignkit.errors import AlignkitError

MAX_REPORTED = 5


def convert_all(rows: list[Row], convert: Callable[[dict[str, Any]], Any], expected: str) -> list[Any]:
    """Apply `convert` to every row; if any row fails, raise one error for the first problem and count the rest."""
    converted, problems = [], []
    for row in rows:
        try:
            converted.append(convert(row.data))
        except RowError as exc:
            problems.append(f"{row.where}: {exc}{did_you_mean(row.data, str(exc), exc.field)}")
    if problems:
        more = f" (+{len(problems) - 1} more rows with problems)" if len(problems) > 1 else ""
        raise AlignkitError(problems[0] + more, f"expected {expected}")
    return converted


def did_you_mean(data: dict[str, Any], problem: str, field: str = "") -> str:
    """For a missing field, point at a near-miss key in the row (`mesages` for `messages`); a field that is there but
    null (JSON null, a short CSV row's absent cell) is said to be empty."""
    if field in data and data[field] is None:
        return " (it is null)"
    if "missing" not in problem and "expected one of" not in problem:
        return ""
    wanted = [
        "messages",
        "conversations",
        "instruction",
        "output",
        "prompt",
        "completion",
        "chosen",
        "rejected",
        "text",
    ]
    for key in data:
        close = difflib.get_close_matches(str(key), wanted, n=1, cutoff=0.75)
        if close and close[0] != key:
            return f"; found `{key}`, did you mean `{close[0]}`?"
    return f"; the row has fields {sorted(map(str, data))}" if data else "; the row is empty"
