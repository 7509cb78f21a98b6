"""Datasets in, canonical rows out: chat rows for SFT, raw text for pretraining, split with a fixed seed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from alignkit.config import DataConfig
from alignkit.data.formats import (
    RowError,
    check_not_conversation_text,
    detect_chat_format,
    has_tool_results,
    iter_assistant_turns,
    read_rows,
    renders_tool_results,
    renders_tools,
    saved_validation_split,
    shows_tools,
    text_field,
    to_messages,
    tools_field,
    without_weights,
)
from alignkit.data.validate import convert_all
from alignkit.errors import AlignkitError, option

CHAT_EXPECTED = (
    "one of: {messages: [{role, content}]}, ShareGPT {conversations: [{from, value}]}, "
    "Alpaca {instruction, input, output} (Dolly: context, response), {prompt, completion}; "
    "tool calls: OpenAI `tool_calls`/`tool` turns or ShareGPT `function_call`/`observation` turns "
    "(or Hermes `<tool_call>` text in `gpt` turns and `tool` turns), "
    "plus a `tools` column"
)


Rows = list[dict[str, Any]]


def load_chat(paths: list[str]) -> list[dict[str, Any]]:
    """Canonical `{"messages": [...]}` rows from every file in `paths`, each file validated whole first."""
    rows = []
    for path in paths:
        rows += convert_all(read_rows(path), chat_row, CHAT_EXPECTED)
    return rows


def chat_row(data: dict[str, Any]) -> dict[str, Any]:
    fmt = detect_chat_format(data)
    if fmt == "text":
        check_not_conversation_text(data)
        raise RowError("text", "raw text rows are for `alignkit pretrain`; SFT needs chat rows")
    messages, tools = to_messages(data, fmt, weights=True), tools_field(data)
    if next(iter_assistant_turns(messages), None) is None:
        raise RowError("messages", "every assistant turn has weight 0 (nothing to learn from)")
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def check_tool_template(tokenizer: Any, rows: list[dict[str, Any]], source: str) -> None:
    """Refuse chat rows with tools or tool calls (from `source`, named in the error) when the tokenizer's chat
    template does not render them: training would teach calls to tools the model is never shown. Calls written as
    text (Hermes rows) need only a template that renders their results' `tool` turns."""
    if any(shows_tools(row) for row in rows) and not renders_tools(tokenizer):
        raise AlignkitError(
            f"{source}: rows use tool calls but the model's chat template does not render tools",
            "use a model whose template supports tools",
        )
    if any(has_tool_results(row) for row in rows) and not renders_tool_results(tokenizer):
        raise AlignkitError(
            f"{source}: rows have `tool` turns (tool results) but the model's chat template does not render a "
            "`tool` role",
            "use a model whose template has a tool role, or make the results user turns "
            '(ShareGPT `"from": "human"`, messages `"role": "user"`)',
        )


def row_conversations(row: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The conversations a canonical row is rendered as: its messages; or its prompt with each reply (chosen,
    rejected, completion), or alone (RL prompts)."""
    if isinstance(row.get("messages"), list):
        return [row["messages"]]
    prompt = row.get("prompt")
    if not isinstance(prompt, list):
        return []
    replies = [row[key] for key in ("chosen", "rejected", "completion") if isinstance(row.get(key), list)]
    return [[*prompt, *reply] for reply in replies] or [prompt]


def check_template_renders(tokenizer: Any, rows: list[dict[str, Any]], source: str) -> None:
    """Refuse rows (from `source`) that the model's chat template refuses, in one line with its own reason, before
    training or sampling: Gemma's and Mistral's templates raise on a system message, some on turns that do not
    alternate user/assistant."""
    from jinja2 import TemplateError

    refused, reason, roles = 0, "", ""
    for row in rows:
        for conversation in row_conversations(row):
            turns = without_weights(conversation)
            try:
                tokenizer.apply_chat_template(turns, tools=row.get("tools") or None, tokenize=False)
            except TemplateError as error:
                if not refused:
                    reason, roles = str(error), ", ".join(turn["role"] for turn in turns)
                refused += 1
                break
    if refused:
        system = "system" in roles.split(", ")
        raise AlignkitError(
            f"{source}: the model's chat template refuses {refused} of {len(rows)} rows ({reason}; first: roles "
            f"{roles})",
            "fold the system message into the first user turn, or drop it"
            if system
            else "make the turns fit the model's template, e.g. alternate user and assistant",
        )


def load_text(paths: list[str], key: str = "data.paths", field: str = "text") -> list[dict[str, str]]:
    """`{"text": ...}` rows for pretraining (and the forgetting check's general text); chat rows are accepted and
    flattened to their contents. `key`: the option that named `paths`; `field`: the column that holds the text
    (pretraining: TRL's `trainer.dataset_text_field`)."""
    expected = f"{{{field}: str}} rows, or .txt/.md files"
    if key == "data.paths":  # pretraining, where TRL's own option names the column
        expected += f"; for text in another column: {option('trainer.dataset_text_field', 'COLUMN')}"
    rows = []
    for path in paths:
        rows += convert_all(read_rows(path, key), lambda row: text_row(row, field), expected)
    return rows


def text_row(data: dict[str, Any], field: str = "text") -> dict[str, str]:
    if field in data:
        return {"text": text_field(data, field)}
    fmt = detect_chat_format(data)
    if fmt == "unknown":
        raise RowError(field, "missing")
    return {"text": "\n\n".join(m["content"] for m in to_messages(data, fmt))}


def prompt_completion(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL's conversational prompt/completion rows: one per assistant turn (history masked, reply trained).

    Rows with tools give every example a `tools` column, JSON text (SFTTrainer parses it): as nested lists, Arrow
    would merge all rows' schemas into one, filling each with the others' parameters as None."""
    with_tools = any("tools" in row for row in rows)
    return [
        {"prompt": history, "completion": [reply]}
        | ({"tools": json.dumps(row["tools"]) if "tools" in row else None} if with_tools else {})
        for row in rows
        for history, reply in iter_assistant_turns(row["messages"])
    ]


def conversation_examples(
    rows: list[dict[str, Any]], tokenizer: Any, prompt_loss: bool = False
) -> list[dict[str, Any]] | None:
    """One tokenized example per conversation, `input_ids` and `assistant_masks` (TRL builds the labels from it):
    every trained assistant turn once, in its conversation, instead of one example per turn that repeats the earlier
    turns. The mask covers the tokens each turn's prompt->completion example would train, where TRL would put them
    (after the common prefix of the prompt and prompt+reply renders), and the context is the same; with
    `prompt_loss` (`trainer.completion_only_loss: false`) it covers every token up to the last trained reply. None
    when the template does not render some conversation's turns as prefixes of the whole (templates that rewrite
    earlier turns, e.g. dropping past reasoning): then `prompt_completion` is the exact form."""
    from trl.data_utils import common_prefix_length

    def ids(turns: list[dict[str, Any]], tools: Any, generation_prompt: bool = False) -> list[int]:
        rendered = tokenizer.apply_chat_template(
            turns, tools=tools, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True
        )
        return list(rendered["input_ids"])

    examples = []
    for row in rows:
        messages, tools = row["messages"], row.get("tools")
        whole = ids(without_weights(messages), tools)
        mask = [0] * len(whole)
        end = 0
        for history, reply in iter_assistant_turns(messages):
            with_reply = ids([*history, reply], tools)
            if whole[: len(with_reply)] != with_reply:
                return None
            start, end = common_prefix_length(ids(history, tools, generation_prompt=True), with_reply), len(with_reply)
            mask[start:end] = [1] * (end - start)
        if end:  # a conversation without an assistant turn trains nothing, as it makes no per-turn example
            examples.append({"input_ids": whole[:end], "assistant_masks": [1] * end if prompt_loss else mask[:end]})
    return examples


def sft_examples(rows: list[dict[str, Any]], tokenizer: Any, prompt_loss: bool = False) -> list[dict[str, Any]]:
    """SFT's examples: one per conversation where the template allows it, else one per trained assistant turn.
    `prompt_loss`: the prompts are trained too (TRL's `completion_only_loss: false`, which it applies only to the
    per-turn form: a per-conversation example's mask is always applied)."""
    if any(sum(1 for _ in iter_assistant_turns(row["messages"])) > 1 for row in rows):
        per_conversation = conversation_examples(rows, tokenizer, prompt_loss)
        if per_conversation is not None:
            return per_conversation
    return prompt_completion(rows)


def split(
    rows: list[dict[str, Any]], size: float, seed: int, max_rows: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation) with a fixed seed: `size` a fraction of the rows, or from 1 up a number of rows, at most
    `max_rows`; at least one validation row when size > 0 and there are 2+ rows.

    Rows that share a `prompt` (the pairs of one ranking, a prompt's KTO rows) stay on one side: a validation
    figure on prompts the model trained on would measure memory, not generalisation."""
    import json
    import random

    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        key = json.dumps(row["prompt"], sort_keys=True) if "prompt" in row else f"row {i}"
        groups.setdefault(key, []).append(i)
    if size <= 0 or len(groups) < 2:
        return rows, []
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    target = round(size if size >= 1 else len(rows) * size)
    target = min(len(rows) - 1, max_rows or target, max(1, target))
    held: set[int] = set()
    for members in order[:-1]:  # whole prompts, until the share is reached; never every prompt
        if len(held) >= target:
            break
        held.update(members)
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def load_split(cfg: DataConfig, load_rows: Callable[[list[str]], Rows]) -> tuple[Rows, Rows, list[str], str]:
    """(train rows, validation rows, data files, where the validation rows came from): explicit validation files,
    else the `validation` (or `test`) split of `datasets` save dirs, else a seeded split of the rows."""
    if not cfg.paths:
        raise AlignkitError(
            "no training data given", f"pass {option('data.paths', ['FILE'])} or data.paths in the config"
        )
    size = cfg.validation_split
    if not (0 <= size < 1 or (size >= 1 and float(size).is_integer())):
        raise AlignkitError(
            f"config: data.validation_split must be a fraction in [0, 1) or a whole number of rows, got {size}",
            f"e.g. {option('data.validation_split', 0.1)} or {option('data.validation_split', 200)} (0: no validation "
            "rows)",
        )
    if cfg.max_validation_rows is not None and cfg.max_validation_rows < 1:
        raise AlignkitError(
            f"config: data.max_validation_rows must be at least 1, got {cfg.max_validation_rows}",
            "set it to 1 or more, or to null for no cap (data.validation_split: 0 holds out none)",
        )
    rows = load_rows(cfg.paths)
    validation_paths = cfg.validation_paths
    if not validation_paths and cfg.validation_split > 0:
        validation_paths = [s for s in map(saved_validation_split, cfg.paths) if s]
    if validation_paths:
        train_rows, eval_rows = rows, load_rows(validation_paths)
        source = f"{'files' if cfg.validation_paths else 'saved split'}: {', '.join(validation_paths)}"
    else:
        cap = cfg.max_validation_rows if size < 1 else None  # a number of rows asked for is taken as it is
        train_rows, eval_rows = split(rows, size, cfg.seed, cap)
        asked = f"{size:g} of the rows" + (f", at most {cap}" if cap else "") if size < 1 else f"{size:g} rows"
        source = f"random split: {len(eval_rows)} of {len(rows)} rows ({asked}, seed {cfg.seed})" if eval_rows else ""
        source = source or "none"
    if cfg.max_rows:
        train_rows = train_rows[: cfg.max_rows]
    return train_rows, eval_rows, [*cfg.paths, *validation_paths], source
