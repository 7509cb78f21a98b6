"""The rows alignkit's steps pass to each other as JSONL files: prompts (from any prompt row format, named by
`prompt_id`), `alignkit generate`'s candidate rows, and the atomic writing of them all."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from alignkit.data.formats import (
    CHAT_ROLES,
    SHAREGPT_CHAT_ROLES,
    RowError,
    alpaca_output_key,
    alpaca_prompt,
    check_not_conversation_text,
    detect_chat_format,
    message_list,
    text_lines,
    user_field,
    with_system_column,
)
from alignkit.data.preferences import preference_row, prompt_turns, shp_as_pair
from alignkit.errors import AlignkitError, option

Messages = list[dict[str, str]]


def prompt_row(data: dict[str, Any]) -> Messages:
    """A prompt as messages from a row with `prompt` or `question` (string, HH-RLHF text or messages), `instruction`
    (+ `input`, `history`), `messages`/`conversations` (tool turns read as in SFT rows; the trailing assistant turns
    dropped: a fresh reply to the last user turn or tool result) or only `chosen`/`rejected` (the turns they share,
    as `alignkit dpo` reads them); a `system` column comes first, as in training rows."""
    return prompt_and_reply(data)[0]


def prompt_and_reply(data: dict[str, Any]) -> tuple[Messages, str | None]:
    """`prompt_row`'s prompt and the reply the row holds after it, if any (a held-out SFT row in any chat format):
    the last of the trailing assistant turns, Alpaca's `output`, or `completion`/`response` (text, or messages ending
    with an assistant turn). None for a prompt-only row, and for a KTO row labelled undesirable (`label: false`)."""
    reply: Any = None
    data = shp_as_pair(data)
    prompt_key = next((key for key in ("prompt", "question") if key in data), None)
    if "chosen" in data and "rejected" in data:  # a pair: the prompt `alignkit dpo` reads (Capybara's goes on in them)
        messages = preference_row(data)["prompt"]
    elif prompt_key:  # text, HH-RLHF text or messages ending with a user turn: the reply is generated after it
        messages = prompt_turns(data, prompt_key)
    elif "instruction" in data:
        messages, reply = alpaca_prompt(data), data.get(alpaca_output_key(data))
    elif "messages" in data or "conversations" in data:
        key = "messages" if "messages" in data else "conversations"
        if detect_chat_format(data) == "sharegpt":
            messages = message_list(data[key], key, "from", "value", roles=SHAREGPT_CHAT_ROLES)
        else:
            messages = message_list(data[key], key, "role", "content", roles=CHAT_ROLES)
        if messages and messages[-1]["role"] == "assistant":
            reply = messages[-1]["content"]
        while messages and messages[-1]["role"] == "assistant":  # generate a fresh reply to the last user turn
            messages = messages[:-1]
        if not messages or messages[-1]["role"] not in ("user", "tool"):  # or to the last tool result
            raise RowError(key, "expected a conversation ending with a user turn (or a tool result)")
    elif "text" in data:  # a line or paragraph of a .txt prompt file, or a `text` column
        check_not_conversation_text(data)
        messages = [{"role": "user", "content": user_field(data, "text")}]
    else:
        raise RowError("prompt", "missing")
    if "prompt" in data:
        completion = data.get("completion", data.get("response"))
        last = completion[-1] if isinstance(completion, list) and completion else None
        reply = last.get("content") if isinstance(last, dict) and last.get("role") == "assistant" else completion
    if data.get("label") is False or not isinstance(reply, str) or not reply.strip():
        reply = None
    return with_system_column(data, messages), reply


def prompt_id(prompt: Messages, tools: list[dict[str, Any]] | None = None) -> str:
    """A prompt's stable id: the first 16 hex digits of the sha256 of its messages, and of its `tools` when it has
    them (the same question with other tools is another prompt; a prompt without tools keeps its id)."""
    content = {"messages": prompt, "tools": tools} if tools else prompt
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def generated_row(
    prompt: Messages,
    texts: list[str],
    record: dict[str, Any],
    greedy: str | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One `alignkit generate` row: the prompt, its id, and each candidate text with `record` (run, model, sampling);
    the candidate equal to `greedy`, the policy's greedy reply, is marked `"greedy": true`; `tools`, the prompt's
    function schemas, when it has them."""
    candidates = [{"text": t, **record, **({"greedy": True} if t == greedy else {})} for t in texts]
    return {
        "prompt_id": prompt_id(prompt, tools),
        "prompt": prompt,
        **({"tools": tools} if tools else {}),
        "candidates": candidates,
    }


def check_output_file(path: Path, overwrite: bool) -> None:
    """Before any work: `path` may be written (it is not a directory, and exists only if `overwrite`)."""
    if path.is_dir():
        raise AlignkitError(
            f"{path}: is a directory, not an output file", f"pass a file path to {option('out')}, e.g. out.jsonl"
        )
    if path.exists() and not overwrite:
        raise AlignkitError(
            f"{path}: output file exists", f"pass {option('overwrite', True)} or choose another {option('out')}"
        )


def write_jsonl(path: Path, rows: list[dict[str, Any]], overwrite: bool = False) -> None:
    """Write rows atomically; never replace an existing file unless asked."""
    check_output_file(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def partial_file(path: Path) -> Path:
    """Where a command writing `path` keeps the rows done so far (`out.jsonl.partial`), renamed to `path` at the end."""
    return path.with_name(path.name + ".partial")


def start_partial(path: Path, overwrite: bool, resume: bool, command: str) -> list[dict[str, Any]]:
    """Before any work, for a command that saves its rows as it goes: with `resume`, the rows an interrupted run
    saved (a last row cut off by a kill is dropped from the file); otherwise none, and an interrupted run's rows
    are refused rather than lost unless `overwrite` says to start over."""
    check_output_file(path, overwrite)
    partial = partial_file(path)
    if partial.is_dir():
        raise AlignkitError(
            f"{partial}: is a directory, not {command}'s saved rows", f"move it, or choose another {option('out')}"
        )
    if not resume:
        if partial.exists() and not overwrite:
            count = len(saved_rows(partial))
            raise AlignkitError(
                f"{partial}: an interrupted `alignkit {command}` saved {count} rows here",
                f"pass {option('resume', True)} to continue it, or {option('overwrite', True)} to start over",
            )
        partial.unlink(missing_ok=True)
        return []
    if not partial.is_file():
        raise AlignkitError(f"{path}: nothing to resume (no {partial.name})", f"leave out {option('resume', True)}")
    return saved_rows(partial)


def saved_rows(partial: Path) -> list[dict[str, Any]]:
    """The whole rows of a partial file; a last line cut off mid-write is removed from the file."""
    raw = partial.read_bytes()
    whole = raw[: raw.rfind(b"\n") + 1]
    if len(whole) < len(raw):
        with open(partial, "r+b") as f:
            f.truncate(len(whole))
    rows = []
    for number, line in enumerate(text_lines(whole.decode("utf-8")), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise AlignkitError(
                f"{partial}:line {number}: not a JSON row", f"pass {option('overwrite', True)} to start over"
            ) from None
    return rows


def check_resumable(partial: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """The rows being resumed were made by the same model and sampling (`saved` vs `current`, e.g. run, model,
    sampling): a file mixing two settings would be recorded as one."""
    for key, value in current.items():
        before = saved.get(key, value)
        if isinstance(value, dict) and isinstance(before, dict):  # name the sampling option that differs
            key, before, value = next(
                ((f"{key}.{k}", before.get(k), v) for k, v in value.items() if before.get(k, v) != v), (key, 0, 0)
            )
        if before != value:
            raise AlignkitError(
                f"{partial}: its rows were made with {key}={before}, not {value}",
                f"resume with the interrupted command's options, or start over: {option('overwrite', True)} without "
                f"{option('resume', True)}",
            )


def append_partial(path: Path, rows: list[dict[str, Any]]) -> None:
    """Add rows to `path`'s partial file, flushed: an interrupted command keeps them for `--resume`."""
    partial = partial_file(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def finish_partial(path: Path) -> None:
    """The partial file, now complete, becomes `path` in one rename (an older `path` is replaced only now)."""
    partial = partial_file(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.touch()
    os.replace(partial, path)
