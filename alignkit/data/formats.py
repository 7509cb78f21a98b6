"""Read data files and convert each known row format to alignkit's canonical rows.

Readers: JSONL, JSON (a list of objects, one row object, a `{"data": [...]}` wrapper, or JSON Lines saved as .json),
CSV/TSV, Parquet, plain text (pretraining), a `datasets` save dir (its `train` split, or `DIR:SPLIT`), or a hub id.
Files compressed with gzip, bzip2 or xz (`rows.jsonl.gz`, as hub dumps come) are read through their codec.
Every row keeps where it came from (`file:line N`) so a problem can be reported at its place, and its text has `\n`
line ends whatever the file's (`Row`): a `\r\n` or a lone `\r` inside a CSV cell, a JSON string or a Parquet value
is read as `\n`.

Chat formats converted to `{"messages": [{"role", "content"}, ...]}`: OpenAI messages (`messages`, or
`conversations` with role/content), ShareGPT (`conversations` with from/value), Alpaca (`instruction`, `input`,
`output`; Dolly's `context`/`response`; LLaMA-Factory's `history` of earlier [instruction, response] pairs),
prompt/completion (strings or message lists; `response` is accepted for `completion`; a `prompt` in HH-RLHF
`Human:`/`Assistant:` text is read as turns, a preamble before its first `Human:` turn the system turn). A `system`
column, in any of them, becomes the first (system) turn.
A `"weight": 0` on an assistant turn (OpenAI messages, ShareGPT as axolotl reads it) stays on it in SFT rows: the turn
is context, not trained.

Tool calling, in the form transformers chat templates render: an assistant turn carries `tool_calls`
(`[{"type": "function", "function": {"name", "arguments": {...}}}]`, arguments given as JSON text are parsed), a
result is a `tool` turn, and the row keeps its `tools` (function schemas). Input: OpenAI `tool_calls`/`tool` turns,
or ShareGPT `function_call` (JSON `{name, arguments}`) / `observation` turns; `tools` a list or a JSON string.
Calls written as text (NousResearch's Hermes function-calling rows: the tools listed in the system turn, `<tool_call>`
text in `gpt` turns, the results in `tool` turns) stay text, as axolotl and LLaMA-Factory train them: a `tool` turn
after an assistant turn without structured calls is a result the chat template renders as a plain `tool` turn.
"""

from __future__ import annotations

import ast
import bz2
import csv
import gzip
import io
import json
import logging
import lzma
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from alignkit import distributed
from alignkit.errors import AlignkitError, first_line, option
from alignkit.paths import offline_without_network, saved_split

logger = logging.getLogger("alignkit")

ROLES = ("system", "user", "assistant")
# OpenAI's `developer` turn is what its newer models call the system turn (the instructions a product gives)
MESSAGE_ROLES = {**{role: role for role in ROLES}, "developer": "system"}
CHAT_ROLES = {**MESSAGE_ROLES, "tool": "tool"}
# the model's turns of the original ShareGPT dumps are also named for the assistant that gave them
SHAREGPT_ROLES = {
    **{"system": "system", "human": "user", "user": "user"},
    **{name: "assistant" for name in ("gpt", "assistant", "chatgpt", "bing", "bard")},
}
# LLaMA-Factory's tool turns: `function_call` (an assistant turn, the call as JSON) and `observation` (its result);
# Hermes function-calling rows' `tool` turns (results of calls written as `<tool_call>` text)
SHAREGPT_CHAT_ROLES = {**SHAREGPT_ROLES, "function_call": "tool_call", "observation": "tool", "tool": "tool"}
TOOL_ROLES = {"tool", "function_call", "observation"}
MESSAGE_COLUMNS = ("messages", "conversations")  # always message lists
TEXT_OR_MESSAGE_COLUMNS = ("prompt", "completion", "chosen", "rejected")
# a field only a row has: a .json file holding one object with one of them is that row, not a {"data": [...]} wrapper
ROW_KEYS = {*MESSAGE_COLUMNS, *TEXT_OR_MESSAGE_COLUMNS, "instruction", "question", "text"}
# where a reply opens in a chat rendered as text: such a `text` is a whole conversation, not one text or one prompt
CHAT_MARKUP = {
    "<|im_start|>assistant": "ChatML",
    "<|start_header_id|>assistant": "Llama 3",
    "<|assistant|>": "Zephyr",
    "<start_of_turn>model": "Gemma",
    "[/INST]": "Llama 2 `[INST]`",
    "### Assistant:": "`### Human:`/`### Assistant:`",
    "\n\nAssistant:": "HH-RLHF `Human:`/`Assistant:`",
}
# OpenAssistant's oasst1 rows (one message per row, linked by parent_id): their columns, name, and the fix; one of
# `validate.KNOWN_SHAPES`, and refused here as a `text` row
OASST_TREE = (
    {"message_id", "parent_id", "role"},
    "OpenAssistant message-tree",
    "one message per row, linked by parent_id: join each thread into a {messages: [{role, content}]} row first",
)
# where tool-calling rows are read: said where a row with tool calls is refused (preference and KTO rows)
NO_TOOLS_HERE = "only SFT rows and prompts take tool calls and a `tools` column: train tool use with `alignkit sft`"
# a data file's compression, by its last suffix: `rows.jsonl.gz` is read as JSONL through gzip
COMPRESSED: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_TURN_INSIDE = re.compile(r"\n\n(?:Human|Assistant):")  # another HH-RLHF turn in a message's text
HH_OPEN_CUE = re.compile(r"\n\nAssistant:\s*$")  # an HH-RLHF prompt's last line: the reply follows it
# a line end in text or between a file's lines: Unix `\n`, Windows `\r\n`, old Mac `\r` (not the other characters
# str.splitlines takes, as U+2028, which JSON holds unescaped inside a string)
LINE_END = re.compile(r"\r\n?|\n")
NOT_UNIX_LINE_END = re.compile(r"\r\n?")
TURN_NAMES = {"user": "a user turn", "assistant": "a reply", "system": "a system message", "tool": "a tool result"}


@dataclass
class Row:
    """One input row and where it is (for error messages)."""

    where: str  # e.g. "data.jsonl:line 7"
    data: dict[str, Any]
    document: str | None = None  # the text file a paragraph row is part of (validation holds out whole documents)

    def __post_init__(self) -> None:
        self.data = unix_line_ends(self.data)

    @property
    def source(self) -> str:
        """The file (or save dir split) the row is in: `where` less its line or row number."""
        return self.where.rpartition(":")[0]


def unix_line_ends(value: Any) -> Any:
    """`value` with the Windows (`\\r\\n`) and old Mac (`\\r`) line ends in its text read as `\\n`, in nested lists and
    objects too: text written on Windows or a Mac is the same text to the chat template and the checks
    (`\\n\\nHuman:`) from every file type."""
    if isinstance(value, str):
        return NOT_UNIX_LINE_END.sub("\n", value) if "\r" in value else value  # most text has none: one scan
    if isinstance(value, dict):
        return {key: unix_line_ends(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unix_line_ends(item) for item in value]
    return value


class RowError(Exception):
    """A problem with one field of one row; collected, then reported with the row's place.

    `looks_like` names the format the row was read as, when the row's fields made that a guess."""

    def __init__(self, field: str, problem: str, looks_like: str = "") -> None:
        prefix = f"row looks like {looks_like} data: " if looks_like else ""
        super().__init__(f"{prefix}field `{field}`: {problem}")
        self.field, self.problem, self.looks_like = field, problem, looks_like


@contextmanager
def looks_like(fmt: str) -> Iterator[None]:
    """RowErrors raised inside name `fmt` ("row looks like sharegpt preference data: field `chosen`: ...")."""
    try:
        yield
    except RowError as exc:
        if exc.looks_like:
            raise
        raise RowError(exc.field, exc.problem, fmt) from None


def read_rows(source: str, key: str = "data.paths") -> list[Row]:
    """All rows of a data file, directory or hub dataset; errors name the file and line. `key`: the option that
    named `source` (`option`), for the fix of a missing file."""
    path, split = saved_split(source)
    if path.is_dir() and is_saved_dataset(path):
        rows = read_saved_dataset(path, split)
    elif path.is_dir():
        rows = read_folder(path, split)
    elif path.is_file():
        rows = READERS[checked_suffix(path)](path)
    elif path.exists() or source.startswith((".", "/", "~")) or path.suffix:
        raise AlignkitError(f"{source}: data file not found", f"check the path passed to {option(key)}")
    else:
        rows = read_hub_dataset(source)
    if not rows:
        raise AlignkitError(f"{source}: no rows (the file is empty)", "add at least one example")
    return rows


def iter_rows(source: str, key: str = "data.paths") -> Iterator[Row]:
    """The rows of a local `source` as `read_rows` reads them, one at a time: .txt, .md, JSONL and Parquet files and
    save dirs are never held whole in memory (.json, CSV and TSV files are read whole, one file at a time). The
    caller says when there are none."""
    path, split = saved_split(source)
    if path.is_dir() and is_saved_dataset(path):
        yield from iter_saved_dataset(path, split)
    elif path.is_dir():
        for file in folder_files(path, split):
            yield from iter_file(file)
    elif path.is_file():
        yield from iter_file(path)
    elif path.exists() or source.startswith((".", "/", "~")) or path.suffix:
        raise AlignkitError(f"{source}: data file not found", f"check the path passed to {option(key)}")
    else:
        raise AlignkitError(
            f"{source}: data.streaming reads local files, not hub datasets",
            "save the dataset with save_to_disk (or download its files) and pass that path",
        )


def iter_file(path: Path) -> Iterator[Row]:
    suffix = checked_suffix(path)
    reader = LAZY_READERS.get(suffix)
    return reader(path) if reader else iter(READERS[suffix](path))


def checked_suffix(path: Path) -> str:
    """The suffix that picks the file's reader (`data_suffix`), refused in one line where no reader takes it."""
    suffix = data_suffix(path)
    if suffix not in READERS:
        shown = "".join(path.suffixes[-2:]) if path.suffix.lower() in COMPRESSED else suffix
        raise AlignkitError(
            f"{path}: unsupported file type `{shown or '(none)'}`",
            "use .jsonl, .json, .csv, .tsv, .parquet, .txt, .md (or one of them compressed: .jsonl.gz, .csv.bz2, "
            "...), a folder of them or a `datasets` save dir",
        )
    return suffix


def data_suffix(path: Path) -> str:
    """The suffix that says what a file holds: `.jsonl` for `rows.jsonl` and for `rows.jsonl.gz`."""
    if path.suffix.lower() in COMPRESSED:
        return Path(path.stem).suffix.lower()
    return path.suffix.lower()


@contextmanager
def open_binary(path: Path) -> Iterator[Any]:
    """The file's bytes, decompressed where its suffix names a codec (`COMPRESSED`); a damaged or truncated
    compressed file is one error naming it."""
    codec = COMPRESSED.get(path.suffix.lower())
    try:
        with (codec or open)(path, "rb") as file:
            yield file
    except (EOFError, lzma.LZMAError, OSError) as exc:  # gzip.BadGzipFile is an OSError
        if codec is None:
            raise
        raise AlignkitError(f"{path}: cannot decompress ({exc})", "is the file complete?") from None


def read_prompt_rows(source: str, key: str) -> list[Row]:
    """The rows of a prompt file (`generate --prompts`, `eval --prompts`, `synth --seeds`, ...): as `read_rows`, but a
    .txt file holds one prompt per line, or one per paragraph where blank lines separate them (a prompt over several
    lines). Each is a `{"text"}` row."""
    path = Path(source).expanduser()
    if data_suffix(path) != ".txt" or not path.is_file():
        return read_rows(source, key)
    lines = text_lines(decode(path).strip())
    if not lines or any(not line.strip() for line in lines):  # empty (said by read_rows), or paragraphs
        return read_rows(source, key)
    return [Row(f"{path}:line {number}", {"text": line}) for number, line in enumerate(lines, start=1)]


def decode(path: Path) -> str:
    with open_binary(path) as file:
        raw = file.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise AlignkitError(
            f"{path}:line {line}: bytes are not valid UTF-8 (at byte {exc.start})", "save the file as UTF-8"
        ) from None


def read_jsonl(path: Path) -> list[Row]:
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[Row]:
    """The rows of a JSON Lines file, read one line at a time; a file whose first line is no whole JSON value (a JSON
    list saved as .jsonl, pretty-printed objects) is read as a .json file is."""
    if not first_line_is_json(path):
        try:
            rows = read_json(path)
        except AlignkitError:
            check_first_row(path)  # JSON Lines whose first line is cut off: said at that line, not where JSON fails
            raise
        yield from rows
        return
    for number, line in enumerate(decoded_lines(path), start=1):
        if line.strip():
            yield jsonl_row(path, number, line)


def jsonl_row(path: Path, number: int, line: str) -> Row:
    """Line `number` of a JSON Lines file as a row, or refused naming that line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise AlignkitError(
            f"{path}:line {number}: not valid JSON ({json_problem(exc)})", "each line must be one complete JSON object"
        ) from None
    return Row(f"{path}:line {number}", expect_object(data, f"{path}:line {number}"))


def check_first_row(path: Path) -> None:
    """For a .jsonl file that is not valid JSON as a whole: when its first line opens an object and the next line is no
    part of it (a whole JSON object, a line that does not go on with the first's JSON, or no line at all), the file is
    JSON Lines with a broken first line: refused at that line."""
    lines = ((number, line) for number, line in enumerate(decoded_lines(path), start=1) if line.strip())
    (number, first), second = next(lines), next(lines, None)
    if first.lstrip().startswith("{") and (
        second is None or is_json_object(second[1]) or not goes_on_with(first, second[1])
    ):
        jsonl_row(path, number, first)


def goes_on_with(first: str, second: str) -> bool:
    """Whether `second` can be the next line of the JSON value `first` starts (pretty-printed JSON), as a line after a
    lone `{` always can: read as one text, the JSON is not broken before `second`'s first character."""
    if first.strip() == "{":
        return True
    text = f"{first}\n{second}"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.pos > len(text) - len(second.lstrip())
    return True


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def json_problem(exc: json.JSONDecodeError) -> str:
    """What is wrong and where on its line, e.g. `Unterminated string starting at column 32`."""
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


def first_line_is_json(path: Path) -> bool:
    """Whether the first non-blank line of a file is a whole JSON value, as each line of JSON Lines is (or is no JSON
    at all, which the JSON Lines reader then names by its line)."""
    lines = decoded_lines(path)
    try:
        first = next((line.strip() for line in lines if line.strip()), "")
    finally:
        lines.close()
    if not first.startswith(("[", "{")):
        return True
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return not first.startswith("[")


def read_json(path: Path) -> list[Row]:
    """A JSON list of objects, one object that is a row, or a `{"data": [...]}`-style wrapper; objects one after
    another (JSON Lines saved as .json, as common on the hub, or pretty-printed objects) are each a row."""
    text = decode(path)
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):  # an object, then more values
            return json_values(path, text)
        if not text[exc.pos :].strip():  # cut off: name the last line there is, not the one past the end
            line = text.rstrip().count("\n") + 1
            raise AlignkitError(
                f"{path}:line {line}: not valid JSON (the file ends before the JSON does)",
                "is the file complete? fix or remove its last row",
            ) from None
        raise AlignkitError(f"{path}:line {exc.lineno}: not valid JSON ({exc.msg})", "fix the JSON syntax") from None
    if isinstance(data, dict) and ROW_KEYS & data.keys():
        data = [data]
    elif isinstance(data, dict):  # a {"data": [...]} wrapper, maybe with metadata ({"version": 1}) beside the list
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) > 1:
            raise AlignkitError(
                f"{path}: holds several lists ({', '.join(lists)}), not one list of rows",
                "save each split as its own file (e.g. the validation rows for data.validation_paths)",
            )
        data = data[lists[0]] if lists else data
    if not isinstance(data, list):
        raise AlignkitError(f"{path}: expected a JSON list of objects", "or use JSONL, one object per line")
    return [Row(f"{path}:item {i}", expect_object(item, f"{path}:item {i}")) for i, item in enumerate(data, start=1)]


def json_values(path: Path, text: str) -> list[Row]:
    """The objects of a text of JSON values one after another (whitespace between them), each named by the line it
    starts on."""
    decoder, rows, at, line = json.JSONDecoder(), [], 0, 1
    while True:
        start = len(text) - len(text[at:].lstrip())
        if start == len(text):
            return rows
        line += text.count("\n", at, start)
        try:
            data, at = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise AlignkitError(
                f"{path}:line {exc.lineno}: not valid JSON ({json_problem(exc)})",
                "each row must be one complete JSON object",
            ) from None
        rows.append(Row(f"{path}:line {line}", expect_object(data, f"{path}:line {line}")))
        line += text.count("\n", start, at)


def read_csv(path: Path) -> list[Row]:
    """The rows of a CSV/TSV file, each named by the line it starts on (a quoted cell may span lines)."""
    text = io.StringIO(decode(path), newline="")  # rows end in \n, \r\n or \r; the csv module reads cells' own
    reader = csv.DictReader(text, delimiter="\t" if data_suffix(path) == ".tsv" else ",")
    rows = []
    try:
        if reader.fieldnames is None:  # reads the header; an empty file has none
            return []
        end = reader.line_num  # the header's last line: the first row starts after it
        for record in reader:
            where = f"{path}:line {end + 1}"
            end = reader.line_num
            if None in record:
                raise AlignkitError(f"{where}: more cells than header columns", "quote cells that contain commas")
            rows.append(Row(where, parse_json_columns(dict(record), where)))
    except csv.Error as exc:
        raise AlignkitError(f"{path}:line {reader.line_num}: malformed CSV ({exc})", "fix quoting") from None
    return rows


def read_parquet(path: Path) -> list[Row]:
    return list(iter_parquet(path))


def iter_parquet(path: Path) -> Iterator[Row]:
    """The rows of a Parquet file, read a batch at a time."""
    import pyarrow.parquet as pq

    compressed = path.suffix.lower() in COMPRESSED
    with open_binary(path) if compressed else nullcontext(path) as source:
        try:
            batches = pq.ParquetFile(source).iter_batches(batch_size=1024)
            number = 0
            for batch in batches:
                for record in batch.to_pylist():
                    number += 1
                    yield Row(f"{path}:row {number}", record)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError variants for damaged files
            raise AlignkitError(f"{path}: cannot read Parquet ({exc})", "is the file complete?") from None


def read_text(path: Path) -> list[Row]:
    """Plain text for pretraining: paragraphs separated by blank lines become rows."""
    return list(iter_paragraphs(path))


def iter_paragraphs(path: Path) -> Iterator[Row]:
    """The paragraphs of a text file (blank lines separate them) as `{"text"}` rows of the file's document, read
    line by line: a file larger than memory is never held whole."""
    start, block = 1, []
    for number, line in enumerate(chain(decoded_lines(path), [""]), start=1):
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            yield Row(f"{path}:line {start}", {"text": "\n".join(block)}, document=str(path))
            block = []


def decoded_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file as `text_lines(decode(path))` gives them, read one at a time."""
    offset = 0
    with open_binary(path) as file:
        for number, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise AlignkitError(
                    f"{path}:line {number}: bytes are not valid UTF-8 (at byte {offset + exc.start})",
                    "save the file as UTF-8",
                ) from None
            offset += len(raw)
            yield from text_lines(text) or [""]


def text_lines(text: str) -> list[str]:
    """`text` split at its line ends (`LINE_END`), the one ending it giving no empty line after it."""
    lines = LINE_END.split(text)
    return lines[:-1] if lines[-1] == "" else lines


READERS: dict[str, Callable[[Path], list[Row]]] = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
    ".csv": read_csv,
    ".tsv": read_csv,
    ".parquet": read_parquet,
    ".txt": read_text,
    ".md": read_text,
}
LAZY_READERS: dict[str, Callable[[Path], Iterator[Row]]] = {
    ".jsonl": iter_jsonl,
    ".ndjson": iter_jsonl,
    ".parquet": iter_parquet,
    ".txt": iter_paragraphs,
    ".md": iter_paragraphs,
}


def is_saved_dataset(path: Path) -> bool:
    """Whether a folder is a `datasets` save_to_disk dir (a Dataset's `state.json`, a DatasetDict's
    `dataset_dict.json`) rather than a folder of data files."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def read_folder(path: Path, split: str | None = None) -> list[Row]:
    """Every data file under a folder (a corpus of .txt/.md documents, JSONL shards), in path order, each read by its
    suffix; of a folder whose files are named by split, the `split` (default `train`) ones (`folder_files`)."""
    return [row for file in folder_files(path, split) for row in READERS[data_suffix(file)](file)]


def folder_files(path: Path, split: str | None = None) -> list[Path]:
    """The data files under a folder in path order; hidden files and folders are skipped, and files of other types
    are named in a warning, not read. A folder laid out in splits as a dataset downloaded from the hub is
    (`split_files`) gives its `split` files (default `train`), as `datasets.load_dataset` would: its test rows are
    not trained on, nor its dataset card (README.md) read as data."""
    files, skipped = data_files_under(path)
    if not files:
        found = f" (it has {', '.join(sorted(skipped))} files)" if skipped else ""
        raise AlignkitError(
            f"{path}: neither a `datasets` save dir nor a folder with data files{found}",
            "put .txt, .md, .jsonl, .json, .csv, .tsv or .parquet files in it, or pass a save_to_disk dir",
        )
    splits = split_files(path, files)
    if splits is None and split:
        raise AlignkitError(
            f"{path}:{split}: the folder is not a `datasets` save dir and its files are not named by split "
            "(train-00000-of-00001.parquet, test.jsonl, ...)",
            f"pass {path} alone (every data file in it is read), or the split's own files",
        )
    if skipped and distributed.is_local_main():  # every process of a launched run reads the data: one line a machine
        logger.warning("%s: files of type %s are not read (not a data file type)", path, ", ".join(sorted(skipped)))
    if splits is None:
        return files
    name = split or "train"
    if name not in splits:
        raise AlignkitError(
            f"{path}: no `{name}` split (its files are named by split: {', '.join(splits)})",
            f"name the split to read as {path}:SPLIT, e.g. {path}:{next((s for s in splits if 'train' in s), name)}",
        )
    return splits[name]


def data_files_under(path: Path) -> tuple[list[Path], set[str]]:
    """(the data files under a folder in path order, the suffixes of its other files); hidden ones are left out."""
    files, skipped = [], set()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in file.relative_to(path).parts):
            continue
        if data_suffix(file) in READERS:
            files.append(file)
        else:
            skipped.add(file.suffix.lower() or "(no suffix)")
    return files, skipped


def split_files(path: Path, files: list[Path]) -> dict[str, list[Path]] | None:
    """A folder's data `files` per split, where the folder is laid out in splits as the hub lays out a dataset
    (`data/train-00000-of-00001.parquet`, `train.jsonl` beside `test.jsonl`, `train/`; names as `datasets` reads
    them); None where it is not, or where a data file other than a top-level README.md (the dataset card) falls in
    no split: such a folder is read whole, as before splits were read."""
    from datasets.data_files import DEFAULT_PATTERNS_ALL, DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(path))
    except FileNotFoundError:  # datasets' EmptyDatasetError: no file it reads
        return None
    if {str(name): value for name, value in patterns.items()} == DEFAULT_PATTERNS_ALL:
        return None
    wanted = {file.resolve(): file for file in files}
    splits = {
        str(name): [wanted[file] for file in sorted({Path(f).resolve() for f in found}) if file in wanted]
        for name, found in DataFilesDict.from_patterns(patterns, base_path=str(path)).items()
    }
    in_splits = {file for split in splits.values() for file in split}
    if any(file not in in_splits and file != path / "README.md" for file in files):
        return None
    return {name: split for name, split in splits.items() if split} or None


def load_saved(path: Path) -> Any:
    """A `datasets` save dir: a Dataset or a DatasetDict (memory-mapped, so opening it reads little)."""
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise AlignkitError(
            f"{path}: not a `datasets` save dir ({exc})", "pass a file, or a save_to_disk dir"
        ) from None


def read_saved_dataset(path: Path, split: str | None = None) -> list[Row]:
    """The rows of a save dir: a Dataset's, or a DatasetDict's `split` (default `train`)."""
    return list(iter_saved_dataset(path, split))


def iter_saved_dataset(path: Path, split: str | None = None) -> Iterator[Row]:
    """`read_saved_dataset`'s rows one at a time (the save dir is memory-mapped)."""
    import datasets

    loaded = load_saved(path)
    where = f"{path}:{split}" if split else str(path)
    if isinstance(loaded, datasets.DatasetDict):
        name = split or "train"
        if name not in loaded:
            raise AlignkitError(
                f"{path}: dataset has no `{name}` split (it has {', '.join(loaded)})",
                f"name the split to read as {path}:SPLIT, e.g. {path}:{next(iter(loaded))}",
            )
        loaded = loaded[name]
    elif split:
        raise AlignkitError(f"{where}: the save dir holds one dataset, without splits", f"pass {path} alone")
    return (Row(f"{where}:row {i}", record) for i, record in enumerate(loaded, start=1))


def saved_validation_split(source: str) -> str | None:
    """The held-out split beside the training split `source` reads, where its save dir (or folder of files named by
    split, `split_files`) has one: `DIR:validation` (else `DIR:test`) for `DIR` or `DIR:train`, and the same for a
    named training split (`DIR:train_prefs` -> `DIR:test_prefs`, as UltraFeedback's splits are named)."""
    import datasets

    path, split = saved_split(source)
    if not (split or "train").startswith("train") or not path.is_dir():
        return None
    if is_saved_dataset(path):
        loaded = load_saved(path)
        names = list(loaded) if isinstance(loaded, datasets.DatasetDict) else []
    else:
        names = list(split_files(path, data_files_under(path)[0]) or [])
    held_out = [(split or "train").replace("train", name, 1) for name in ("validation", "test")]
    name = next((name for name in held_out if name in names), None)
    return f"{path}:{name}" if name else None


def read_hub_dataset(source: str) -> list[Row]:
    """A hub dataset's `train` split, or `NAME:SPLIT`'s (hub names hold no colon)."""
    import datasets

    name, _, split = source.partition(":")
    offline_without_network()
    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # offline, unknown id or split, gated: all user-fixable
        raise AlignkitError(
            f"{source}: not a local file and not loadable from the hub ({type(exc).__name__}: {first_line(exc)[:160]})",
            "check the path, the split (NAME:SPLIT), or go online for hub datasets",
        ) from None
    return [Row(f"{source}:row {i}", record) for i, record in enumerate(loaded, start=1)]


def expect_object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AlignkitError(f"{where}: expected a JSON object, got {type(data).__name__}", "one object per row")
    return data


def parse_json_columns(record: dict[str, Any], where: str) -> dict[str, Any]:
    """CSV cells that hold message lists (and a `tools` list) are parsed, as JSON or as the Python repr pandas'
    `to_csv` writes: a `messages`/`conversations` cell always; a prompt, completion, chosen or rejected cell only
    when it is a list of turns or one turn, so `[INST] ...`, `[2, 3, 5]` or `{"a": 1}` stays text. A cell that looks
    like turns but parses as neither (numpy's repr of an array of them, from `Dataset.to_pandas().to_csv`) is
    refused: read as text, the reply would be the repr."""
    for column in MESSAGE_COLUMNS:
        cell = record.get(column)
        if isinstance(cell, str) and cell.lstrip().startswith("["):
            value = cell_value(cell)
            if value is None:
                raise AlignkitError(f"{where}: column `{column}` is not a JSON list of messages", CSV_TURNS_FIX)
            record[column] = value
    for column in TEXT_OR_MESSAGE_COLUMNS:
        cell = record.get(column)
        turns = message_cell(cell)
        if turns is not None:
            record[column] = turns
        elif isinstance(cell, str) and TURNS_TEXT.match(cell):
            raise AlignkitError(
                f"{where}: column `{column}` looks like a list of messages but is neither JSON nor a Python list",
                CSV_TURNS_FIX,
            )
    tools = record.get("tools")
    if isinstance(tools, str) and tools.lstrip().startswith("["):
        value = cell_value(tools)  # JSON, or the repr pandas writes; neither: `tools_field` names the JSON problem
        record["tools"] = value if isinstance(value, list) else tools
    return record


# the start of a list of turns written as text, JSON or a Python/numpy repr: `[{"role": ...` or `[{'from': ...`
TURNS_TEXT = re.compile(r"""\s*\[\s*\{\s*["'](?:role|content|from|value)["']\s*:""")
CSV_TURNS_FIX = (
    "write message lists as JSON: save the data as JSONL or Parquet (pandas: df.to_json(PATH, orient='records', "
    "lines=True))"
)


def message_cell(cell: Any) -> list[dict[str, Any]] | dict[str, Any] | None:
    """`cell` parsed when it is a list of turns (`role`/`content` or ShareGPT `from`/`value`) or one turn (a
    LLaMA-Factory ShareGPT `chosen`/`rejected` reply), in JSON or a Python repr, else None."""
    if not isinstance(cell, str) or not cell.lstrip().startswith(("[", "{")):
        return None
    value = cell_value(cell)
    if isinstance(value, list) and value and all(is_turn(turn) for turn in value):
        return value
    return value if is_turn(value) else None


def cell_value(cell: str) -> Any:
    """A CSV cell's JSON value, or its Python literal (pandas' `to_csv` writes a list of dicts as its repr, with
    single quotes); None when it is neither."""
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(cell.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def is_turn(value: Any) -> bool:
    return isinstance(value, dict) and ({"role", "content"} <= value.keys() or {"from", "value"} <= value.keys())


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


def check_not_conversation_text(data: dict[str, Any]) -> None:
    """Refuse a `text` row that is a piece of a conversation: an OpenAssistant message-tree row (oasst1: one message
    per row) or a whole chat in a template's markup (oasst_top1, guanaco); read as one text or prompt, its replies
    would be the user's words."""
    columns, name, fix = OASST_TREE
    if columns <= data.keys():
        raise RowError("role", f"an {name} row ({fix})")
    text = data.get("text")
    markup = next((name for marker, name in CHAT_MARKUP.items() if isinstance(text, str) and marker in text), None)
    if markup:
        raise RowError(
            "text", f"holds a whole chat in {markup} markup; convert it to {{messages: [{{role, content}}]}} rows"
        )


def to_messages(data: dict[str, Any], fmt: str, weights: bool = False) -> list[dict[str, Any]]:
    """Convert one row of format `fmt` to a checked list of messages; raises RowError naming the field. `weights`:
    keep a `"weight": 0` on the assistant turns that are context only (SFT trains the others)."""
    if fmt == "messages":
        key = "messages" if "messages" in data else "conversations"
        messages = message_list(data[key], key, "role", "content", roles=CHAT_ROLES, weights=weights)
    elif fmt == "sharegpt":
        messages = message_list(
            data["conversations"], "conversations", "from", "value", roles=SHAREGPT_CHAT_ROLES, weights=weights
        )
    elif fmt == "alpaca":
        messages = [*alpaca_prompt(data), {"role": "assistant", "content": reply_field(data, alpaca_output_key(data))}]
    elif fmt == "prompt_completion":
        completion_key = "response" if "response" in data and "completion" not in data else "completion"
        prompt = turns_or_text(data, "prompt", "user")
        messages = prompt + after_prompt(prompt, turns_or_text(data, completion_key, "assistant"), completion_key)
        if is_hh_prompt(data["prompt"]) and isinstance(data[completion_key], str):  # the space after `Assistant:`
            messages[-1]["content"] = messages[-1]["content"].strip()
    else:
        raise RowError("messages", "expected one of: messages, conversations, instruction+output, prompt+completion")
    check_conversation(messages, fmt)  # before a `system` column is added: error indices are the row's own
    return with_system_column(data, messages)


def alpaca_prompt(data: dict[str, Any]) -> list[dict[str, Any]]:
    """An Alpaca row up to its answer: the `history` turns, then `instruction` (with `input` below it) from the user.
    Dolly (`instruction`, `context`, `response`): its `context` is the `input`."""
    instruction = user_field(data, "instruction")
    extras = {key: data[key] for key in ("input", "context") if data.get(key) is not None}
    for key, extra in extras.items():
        if not isinstance(extra, str):
            raise RowError(key, f"expected a string, got {type(extra).__name__}")
        check_turn_text(extra, key, "user")
    filled = [extra for extra in extras.values() if extra.strip()]
    if len(filled) > 1:
        raise RowError("context", "the row has both `input` and `context` (Dolly's name for it); keep one")
    turn = f"{instruction}\n\n{filled[0]}" if filled else instruction
    return [*alpaca_history(data), {"role": "user", "content": turn}]


def alpaca_output_key(data: dict[str, Any]) -> str:
    """The column of an Alpaca row's answer: `output`, or Dolly's `response`."""
    return "response" if "response" in data and "output" not in data else "output"


def alpaca_history(data: dict[str, Any]) -> list[dict[str, Any]]:
    """LLaMA-Factory's Alpaca `history` (`[[instruction, response], ...]` before the row's own turn) as the earlier
    user/assistant turns; JSON text (a CSV cell) is parsed."""
    history = data.get("history")
    if history is None or (isinstance(history, str) and not history.strip()):
        return []
    history = json_value(history, "history", "a list of [instruction, response] pairs")
    if not isinstance(history, list):
        raise RowError("history", f"expected a list of [instruction, response] pairs, got {type(history).__name__}")
    turns = []
    for i, pair in enumerate(history):
        if not (
            isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(t, str) and t.strip() for t in pair)
        ):
            raise RowError(f"history[{i}]", "expected an [instruction, response] pair of non-empty strings")
        check_turn_text(pair[0], f"history[{i}][0]", "user")
        check_turn_text(pair[1], f"history[{i}][1]", "assistant")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def with_system_column(data: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A `system` column (any chat or preference format) as the first turn; refused when the turns start with a
    different system message, as one of the two instructions would be dropped."""
    system = data.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return messages
    if not isinstance(system, str):
        raise RowError("system", f"expected a string, got {type(system).__name__}")
    check_turn_text(system, "system", "system")
    if messages and messages[0]["role"] == "system":
        if messages[0]["content"].strip() != system.strip():
            raise RowError("system", "differs from the row's own system message; keep one of the two")
        return messages
    return [{"role": "system", "content": system}, *messages]


def text_content(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of content parts (`[{"type": "text", "text": ...}]`) joined by
    newlines, as chat servers join them; a part that is no text (an image, audio) is refused, not dropped."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise RowError(where, f"expected a string or a list of text parts, got {type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise RowError(
                f"{where}[{j}]",
                f"a {kind!r} part: alignkit trains text-only chat models; keep only `{{type: text, text}}` parts"
                if kind
                else "expected a content part `{type: text, text}`",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def message_list(
    turns: Any, key: str, role_key: str, content_key: str, roles: dict[str, str] | None, weights: bool = False
) -> list[dict[str, Any]]:
    """Checked messages from a list of turns; tool calls and `tool` turns only where `roles` allows a `tool` role.
    `weights`: an assistant turn's `weight` (0 or 1) is checked, and a 0 kept on it."""
    if not isinstance(turns, list) or not turns:
        raise RowError(key, "expected a non-empty list of messages")
    allowed = roles or MESSAGE_ROLES
    messages = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, f"expected an object with `{role_key}` and `{content_key}`")
        turn = {k: v for k, v in turn.items() if v is not None}  # Arrow (Parquet, save dirs) fills absent keys
        if role_key not in turn:
            raise RowError(f"{where}.{role_key}", "missing")
        role = turn[role_key]
        tools_read = "tool" in allowed.values()
        if not tools_read and (role in TOOL_ROLES or turn.get("tool_calls")):  # never dropped silently
            field = f"{where}.{role_key}" if role in TOOL_ROLES else f"{where}.tool_calls"
            raise RowError(field, f"tool calls and results are not read here ({NO_TOOLS_HERE})")
        if role not in allowed:
            raise RowError(f"{where}.{role_key}", f"unknown role {role!r} (expected {', '.join(allowed)})")
        if allowed[role] == "tool_call":
            messages.append(sharegpt_call(turn.get(content_key), f"{where}.{content_key}"))
            continue
        tool_calls = turn.get("tool_calls") if tools_read and allowed[role] == "assistant" else None
        if tool_calls is not None and not isinstance(tool_calls, list):
            raise RowError(f"{where}.tool_calls", "expected a list of tool calls")
        if content_key not in turn and not tool_calls:
            raise RowError(f"{where}.{content_key}", "missing")
        content = text_content(turn.get(content_key, ""), f"{where}.{content_key}")
        message: dict[str, Any] = {"role": allowed[role], "content": content}
        check_turn_text(content, f"{where}.{content_key}", message["role"])
        if tool_calls:
            message["tool_calls"] = [tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(tool_calls)]
        if message["role"] == "tool":
            message |= {k: turn[k] for k in ("tool_call_id", "name") if isinstance(turn.get(k), str)}
        if weights and message["role"] == "assistant" and turn.get("weight") is not None:  # null: a Parquet gap
            weight = turn["weight"]
            if isinstance(weight, bool) or weight not in (0, 1):
                raise RowError(f"{where}.weight", f"expected 0 (not trained) or 1 (trained), got {weight!r}")
            if weight == 0:
                message["weight"] = 0
        messages.append(message)
    return messages


def sharegpt_call(value: Any, field: str) -> dict[str, Any]:
    """A ShareGPT `function_call` turn (JSON `{name, arguments}`, or a list of them) as an assistant tool-call turn."""
    calls = json_value(value, field, "a JSON tool call {name, arguments}")
    calls = calls if isinstance(calls, list) else [calls]
    return {"role": "assistant", "content": "", "tool_calls": [tool_call(c, field) for c in calls]}


def tool_call(call: Any, where: str) -> dict[str, Any]:
    """One call as `{"type": "function", "function": {"name", "arguments": {...}}}` (+ its `id`): OpenAI's nested
    form or a bare `{name, arguments}`; arguments given as JSON text are parsed, as chat templates expect a mapping."""
    if not isinstance(call, dict):
        raise RowError(where, "expected a tool call {type: function, function: {name, arguments}}")
    nested = isinstance(call.get("function"), dict)
    function, prefix = (call["function"], f"{where}.function") if nested else (call, where)
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowError(f"{prefix}.name", "missing" if name is None else "expected the tool's name")
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        arguments = json_value(arguments, f"{prefix}.arguments", "a JSON object") if arguments.strip() else {}
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RowError(f"{prefix}.arguments", f"expected a JSON object, got {type(arguments).__name__}")
    converted: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call.get("id"), str):
        converted["id"] = call["id"]
    return converted


def json_value(value: Any, field: str, expected: str) -> Any:
    """`value` parsed when it is JSON text (as ShareGPT tool turns and CSV cells hold it), else as it is."""
    if not isinstance(value, str):
        if value is None:
            raise RowError(field, "missing")
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RowError(field, f"expected {expected} (not valid JSON: {exc.msg})") from None


def tools_field(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's `tools` (a list or JSON text of function schemas, bare or OpenAI-wrapped) as chat-template tools.

    None values are dropped: Arrow fills the keys one row's schema lacks and another's has with None."""
    value = data.get("tools")
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    value = without_none(json_value(value, "tools", "a list of function schemas"))
    if not isinstance(value, list):
        raise RowError("tools", f"expected a list of function schemas, got {type(value).__name__}")
    tools = []
    for i, tool in enumerate(value):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(f"tools[{i}]", "expected a function schema {name, description, parameters}")
        tools.append({"type": "function", "function": function})
    return tools


def without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def uses_tools(row: dict[str, Any]) -> bool:
    """Whether a canonical chat row has tools, tool calls or tool results."""
    return shows_tools(row) or has_tool_results(row)


def shows_tools(row: dict[str, Any]) -> bool:
    """Whether a canonical chat row has `tools` or structured tool calls (the chat template must render them; calls
    written as text, as in Hermes rows, are rendered as any text is)."""
    return bool(row.get("tools")) or any("tool_calls" in m for m in row.get("messages", []))


def has_tool_results(row: dict[str, Any]) -> bool:
    """Whether a canonical chat row has `tool` turns (the chat template must render a `tool` role)."""
    return any(m["role"] == "tool" for m in row.get("messages", []))


PROBE_TOOL = "alignkit_probe_tool"
PROBE_CALL = "alignkit_probe_call"
PROBE_RESULT = "alignkit_probe_result"


def renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template shows the model a tools list and an assistant's tool calls; a template
    without tool support drops both silently, and the model would learn calls it never sees the tools for."""
    from jinja2 import TemplateError

    def schema(name: str) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {"x": {"type": "string", "description": "x"}}, "required": ["x"]}
        return {"type": "function", "function": {"name": name, "description": "A probe.", "parameters": parameters}}

    call = {"id": "call00001", "type": "function", "function": {"name": PROBE_CALL, "arguments": {"x": "1"}}}
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "1", "tool_call_id": "call00001"},
        {"role": "assistant", "content": "Done."},
    ]
    tools = [schema(PROBE_TOOL)]
    try:
        with_tools = tokenizer.apply_chat_template(conversation[:1], tools=tools, tokenize=False)
        with_call = tokenizer.apply_chat_template(conversation, tools=tools, tokenize=False)
    except TemplateError:  # e.g. a template that raises on the `tool` role
        return False
    return PROBE_TOOL in with_tools and PROBE_CALL in with_call


def renders_tool_results(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a `tool` turn's text after a call written as text (Hermes rows);
    a template may raise on the role (roles must alternate user/assistant) or drop it."""
    from jinja2 import TemplateError

    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "probe", "arguments": {}}\n</tool_call>'},
        {"role": "tool", "content": PROBE_RESULT},
        {"role": "assistant", "content": "Done."},
    ]
    try:
        return PROBE_RESULT in tokenizer.apply_chat_template(conversation, tokenize=False)
    except TemplateError:
        return False


def turns_or_text(data: dict[str, Any], key: str, role: str) -> list[dict[str, Any]]:
    """`key` as messages: a message list, HH-RLHF text (a prompt, as Dahoas/rm-static's; a completion, a whole
    transcript), or one `role` turn."""
    value = data.get(key)
    if isinstance(value, list):
        return message_list(value, key, "role", "content", roles=CHAT_ROLES)
    if role == "user":
        turns = prompt_text(data, key)
        if turns[-1]["role"] != "user":
            raise RowError(key, "HH-RLHF prompt text must end with a `Human:` turn (then an open `Assistant:`)")
        return turns
    if is_hh_text(value):
        return hh_turns(value, key)
    return [{"role": role, "content": reply_field(data, key)}]


def after_prompt(prompt: list[dict[str, Any]], completion: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The turns of a completion after its prompt: a completion that repeats the prompt's turns first (a whole HH-RLHF
    transcript, an UltraFeedback-style conversation) has them cut off; what is left must open with the reply."""
    shared = len(prompt) if len(completion) > len(prompt) and same_turns(completion[: len(prompt)], prompt) else 0
    if completion[shared]["role"] == "user":
        raise RowError(
            f"{key}[{shared}].role",
            "the completion opens with a user turn that is not the prompt's: give the reply alone, or the whole "
            "conversation starting with the prompt's turns",
        )
    return completion[shared:]


def same_turns(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Whether two lists of turns say the same (roles and text, whitespace around it aside)."""
    return [(m["role"], m["content"].strip()) for m in a] == [(m["role"], m["content"].strip()) for m in b]


def reply_field(data: dict[str, Any], key: str) -> str:
    """A reply given as text (`completion`, `output`, `chosen`, ...), checked as `check_turn_text` checks it."""
    text = text_field(data, key)
    check_turn_text(text, key, "assistant")
    return text


def user_field(data: dict[str, Any], key: str) -> str:
    """A user's turn given as text (`prompt`, `instruction`, a prompt's `text`), checked as `check_turn_text` checks
    it."""
    text = text_field(data, key)
    check_turn_text(text, key, "user")
    return text


def prompt_text(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A prompt given as text: HH-RLHF text as its turns (the open `Assistant:` cue dropped), else one user turn."""
    value = data.get(key)
    return hh_prompt(value, key) if is_hh_prompt(value) else [{"role": "user", "content": user_field(data, key)}]


def check_turn_text(text: str, field: str, role: str) -> None:
    """Refuse an HH-RLHF transcript left whole in one turn: a reply holding another HH turn (`...\\n\\nHuman: ...`)
    would teach the model to write the user's turns too; a user, system or tool turn that is a transcript from its
    first `Human:` turn would show the chat template its markers and the assistant's words as that turn's. Markers
    after a turn's own words ("Summarise this chat: ...", a tool result quoting a chat log) are that turn's text."""
    if (role == "assistant" and HH_TURN_INSIDE.search(text)) or (role != "assistant" and is_hh_prompt(text)):
        inside = TURN_NAMES[role]
        whole = ", or give the whole transcript from its first `Human:` turn" if role in ("user", "assistant") else ""
        raise RowError(
            field,
            f"holds HH-RLHF `Human:`/`Assistant:` turns inside {inside}; split it into turns (messages){whole}",
        )


def is_hh_text(value: Any) -> bool:
    """Whether `value` is HH-RLHF text: `Human:` first, then an `Assistant:` turn (a plain reply may start "Human:")."""
    return isinstance(value, str) and value.lstrip().startswith("Human:") and "\n\nAssistant:" in value


def is_hh_prompt(value: Any) -> bool:
    """Whether a prompt string is HH-RLHF text: `is_hh_text`, a single turn in HH's own form (`\\n\\nHuman: ...`,
    its leading blank line and all; a plain prompt may start "Human:"), or a transcript after a preamble
    (`hh_preamble`)."""
    return (
        is_hh_text(value) or (isinstance(value, str) and value.startswith("\n\nHuman:")) or bool(hh_preamble(value)[0])
    )


def hh_preamble(value: Any, whole: bool = False) -> tuple[str, Any]:
    """An HH-RLHF prompt's preamble and its transcript: text before the first `\\n\\nHuman:` turn of a prompt ending
    in the open `Assistant:` cue is what HH-style sets (and Anthropic's text-completion format) hold as the system
    prompt. ("", `value`) for any other value: markers after a user's own words with no open cue are a chat quoted
    in the user's text ("Summarise this chat: ..."). `whole`: `value` is a whole transcript, its replies included (a
    pair's `chosen` or `rejected` with no prompt column, where nothing else could be the user's own words): the
    preamble of any transcript with an `Assistant:` turn after its first `Human:` turn."""
    if not isinstance(value, str) or value.lstrip().startswith("Human:"):
        return "", value
    at = value.find("\n\nHuman:")
    found = at > 0 and is_hh_text(value[at:]) if whole else bool(HH_OPEN_CUE.search(value))
    if not found:
        return "", value
    preamble = value[:at].strip() if at > 0 else ""
    return (preamble, value[at:]) if preamble else ("", value)


def hh_turns(text: str, key: str) -> list[dict[str, Any]]:
    """Anthropic HH-RLHF text (`\\n\\nHuman: ...\\n\\nAssistant: ...`) as messages."""
    parts = HH_TURN.split(text.strip())
    if parts[0].strip() or len(parts) < 3:
        raise RowError(key, 'expected "\\n\\nHuman: ...\\n\\nAssistant: ..." turns')
    return [
        {"role": HH_ROLES[speaker], "content": said.strip()}
        for speaker, said in zip(parts[1::2], parts[2::2], strict=True)
    ]


def hh_prompt(text: str, key: str) -> list[dict[str, Any]]:
    """A prompt in HH-RLHF text (Nectar, Dahoas/rm-static) as messages, its open `Assistant:` cue dropped and its
    preamble, if any, the system turn."""
    preamble, transcript = hh_preamble(text)
    if HH_TURN_INSIDE.search(preamble):
        raise RowError(key, "holds an `Assistant:` turn before its first `Human:` turn; start the transcript there")
    turns = hh_turns(transcript, key)
    if turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return [{"role": "system", "content": preamble}, *turns] if preamble else turns


def text_field(data: dict[str, Any], key: str) -> str:
    if key not in data or data[key] is None:
        raise RowError(key, "missing")
    value = data[key]
    if not isinstance(value, str):
        raise RowError(key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(key, "is empty")
    return value


def check_conversation(messages: list[dict[str, Any]], fmt: str) -> None:
    key = "conversations" if fmt == "sharegpt" else "messages"
    for i, message in enumerate(messages):
        if message["role"] == "system" and i != 0:
            raise RowError(f"{key}[{i}].role", "a system message may only come first")
        if message["role"] == "tool" and not follows_call(messages, i):
            raise RowError(f"{key}[{i}].role", "a tool result must follow an assistant tool call")
        if message["role"] != "system" and not message["content"].strip() and "tool_calls" not in message:
            raise RowError(f"{key}[{i}].content", "is empty")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(key, "has no assistant turn (nothing to learn from)")
    first = next(i for i, m in enumerate(messages) if m["role"] != "system")
    if messages[first]["role"] != "user":
        raise RowError(f"{key}[{first}].role", "the conversation must start with a user turn (after any system turn)")


def follows_call(messages: list[dict[str, Any]], i: int) -> bool:
    """Whether the `tool` turn `i` answers a call: an assistant turn's `tool_calls`, a call written in an assistant
    turn's text (Hermes' `<tool_call>`; not for a result naming a `tool_call_id`, which needs the structured call),
    or the call before an earlier result."""
    if i == 0:
        return False
    before = messages[i - 1]
    if "tool_calls" in before or before["role"] == "tool":
        return True
    return before["role"] == "assistant" and "tool_call_id" not in messages[i]


def iter_assistant_turns(messages: list[dict[str, Any]]) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """(history, reply) for every trained assistant turn: each becomes one prompt→completion example, so the reply
    is trained and the prompt masked, with any chat template. A `"weight": 0` turn is only history."""
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and message.get("weight") != 0:
            yield without_weights(messages[:i]), message


def without_weights(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` as the chat template is given them: without the `weight` that marks context-only turns."""
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]
