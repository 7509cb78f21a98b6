"""Datasets in, canonical rows out: chat rows for SFT, raw text for pretraining, split with a fixed seed."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.config import DataConfig
from alignkit.data.formats import (
    Row,
    RowError,
    check_not_conversation_text,
    detect_chat_format,
    has_tool_results,
    iter_assistant_turns,
    iter_rows,
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
from alignkit.data.validate import BadRows, convert_all, converted_rows
from alignkit.errors import AlignkitError, option

CHAT_EXPECTED = (
    "one of: {messages: [{role, content}]}, ShareGPT {conversations: [{from, value}]}, "
    "Alpaca {instruction, input, output} (Dolly: context, response), {prompt, completion}; "
    "tool calls: OpenAI `tool_calls`/`tool` turns or ShareGPT `function_call`/`observation` turns "
    "(or Hermes `<tool_call>` text in `gpt` turns and `tool` turns), "
    "plus a `tools` column"
)


Rows = list[dict[str, Any]]


def load_chat(paths: list[str], bad_rows: BadRows | None = None) -> list[dict[str, Any]]:
    """Canonical `{"messages": [...]}` rows from every file in `paths`, each file validated whole first (`bad_rows`:
    training data, whose failing rows `data.skip_bad_rows` leaves out)."""
    rows = []
    for path in paths:
        rows += convert_all(read_rows(path), chat_row, CHAT_EXPECTED, bad_rows, path)
    return rows


def chat_row(data: dict[str, Any]) -> dict[str, Any]:
    fmt = detect_chat_format(data)
    if fmt == "text":
        check_not_conversation_text(data)
        raise RowError("text", "raw text rows are for `alignkit pretrain`; SFT needs chat rows")
    if is_pair_without_reply(data, fmt):
        raise RowError(
            "chosen",
            "a preference pair (chosen/rejected): SFT trains one reply per prompt; train pairs with `alignkit dpo` or "
            "`alignkit reward`, or give SFT {prompt, completion} or {messages} rows",
        )
    messages, tools = to_messages(data, fmt, weights=True), tools_field(data)
    if next(iter_assistant_turns(messages), None) is None:
        raise RowError("messages", "every assistant turn has weight 0 (nothing to learn from)")
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def is_pair_without_reply(data: dict[str, Any], fmt: str) -> bool:
    """Whether a row is a preference pair with no single reply for SFT (UltraFeedback's `messages` column is one)."""
    replies = ("completion", "response", "output")
    return {"chosen", "rejected"} <= data.keys() and fmt not in ("messages", "sharegpt") and not replies & data.keys()


def check_tool_template(tokenizer: Any, rows: list[dict[str, Any]], sources: list[str]) -> None:
    """Refuse chat rows with tools or tool calls (from `sources`, the first such row named in the error) when the
    tokenizer's chat template does not render them: training would teach calls to tools the model is never shown.
    Calls written as text (Hermes rows) need only a template that renders their results' `tool` turns."""
    if any(shows_tools(row) for row in rows) and not renders_tools(tokenizer):
        raise AlignkitError(
            f"{first_row_where(sources, shows_tools)}: rows use tool calls but the model's chat template does not "
            "render tools",
            "use a model whose template supports tools",
        )
    if any(has_tool_results(row) for row in rows) and not renders_tool_results(tokenizer):
        raise AlignkitError(
            f"{first_row_where(sources, has_tool_results)}: rows have `tool` turns (tool results) but the model's chat "
            "template does not render a `tool` role",
            "use a model whose template has a tool role, or make the results user turns "
            '(ShareGPT `"from": "human"`, messages `"role": "user"`)',
        )


def first_row_where(sources: list[str], test: Callable[[dict[str, Any]], bool]) -> str:
    """Where the first chat row of `sources` that `test` holds for is (`file:line N`), for an error about such
    rows (read again: canonical rows do not keep their place); the sources themselves where none is found."""
    for source in sources:
        with contextlib.suppress(AlignkitError):
            for row in read_rows(source):
                with contextlib.suppress(RowError):
                    if test(chat_row(row.data)):
                        return row.where
    return ", ".join(sources)


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


def load_text(
    paths: list[str], key: str = "data.paths", field: str = "text", bad_rows: BadRows | None = None
) -> list[dict[str, str]]:
    """`{"text": ...}` rows for pretraining (and the forgetting check's general text); chat rows are accepted and
    flattened to their contents. A paragraph of a .txt/.md file also names its `document` (the file), which `split`
    holds out whole. `key`: the option that named `paths`; `field`: the column that holds the text (pretraining:
    TRL's `trainer.dataset_text_field`); `bad_rows`: as `load_chat`'s."""
    return [row for path in paths for row in file_texts(path, key, field, bad_rows)]


def file_texts(path: str, key: str, field: str, bad_rows: BadRows | None) -> list[dict[str, str]]:
    """`load_text`'s rows of one file."""
    file_rows = read_rows(path, key)
    documents = {id(row.data): {"document": row.document} for row in file_rows if row.document}
    return convert_all(
        file_rows,
        lambda data: text_row(data, field) | documents.get(id(data), {}),
        text_expected(field, key),
        bad_rows,
        path,
    )


def text_expected(field: str, key: str) -> str:
    expected = f"{{{field}: str}} rows, or .txt/.md files"
    if key == "data.paths":  # pretraining, where TRL's own option names the column
        expected += f"; for text in another column: {option('trainer.dataset_text_field', 'COLUMN')}"
    return expected


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
    figure on prompts the model trained on would measure memory, not generalisation. So do the paragraphs of one
    `document` (a .txt/.md file), held out as `held_out_documents` picks them."""
    import json
    import random

    if size <= 0 or len(rows) < 2:
        return rows, []
    target = validation_target(len(rows), size, max_rows)
    if any("document" in row for row in rows):
        sizes = [len(list(same)) for _, same in itertools.groupby(rows, key=lambda row: row.get("document") or id(row))]
        ranges = held_out_documents(sizes, target, seed)
        held = {i for start, stop in ranges for i in range(start, stop)}
        return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        key = json.dumps(row["prompt"], sort_keys=True) if "prompt" in row else f"row {i}"
        groups.setdefault(key, []).append(i)
    if len(groups) < 2:
        return rows, []
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    held = set()
    for members in order[:-1]:  # whole prompts, until the share is reached; never every prompt
        if len(held) >= target:
            break
        held.update(members)
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def validation_target(rows: int, size: float, max_rows: int | None) -> int:
    """How many of `rows` rows to hold out: `size` a fraction or a number, at most `max_rows`, 1 to rows - 1."""
    target = round(size if size >= 1 else rows * size)
    return min(rows - 1, max_rows or target, max(1, target))


def held_out_documents(sizes: list[int], target: int, seed: int) -> list[tuple[int, int]]:
    """The (start, stop) row ranges to hold out of documents of `sizes` rows, laid end to end: whole documents in a
    seeded order, each that keeps the held rows within twice `target`, until `target` is reached (never every
    document); where none fits (one file, or files each larger than that), one contiguous block of `target` rows at
    a seeded place in a document that holds it. A held-out paragraph's neighbours are then held out too, but at the
    block's two ends."""
    import random

    rng = random.Random(seed)
    starts = list(itertools.accumulate(sizes, initial=0))
    order = list(range(len(sizes)))
    rng.shuffle(order)
    chosen, held = [], 0
    for document in order:
        if held >= target:
            break
        if held + sizes[document] <= 2 * target and held + sizes[document] < starts[-1]:
            chosen.append(document)
            held += sizes[document]
    if chosen:
        return sorted((starts[d], starts[d + 1]) for d in chosen)
    holding = [d for d in range(len(sizes)) if sizes[d] > target] or [max(range(len(sizes)), key=sizes.__getitem__)]
    document = rng.choice(holding)
    block = min(target, sizes[document])
    start = starts[document] + rng.randrange(sizes[document] - block + 1)
    return [(start, start + block)]


def load_split(cfg: DataConfig, load_rows: Callable[[list[str]], Rows]) -> tuple[Rows, Rows, list[str], str]:
    """(train rows, validation rows, data files, where the validation rows came from): explicit validation files,
    else the `validation` (or `test`) split of `datasets` save dirs, else a seeded split of the rows."""
    check_split_settings(cfg)
    size = cfg.validation_split
    rows = load_rows(cfg.paths)
    validation_paths = given_validation_paths(cfg)
    if validation_paths:
        train_rows, eval_rows = rows, load_rows(validation_paths)
        source = f"{'files' if cfg.validation_paths else 'saved split'}: {', '.join(validation_paths)}"
    else:
        cap = cfg.max_validation_rows if size < 1 else None  # a number of rows asked for is taken as it is
        train_rows, eval_rows = split(rows, size, cfg.seed, cap)
        documents = {row["document"] for row in rows if "document" in row}
        whole = len({row.get("document") for row in eval_rows} - {row.get("document") for row in train_rows} - {None})
        kind = held_out_kind(whole, len(documents)) if documents else "random split"
        source = f"{kind}: {len(eval_rows)} of {len(rows)} rows ({asked(size, cap)}, seed {cfg.seed})"
        source = source if eval_rows else "none"
    if cfg.max_rows:
        train_rows = train_rows[: cfg.max_rows]
    return train_rows, eval_rows, [*cfg.paths, *validation_paths], source


# Where a canonical row was read from (absolute paths: a text file's `document`, a pulled pair's policies), not what
# it trains: left out of `rows_digest`, so a run moved with its data reads the same rows.
PLACE_KEYS = frozenset({"document", "candidates_from"})


def rows_digest(rows: Rows | TextStream) -> dict[str, Any]:
    """`{"count", "sha256"}` of the rows a run trains or validates on, in order (the manifest's `rows`), so `--resume`
    can tell that it reads the rows the run started with. A stream's rows are only counted (`"sha256": null`): hashing
    them would read the whole corpus once more."""
    if isinstance(rows, TextStream):
        return {"count": len(rows), "sha256": None}
    digest = hashlib.sha256()
    for row in rows:
        kept = {key: value for key, value in row.items() if key not in PLACE_KEYS}
        digest.update(json.dumps(kept, sort_keys=True, default=str).encode() + b"\n")
    return {"count": len(rows), "sha256": digest.hexdigest()}


def asked(size: float, cap: int | None) -> str:
    """The validation share asked for, as the run's `validation` says it."""
    return f"{size:g} of the rows" + (f", at most {cap}" if cap else "") if size < 1 else f"{size:g} rows"


def held_out_kind(whole_files: int, files: int) -> str:
    """How `held_out_documents` held out rows of text files, as the run's `validation` says it."""
    if whole_files:
        return f"{whole_files} of {files} files held out whole"
    return "a contiguous block of a file held out"


def check_split_settings(cfg: DataConfig) -> None:
    """Refuse a data config without data, or with a validation share or cap that means nothing, in one line."""
    if not cfg.paths:
        raise AlignkitError(
            "no training data given", f"pass {option('data.paths', ['FILE'])} or data.paths in the config"
        )
    check_files_given_once(cfg)
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


def check_files_given_once(cfg: DataConfig) -> None:
    """Refuse a data file given twice (`--data a --data a`: its rows would train twice while the run records the file
    once), or given for both training and validation (a validation loss on trained rows)."""
    seen: dict[str, str] = {}
    for key, paths in (("data.paths", cfg.paths), ("data.validation_paths", cfg.validation_paths)):
        for path in paths:
            local = Path(path).expanduser()
            same = str(local.resolve()) if local.exists() else path
            if same not in seen:
                seen[same] = key
            elif seen[same] == key:
                counted = "train" if key == "data.paths" else "be scored"
                raise AlignkitError(
                    f"{path}: given twice as {option(key)}: its rows would {counted} twice", "pass each file once"
                )
            else:
                raise AlignkitError(
                    f"{path}: given as {option(seen[same])} and as {key}: validation would score rows it trains on",
                    "pass it once",
                )


def given_validation_paths(cfg: DataConfig) -> list[str]:
    """`data.validation_paths`, else the validation (or test) splits of the save dirs among the data paths that are
    not trained on themselves (`data.saved_validation`)."""
    if cfg.validation_paths or cfg.validation_split <= 0 or not cfg.saved_validation:
        return cfg.validation_paths
    return [s for s in map(saved_validation_split, cfg.paths) if s and s not in cfg.paths]


@dataclass(frozen=True)
class TextStream:
    """The training rows of a text corpus read as training goes (`data.streaming`), never held in memory: `paths`
    read in order, the rows of `held` (validation) left out, the first `max_rows` if set. `len` is their number.
    With `skip_bad`, the rows failing the checks are left out as they pass, in every pass (the checks depend on
    the row alone); row numbers count the rows kept."""

    paths: tuple[str, ...]
    field: str  # the column read from data rows (`trainer.dataset_text_field`)
    rows: int  # rows in `paths`, held-out ones included
    held: tuple[tuple[int, int], ...] = ()  # (start, stop) ranges of row numbers across `paths`, from 0
    max_rows: int | None = None
    skip_bad: bool = False  # `data.skip_bad_rows`

    def __len__(self) -> int:
        trained = self.rows - sum(stop - start for start, stop in self.held)
        return min(trained, self.max_rows) if self.max_rows else trained

    def dataset(self, column: str) -> Any:
        """`datasets`' IterableDataset of `{column: text}` rows: one pass."""
        from datasets import Features, IterableDataset, Value

        stream = IterableDataset.from_generator(
            stream_texts, features=Features({column: Value("string")}), gen_kwargs={"stream": self, "column": column}
        )
        return stream.take(self.max_rows) if self.max_rows else stream


def stream_texts(stream: TextStream, column: str) -> Iterator[dict[str, str]]:
    """The generator of `TextStream.dataset`: one pass over its training rows."""
    for index, row in enumerate(iter_text_rows(stream.paths, stream.field, stream.skip_bad)):
        if not any(start <= index < stop for start, stop in stream.held):
            yield {column: row["text"]}


def iter_text_rows(paths: tuple[str, ...] | list[str], field: str, skip_bad: bool = False) -> Iterator[dict[str, str]]:
    """The text rows of `paths` in order; with `skip_bad`, those that fail `text_row`'s checks are left out (a
    stream's passes after `count_text_rows`, which counted and reported them)."""
    for path in paths:
        for row in iter_rows(path):
            try:
                yield text_row(row.data, field)
            except RowError:
                if not skip_bad:
                    raise


def count_text_rows(paths: list[str], field: str, bad_rows: BadRows | None = None) -> list[int]:
    """Every row of `paths` checked as `load_text` checks it (one line naming the first bad row; with
    `bad_rows.skip`, those failing left out and counted per data file, as `load_text` does), one at a time: the rows
    kept of each file, in order."""
    counts: dict[str, int] = {}
    source = [""]  # the file of the row being checked: a folder's rows come from several

    def read(rows: Iterator[Row]) -> Iterator[Row]:
        for row in rows:
            source[0] = row.source
            yield row

    for path in paths:
        read_any = False
        for _ in converted_rows(
            read(iter_rows(path)), lambda row: text_row(row, field), text_expected(field, "data.paths"), bad_rows, path
        ):
            counts[source[0]] = counts.get(source[0], 0) + 1
            read_any = True
        if not read_any:
            raise AlignkitError(f"{path}: no rows (the file is empty)", "add at least one example")
    return list(counts.values())


def stream_text_split(
    cfg: DataConfig, field: str, bad_rows: BadRows | None = None
) -> tuple[TextStream, Rows, list[str], str]:
    """`load_split` for a text corpus that trains as it is read (`data.streaming`): each file checked and its rows
    counted in one pass, then the validation rows, the only ones held in memory: validation files, else whole
    files or a block of one (`held_out_documents`, files as documents). The training rows: a `TextStream`.
    `bad_rows`: as `load_text`'s; skipped rows are left out of every pass of the stream."""
    check_split_settings(cfg)
    skip_bad = bad_rows is not None and bad_rows.skip
    sizes = count_text_rows(cfg.paths, field, bad_rows)
    total, held, source = sum(sizes), [], "none"
    validation_paths = given_validation_paths(cfg)
    if validation_paths:
        eval_rows = [{"text": row["text"]} for row in load_text(validation_paths, field=field, bad_rows=bad_rows)]
        source = f"{'files' if cfg.validation_paths else 'saved split'}: {', '.join(validation_paths)}"
    elif cfg.validation_split > 0 and total >= 2:
        cap = cfg.max_validation_rows if cfg.validation_split < 1 else None
        held = held_out_documents(sizes, validation_target(total, cfg.validation_split, cap), cfg.seed)
        wanted = {i for start, stop in held for i in range(start, stop)}
        last = max(stop for _, stop in held)
        rows = itertools.islice(iter_text_rows(cfg.paths, field, skip_bad), last)
        eval_rows = [{"text": row["text"]} for i, row in enumerate(rows) if i in wanted]
        starts = list(itertools.accumulate(sizes, initial=0))
        kind = held_out_kind(len(set(held) & set(itertools.pairwise(starts))), len(sizes))
        source = f"{kind}: {len(eval_rows)} of {total} rows ({asked(cfg.validation_split, cap)}, seed {cfg.seed})"
    else:
        eval_rows = []
    stream = TextStream(tuple(cfg.paths), field, total, tuple(held), cfg.max_rows, skip_bad)
    return stream, eval_rows, [*cfg.paths, *validation_paths], source
