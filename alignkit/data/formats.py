"""Read data files and convert each known row format to alignkit's canonical rows.

Readers: JSONL, JSON (a list of objects), CSV/TSV, Parquet, plain text (pretraining), a `datasets` save dir, or a hub
id. Every row keeps where it came from (`file:line N`) so a problem can be reported at its place.

Chat formats converted to `{"messages": [{"role", "content"}, ...]}`: OpenAI messages (`messages`, or
`conversations` with role/content), ShareGPT (`conversations` with from/value), Alpaca (`instruction`, `input`,
`output`), prompt/completion (strings or message lists; `response` is accepted for `completion`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
JSON_COLUMNS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected")


@dataclass
class Row:
    """One input row and where it is (for error messages)."""

    where: str  # e.g. "data.jsonl:line 7"
    data: dict[str, Any]


class RowError(Exception):
    """A problem with one field of one row; collected, then reported with the row's place."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field `{field}`: {problem}")


def read_rows(source: str) -> list[Row]:
    """All rows of a data file, directory or hub dataset; errors name the file and line."""
    path = Path(source).expanduser()
    if path.is_dir():
        rows = read_saved_dataset(path)
    elif path.is_file():
        suffix = path.suffix.lower()
        readers: dict[str, Callable[[Path], list[Row]]] = {
            ".jsonl": read_jsonl,
            ".ndjson": read_jsonl,
            ".json": read_json,
            ".csv": read_csv,
            ".tsv": read_csv,
            ".parquet": read_parquet,
            ".txt": read_text,
            ".md": read_text,
        }
        if suffix not in readers:
            raise AlignkitError(
                f"{path}: unsupported file type `{suffix or '(none)'}`",
                "use .jsonl, .json, .csv, .tsv, .parquet, .txt or a `datasets` save dir",
            )
        rows = readers[suffix](path)
    elif path.exists() or source.startswith((".", "/", "~")) or path.suffix:
        raise AlignkitError(f"{source}: data file not found", "check the path passed to --data")
    else:
        rows = read_hub_dataset(source)
    if not rows:
        raise AlignkitError(f"{source}: no rows (the file is empty)", "add at least one example")
    return rows


def decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise AlignkitError(
            f"{path}:line {line}: bytes are not valid UTF-8 (at byte {exc.start})", "save the file as UTF-8"
        ) from None


def read_jsonl(path: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AlignkitError(
                f"{path}:line {number}: not valid JSON ({exc.msg} at column {exc.colno})",
                "each line must be one complete JSON object",
            ) from None
        rows.append(Row(f"{path}:line {number}", expect_object(data, f"{path}:line {number}")))
    return rows


def read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(decode(path)) if path.stat().st_size else []
    except json.JSONDecodeError as exc:
        raise AlignkitError(f"{path}:line {exc.lineno}: not valid JSON ({exc.msg})", "fix the JSON syntax") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"data": [...]} style wrappers
    if not isinstance(data, list):
        raise AlignkitError(f"{path}: expected a JSON list of objects", "or use JSONL, one object per line")
    return [Row(f"{path}:item {i}", expect_object(item, f"{path}:item {i}")) for i, item in enumerate(data, start=1)]


def read_csv(path: Path) -> list[Row]:
    text = decode(path)
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    rows = []
    try:
        for record in reader:
            where = f"{path}:line {reader.line_num}"
            if None in record:
                raise AlignkitError(f"{where}: more cells than header columns", "quote cells that contain commas")
            rows.append(Row(where, parse_json_columns(dict(record), where)))
    except csv.Error as exc:
        raise AlignkitError(f"{path}:line {reader.line_num}: malformed CSV ({exc})", "fix quoting") from None
    return rows


def read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError variants for damaged files
        raise AlignkitError(f"{path}: cannot read Parquet ({exc})", "is the file complete?") from None
    return [Row(f"{path}:row {i}", record) for i, record in enumerate(table.to_pylist(), start=1)]


def read_text(path: Path) -> list[Row]:
    """Plain text for pretraining: paragraphs separated by blank lines become rows."""
    rows, start, block = [], 1, []
    for number, line in enumerate([*decode(path).splitlines(), ""], start=1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            rows.append(Row(f"{path}:line {start}", {"text": "\n".join(block)}))
            block = []
    return rows


def read_saved_dataset(path: Path) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise AlignkitError(
            f"{path}: not a `datasets` save dir ({exc})", "pass a file, or a save_to_disk dir"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise AlignkitError(f"{path}: dataset has no `train` split (has {list(loaded)})", "save a train split")
        loaded = loaded["train"]
    return [Row(f"{path}:row {i}", record) for i, record in enumerate(loaded, start=1)]


def read_hub_dataset(name: str) -> list[Row]:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split="train")
    except Exception as exc:  # offline, unknown id, gated: all user-fixable
        raise AlignkitError(
            f"{name}: not a local file and not loadable from the hub ({type(exc).__name__})",
            "check the path, or go online for hub datasets",
        ) from None
    return [Row(f"{name}:row {i}", record) for i, record in enumerate(loaded, start=1)]


def expect_object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AlignkitError(f"{where}: expected a JSON object, got {type(data).__name__}", "one object per row")
    return data


def parse_json_columns(record: dict[str, Any], where: str) -> dict[str, Any]:
    """CSV cells that hold JSON lists (e.g. a `messages` column) are parsed."""
    for column in JSON_COLUMNS:
        cell = record.get(column)
        if isinstance(cell, str) and cell.lstrip().startswith("["):
            try:
                record[column] = json.loads(cell)
            except json.JSONDecodeError as exc:
                raise AlignkitError(
                    f"{where}: column `{column}` is not valid JSON ({exc.msg})", "fix the cell"
                ) from None
    return record


# ---- chat rows -> canonical messages ------------------------------------------------------------------------


def detect_chat_format(data: dict[str, Any]) -> str:
    """Name of the chat format a row is in: messages | sharegpt | alpaca | prompt_completion | text | unknown."""
    if "messages" in data:
        return "messages"
    if "conversations" in data:
        turns = data["conversations"]
        first = turns[0] if isinstance(turns, list) and turns else {}
        return "sharegpt" if isinstance(first, dict) and "from" in first else "messages"
    if "instruction" in data:
        return "alpaca"
    if "prompt" in data:
        return "prompt_completion"
    if "text" in data:
        return "text"
    return "unknown"


def to_messages(data: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    """Convert one row of format `fmt` to a checked list of messages; raises RowError naming the field."""
    if fmt == "messages":
        key = "messages" if "messages" in data else "conversations"
        messages = message_list(data[key], key, role_key="role", content_key="content", roles=None)
    elif fmt == "sharegpt":
        messages = message_list(data["conversations"], "conversations", "from", "value", roles=SHAREGPT_ROLES)
    elif fmt == "alpaca":
        instruction = text_field(data, "instruction")
        extra = data.get("input") or ""
        if not isinstance(extra, str):
            raise RowError("input", f"expected a string, got {type(extra).__name__}")
        messages = [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra.strip() else instruction}]
        if isinstance(data.get("system"), str) and data["system"].strip():
            messages.insert(0, {"role": "system", "content": data["system"]})
        messages.append({"role": "assistant", "content": text_field(data, "output")})
    elif fmt == "prompt_completion":
        completion_key = "response" if "response" in data and "completion" not in data else "completion"
        messages = turns_or_text(data, "prompt", "user") + turns_or_text(data, completion_key, "assistant")
    else:
        raise RowError("messages", "expected one of: messages, conversations, instruction+output, prompt+completion")
    check_conversation(messages, fmt)
    return messages


def message_list(
    turns: Any, key: str, role_key: str, content_key: str, roles: dict[str, str] | None
) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise RowError(key, "expected a non-empty list of messages")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"{key}[{i}]", f"expected an object with `{role_key}` and `{content_key}`")
        for needed in (role_key, content_key):
            if needed not in turn:
                raise RowError(f"{key}[{i}].{needed}", "missing")
        role, content = turn[role_key], turn[content_key]
        allowed = roles or {r: r for r in ROLES}
        if role not in allowed:
            raise RowError(f"{key}[{i}].{role_key}", f"unknown role {role!r} (expected {', '.join(allowed)})")
        if not isinstance(content, str):
            raise RowError(f"{key}[{i}].{content_key}", f"expected a string, got {type(content).__name__}")
        messages.append({"role": allowed[role], "content": content})
    return messages


def turns_or_text(data: dict[str, Any], key: str, role: str) -> list[dict[str, str]]:
    value = data.get(key)
    if isinstance(value, list):
        return message_list(value, key, "role", "content", roles=None)
    return [{"role": role, "content": text_field(data, key)}]


def text_field(data: dict[str, Any], key: str) -> str:
    if key not in data or data[key] is None:
        raise RowError(key, "missing")
    value = data[key]
    if not isinstance(value, str):
        raise RowError(key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(key, "is empty")
    return value


def check_conversation(messages: list[dict[str, str]], fmt: str) -> None:
    key = "conversations" if fmt == "sharegpt" else "messages"
    for i, message in enumerate(messages):
        if message["role"] == "system" and i != 0:
            raise RowError(f"{key}[{i}].role", "a system message may only come first")
        if message["role"] != "system" and not message["content"].strip():
            raise RowError(f"{key}[{i}].content", "is empty")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(key, "has no assistant turn (nothing to learn from)")
    first = next(i for i, m in enumerate(messages) if m["role"] != "system")
    if messages[first]["role"] != "user":
        raise RowError(f"{key}[{first}].role", "the conversation must start with a user turn (after any system turn)")


def iter_assistant_turns(messages: list[dict[str, str]]) -> Iterator[tuple[list[dict[str, str]], dict[str, str]]]:
    """(history, reply) for every assistant turn: each becomes one prompt→completion example, so every assistant
    turn is trained and the prompt is masked, with any chat template."""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            yield messages[:i], message
