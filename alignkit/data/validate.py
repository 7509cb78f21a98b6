"""Whole-file validation: every row is checked before training; problems name file, line and field. Training data
may leave out the rows that fail instead (`data.skip_bad_rows`, `BadRows`)."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from alignkit import distributed
from alignkit.data.formats import OASST_TREE, Row, RowError
from alignkit.errors import AlignkitError, option

logger = logging.getLogger("alignkit")

MAX_REPORTED = 5
# public datasets whose rows need a choice alignkit won't guess (which preference, which two of N answers): the
# columns that name them, and the fix
KNOWN_SHAPES = (
    (
        {"response_0", "response_1", "better_response_id", "safer_response_id"},
        "PKU-SafeRLHF",
        "make `chosen`/`rejected` from response_0/response_1 by `better_response_id` (helpfulness) or "
        "`safer_response_id` (harmlessness): the two often disagree",
    ),
    (
        {"prompt", "answers", "num_responses"},
        "Nectar",
        "its `answers` are ranked (`rank` 1 is best), not paired: make `chosen`/`rejected` from two of them",
    ),
    (
        {"instruction", "completions"},
        "UltraFeedback (not binarized)",
        "its `completions` are rated, not paired: use a binarized export (`chosen`/`rejected`, `messages`) "
        "or pick the completions by their ratings",
    ),
    (
        {"prompt", "response", "helpfulness"},
        "HelpSteer",
        "its responses are scored one by one: SFT reads prompt/response; for KTO add a `label` "
        "(e.g. from `helpfulness`), for pairs pair two responses to one prompt",
    ),
    OASST_TREE,
    (
        {"query", "answers", "tools"},
        "xLAM function-calling",
        "convert each row to `messages` with an assistant `tool_calls` turn (its `answers`), plus the `tools` column",
    ),
    (
        {"system", "chat"},
        "glaive function-calling",
        "`chat` is USER:/ASSISTANT:/FUNCTION RESPONSE: text: convert it to `messages` with `tool_calls`/`tool` "
        "turns, plus a `tools` column",
    ),
)


@dataclasses.dataclass
class BadRows:
    """How a training stage treats the rows of its data files that fail the checks (`data.skip_bad_rows`): refused,
    the file whole (the default: the error names the option), or with `skip` left out and counted per data file."""

    skip: bool = False
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)  # data file (as given) -> rows left out


def convert_all(
    rows: Iterable[Row],
    convert: Callable[[dict[str, Any]], Any],
    expected: str,
    bad_rows: BadRows | None = None,
    source: str = "",
) -> list[Any]:
    """Apply `convert` to every row; if any row fails, raise one error for the first problem and count the rest.

    `bad_rows`: the rows are training data of file `source` (None: prompts and other inputs, never skipped)."""
    return list(converted_rows(rows, convert, expected, bad_rows, source))


def converted_rows(
    rows: Iterable[Row],
    convert: Callable[[dict[str, Any]], Any],
    expected: str,
    bad_rows: BadRows | None = None,
    source: str = "",
) -> Iterator[Any]:
    """`convert_all` one row at a time (a corpus checked without being held): the error comes after the last row.
    With `bad_rows.skip`, failing rows are left out instead, counted under `source` and said in one warning; a file
    with no row left is still refused."""
    first, problems, total = "", 0, 0
    for row in rows:
        total += 1
        try:
            yield convert(row.data)
        except RowError as exc:
            first = first or f"{row.where}: {exc}{did_you_mean(row.data, str(exc), exc.field)}"
            problems += 1
    if not problems:
        return
    skip = bad_rows is not None and bad_rows.skip
    if skip and problems < total:
        assert bad_rows is not None
        bad_rows.skipped[source] = bad_rows.skipped.get(source, 0) + problems
        if distributed.is_local_main():  # every process of a launched run reads the data: one line per terminal
            logger.warning(
                "%s: skipped %s of %s rows that fail the checks (first: %s)",
                source,
                f"{problems:,}",
                f"{total:,}",
                first.removeprefix(f"{source}:"),
            )
        return
    if skip:
        raise AlignkitError(
            f"{source}: {f'all {total:,} rows fail' if total > 1 else 'its one row fails'} the checks, none left to "
            f"train on (first: {first.removeprefix(f'{source}:')})",
            f"expected {expected}",
        )
    more = f" (+{problems - 1} more rows with problems)" if problems > 1 else ""
    fix = f"; or skip them: {option('data.skip_bad_rows', True)}" if bad_rows is not None else ""
    raise AlignkitError(first + more, f"expected {expected}{fix}")


def did_you_mean(data: dict[str, Any], problem: str, field: str = "") -> str:
    """For a missing field, point at a near-miss key in the row (`mesages` for `messages`); a field that is there but
    null (JSON null, a short CSV row's absent cell) is said to be empty."""
    if field in data and data[field] is None:
        return " (it is null)"
    if "missing" not in problem and "expected one of" not in problem:
        return ""
    for columns, name, fix in KNOWN_SHAPES:
        if columns <= data.keys():
            return f"; the row looks like {name} data: {fix}"
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
