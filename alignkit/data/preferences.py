"""Preference data in, canonical rows out: pairs for `reward`/`dpo`, unpaired rows for KTO.

Canonical pair (TRL's conversational preference format): `{"prompt": [messages], "chosen": [assistant message(s)],
"rejected": [assistant message(s)]}`, plus `margin` (float, annotator strength), `annotators` (names) and `agreement`
(0..1) when the data has them. Accepted input rows:

- conversational: `prompt` a list of messages, `chosen`/`rejected` lists of assistant messages;
- standard: `prompt`, `chosen`, `rejected` strings (the prompt becomes a user turn, the replies assistant turns);
- implicit prompt: `chosen`/`rejected` whole conversations sharing their first turns (no `prompt`): the shared turns
  are the prompt; a `prompt` that repeats those turns (UltraFeedback-style rows) is taken off them;
- multi-turn replies (Capybara-DPO): `chosen`/`rejected` go on with the conversation after `prompt`; the turns they
  share join the prompt, so each reply is the final assistant turn(s) (a reply left with a user turn is refused);
- `question` or `instruction` (+ optional `input`, `history`) instead of `prompt` (LLaMA-Factory's Alpaca pairs);
- LLaMA-Factory ShareGPT pairs: `conversations` (from/value, or `messages` with role/content) up to the last user
  turn, `chosen`/`rejected` one `{from: gpt, value}` reply each;
- Stanford SHP: `history` (the post) is the prompt, `human_ref_A`/`human_ref_B` the replies, `labels` 1 when A is
  preferred, 0 when B is;
- Anthropic HH-RLHF: `chosen`/`rejected` raw text of `\\n\\nHuman: ...\\n\\nAssistant: ...` turns; the turns they share
  are the prompt. A `prompt` in that form (Dahoas/rm-static) is read as turns, its open `Assistant:` dropped, and
  replies are what follows it (the text after it, or whole transcripts that repeat it).

A `system` column, in any of these, becomes the prompt's first (system) turn; a row whose prompt has a different system
message is refused. Other columns (`score_chosen`, `prompt_id`, ...) are ignored.

Canonical unpaired row (KTO): `{"prompt": [messages], "completion": [assistant message(s)], "label": bool}`; input
rows: `prompt`/`completion`/`label`, LLaMA-Factory's `messages` (or ShareGPT `conversations`) + `label` (the last
assistant turn is the completion), or a pair row, which gives two unpaired rows (chosen: true, rejected: false).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from alignkit.data.formats import (
    HH_OPEN_CUE,
    HH_TURN_INSIDE,
    NO_TOOLS_HERE,
    SHAREGPT_ROLES,
    Row,
    RowError,
    alpaca_prompt,
    detect_chat_format,
    hh_preamble,
    hh_turns,
    is_hh_prompt,
    is_hh_text,
    looks_like,
    message_list,
    prompt_text,
    read_rows,
    reply_field,
    same_turns,
    text_content,
    text_field,
    to_messages,
    uses_tools,
    with_system_column,
)
from alignkit.data.validate import BadRows, convert_all
from alignkit.errors import AlignkitError

Messages = list[dict[str, str]]
Reply = tuple[Messages, int]  # a reply's turns after the prompt, and the index of the first in the row's own list

PROMPT_KEYS = ("prompt", "question", "instruction")
OTHER_REPLY = {"chosen": "rejected", "rejected": "chosen"}
PAIR_EXPECTED = (
    "preference rows: {prompt, chosen, rejected} as strings or message lists, "
    "{chosen, rejected} conversations sharing their prompt turns, ShareGPT {conversations, chosen: {from, value}, "
    "rejected: {from, value}}, or HH-RLHF {chosen, rejected} Human:/Assistant: text"
)
UNPAIRED_EXPECTED = (
    "unpaired rows {prompt, completion, label: true|false} or {messages, label}, "
    "or preference rows {prompt, chosen, rejected}"
)
SHP_KEYS = {"history", "human_ref_A", "human_ref_B", "labels"}
LABELS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def load_preferences(paths: list[str], bad_rows: BadRows | None = None) -> list[dict[str, Any]]:
    """Canonical preference pairs from every file in `paths`, each file validated whole first (`bad_rows`: training
    data, whose failing rows `data.skip_bad_rows` leaves out)."""
    rows = []
    for path, file_rows in zip(paths, read_pulled_once(paths), strict=True):
        rows += with_policies_found(convert_all(file_rows, preference_row, PAIR_EXPECTED, bad_rows, path), path)
    return rows


def load_unpaired(paths: list[str], bad_rows: BadRows | None = None) -> list[dict[str, Any]]:
    """Canonical unpaired `{prompt, completion, label}` rows (KTO) from every file in `paths`, validated whole first
    (`bad_rows`: as `load_preferences`')."""
    rows = []
    for path, file_rows in zip(paths, read_pulled_once(paths), strict=True):
        for converted in convert_all(file_rows, unpaired_rows, UNPAIRED_EXPECTED, bad_rows, path):
            rows += with_policies_found(converted, path)
    return rows


def with_policies_found(rows: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """`rows` of the file at `path` with each policy of their `candidates_from` as `runs.policy_from_file` reads it
    (run path absolute, run id found where the file has none), for `pairs_origin`."""
    from alignkit.runs import policy_reader

    policy = policy_reader(path)
    return [
        row | {"candidates_from": [policy(entry) for entry in row["candidates_from"]]}
        if row.get("candidates_from")
        else row
        for row in rows
    ]


def read_pulled_once(paths: list[str]) -> list[list[Row]]:
    """The rows of each file in `paths`, refused where a pair that `feedback pull` wrote (its `record_id`) is given
    twice: one round in two files (its pairs file and one holding every round's pairs, such as the demo's
    `pairs-round-2.jsonl`; a `--pairs best-worst` file beside the `--pairs all` one), or pulled twice, perhaps
    ordered the other way after more ratings. Its vote would count twice, or both ways."""
    files, seen = [], {}
    for path in paths:
        files.append(read_rows(path))
        for row in files[-1]:
            record = row.data.get("record_id")
            if not isinstance(record, str) or not record:
                continue
            answers = frozenset(json.dumps(row.data.get(key), sort_keys=True) for key in ("chosen", "rejected"))
            key = (str(row.data.get("dataset") or ""), record, answers)
            if key in seen:
                raise AlignkitError(
                    f"{row.where}: the pair of record {record} is also at {seen[key]}: pulled pairs given twice "
                    "would train twice",
                    "pass each round's pairs once (a file holding several rounds' pairs replaces their own files; a "
                    "--pairs best-worst file is part of its round's --pairs all file)",
                )
            seen[key] = row.where
    return files


def shp_as_pair(data: dict[str, Any]) -> dict[str, Any]:
    """A Stanford SHP row (`history`, `human_ref_A`, `human_ref_B`, `labels`: 1 when A is preferred, 0 when B is) as
    a `{prompt, chosen, rejected}` row; any other row as it is."""
    if not data.keys() >= SHP_KEYS or "chosen" in data or "rejected" in data:
        return data
    label = data["labels"]
    label = label.strip() if isinstance(label, str) else label  # a CSV cell
    if label not in (0, 1, "0", "1") or isinstance(label, bool):
        raise RowError("labels", f"expected 1 (human_ref_A preferred) or 0 (human_ref_B preferred), got {label!r}")
    preferred, other = ("human_ref_A", "human_ref_B") if int(label) == 1 else ("human_ref_B", "human_ref_A")
    return data | {"prompt": text_field(data, "history"), "chosen": data[preferred], "rejected": data[other]}


def preference_row(data: dict[str, Any]) -> dict[str, Any]:
    """One input row as a canonical pair; raises RowError naming the field (and the format, where it is a guess)."""
    data = shp_as_pair(data)
    refuse_tools(data)
    for key in ("chosen", "rejected"):
        if data.get(key) is None and "label" in data and ("completion" in data or "messages" in data):
            raise RowError(
                key, "missing: this is an unpaired KTO row; train on those with `alignkit dpo --set method=kto`"
            )
        if data.get(key) is None:
            raise RowError(key, "missing")
    prompt_key = next((k for k in PROMPT_KEYS if k in data), None)
    preamble, data = transcripts_preamble(data) if prompt_key is None else ("", data)
    hh = is_hh_row(data, prompt_key, "chosen", "rejected")
    lists = isinstance(data["chosen"], list) and isinstance(data["rejected"], list)
    if prompt_key is None and ("conversations" in data or "messages" in data) and not isinstance(data["chosen"], list):
        with looks_like("sharegpt preference"):
            prompt, chosen, rejected = sharegpt_pair(data)
    elif prompt_key is None and not (hh or lists):
        raise RowError("prompt", "missing (needed when chosen and rejected are plain strings)")
    else:
        with looks_like("HH-RLHF") if hh else nullcontext():
            prompt = prompt_turns(data, prompt_key) if prompt_key else []
            prompt, chosen, rejected = split_shared_prompt(
                prompt,
                reply_turns(data, "chosen", prompt_key, prompt, hh),
                reply_turns(data, "rejected", prompt_key, prompt, hh),
            )
    if same_turns(chosen, rejected):
        raise RowError("rejected", "chosen and rejected are identical (the pair teaches nothing)")
    prompt = [{"role": "system", "content": preamble}, *prompt] if preamble else prompt
    return {"prompt": with_system_column(data, prompt), "chosen": chosen, "rejected": rejected, **annotations(data)}


def transcripts_preamble(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A pair with no prompt column whose `chosen` and `rejected` are whole HH-RLHF transcripts after a preamble (the
    system prompt, as Anthropic's text-completion format and HH-style sets put it before the first `Human:` turn):
    the preamble, and the row with the transcripts alone, read then as any HH pair; ("", `data`) for another row.
    Both must have the preamble: the replies of a pair answer one prompt."""
    found = {key: hh_preamble(data.get(key), whole=True) for key in ("chosen", "rejected")}
    if not any(preamble for preamble, _ in found.values()):
        return "", data
    preambles = {key: preamble for key, (preamble, _) in found.items()}
    if preambles["chosen"] != preambles["rejected"]:
        missing = next((key for key, preamble in preambles.items() if not preamble), None)
        if missing and not is_hh_text(data.get(missing)):
            raise RowError(
                missing,
                f"is not a whole HH-RLHF transcript as {OTHER_REPLY[missing]} is (a preamble, then `Human:`/"
                "`Assistant:` turns); give both as transcripts, or the prompt in a `prompt` column",
            )
        what = (
            f"has no preamble (system prompt) before its first `Human:` turn where {OTHER_REPLY[missing]} has one"
            if missing
            else "has another preamble (system prompt) before its first `Human:` turn than chosen"
        )
        raise RowError(
            missing or "rejected",
            f"{what}: the replies of a pair answer one prompt (give both the same one, or a `prompt` column)",
        )
    preamble = found["chosen"][0]
    if HH_TURN_INSIDE.search(preamble):
        raise RowError(
            "chosen", "holds an `Assistant:` turn before its first `Human:` turn; start the transcript there"
        )
    return preamble, data | {key: transcript for key, (_, transcript) in found.items()}


def unpaired_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One input row as canonical unpaired rows: itself, or both halves of a preference pair."""
    data = shp_as_pair(data)
    refuse_tools(data)
    if "completion" not in data and "response" not in data and ("chosen" in data or "rejected" in data):
        pair = preference_row(data)
        origin = {key: pair[key] for key in ORIGIN if key in pair}
        return [
            {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True, **origin},
            {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False, **origin},
        ]
    if "prompt" not in data and ("messages" in data or "conversations" in data):
        with looks_like("KTO conversation"):
            prompt, completion = split_last_reply(data)
            return [{"prompt": prompt, "completion": completion, "label": label_field(data)}]
    prompt_key = next((k for k in PROMPT_KEYS if k in data), "prompt")
    completion_key = "response" if "response" in data and "completion" not in data else "completion"
    hh = is_hh_row(data, prompt_key, completion_key)
    with looks_like("HH-RLHF") if hh else nullcontext():
        prompt = prompt_turns(data, prompt_key)
        completion, at = reply_turns(data, completion_key, prompt_key, prompt, hh)
        completion = check_reply(completion, completion_key, at)
    return [{"prompt": with_system_column(data, prompt), "completion": completion, "label": label_field(data)}]


def refuse_tools(data: dict[str, Any]) -> None:
    """A `tools` column is refused rather than dropped: the pair would train without the functions it calls (tool
    turns are refused where they are read, `formats.message_list`)."""
    if data.get("tools") not in (None, "", []):
        raise RowError("tools", f"preference and KTO rows with tools are not supported ({NO_TOOLS_HERE})")


def split_last_reply(data: dict[str, Any]) -> tuple[Messages, Messages]:
    """LLaMA-Factory KTO rows: a whole conversation whose last (assistant) turn is the rated completion."""
    messages = to_messages(data, detect_chat_format(data))
    key = "messages" if "messages" in data else "conversations"
    if uses_tools({"messages": messages}):  # read by the SFT reader, which takes tool turns
        raise RowError(key, f"KTO rows with tool calls are not supported ({NO_TOOLS_HERE})")
    if messages[-1]["role"] != "assistant":
        raise RowError(f"{key}[{len(messages) - 1}].role", "the last turn must be the assistant reply the label rates")
    return messages[:-1], messages[-1:]


def sharegpt_pair(data: dict[str, Any]) -> tuple[Messages, Messages, Messages]:
    """LLaMA-Factory ShareGPT pairs: the turns up to the last user turn, and one reply object per side."""
    key = "conversations" if "conversations" in data else "messages"
    turns = data[key]
    sharegpt = isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    prompt = message_list(turns, key, role_key, content_key, roles=SHAREGPT_ROLES if sharegpt else None)
    check_prompt(prompt, key)
    return prompt, reply_object(data, "chosen"), reply_object(data, "rejected")


def reply_object(data: dict[str, Any], key: str) -> Messages:
    """A ShareGPT reply `{from: gpt, value}` (or `{role: assistant, content}`) as one assistant turn."""
    reply = data[key]
    if not isinstance(reply, dict):
        raise RowError(key, f"expected {{from, value}}, got {type(reply).__name__}")
    role_key, content_key = ("from", "value") if "from" in reply or "value" in reply else ("role", "content")
    if reply.get(content_key) is None:
        raise RowError(key, f"expected {{from, value}}, got an object with {sorted(map(str, reply))}")
    content = text_content(reply[content_key], f"{key}.{content_key}")
    if reply.get(role_key) not in ("gpt", "assistant"):
        raise RowError(f"{key}.{role_key}", f"expected 'gpt' (a reply), got {reply.get(role_key)!r}")
    if not content.strip():
        raise RowError(f"{key}.{content_key}", "is empty")
    return [{"role": "assistant", "content": content}]


def is_hh_row(data: dict[str, Any], *keys: str | None) -> bool:
    """Whether any of the row's `keys` (the prompt, after any preamble, and the replies) is Anthropic HH-RLHF text."""
    return any(key is not None and is_hh_text(hh_preamble(data.get(key))[1]) for key in keys)


def hh_transcript(data: dict[str, Any], key: str, prompt_key: str | None) -> str:
    """`key` as a whole HH-RLHF transcript: itself, or (Dahoas/rm-static rows) the HH prompt it continues; the
    prompt's preamble (its system turn) left out, as a transcript has no system turns."""
    text = text_field(data, key)
    given = data.get(prompt_key) if prompt_key else None
    preamble, prompt = hh_preamble(given)
    if preamble and text.startswith(given):  # the prompt repeated, preamble and all, then the reply
        text = text[len(given) - len(prompt) :]
    if not is_hh_text(prompt) or is_hh_text(text):
        return text
    open_cue = HH_OPEN_CUE.search(prompt) or text.lstrip().startswith("Assistant:")
    return prompt + text if open_cue else f"{prompt}\n\nAssistant: {text}"  # a prompt ending with its `Human:` turn


def prompt_turns(data: dict[str, Any], key: str) -> Messages:
    """The prompt as messages ending with a user turn: a message list, HH-RLHF text (its open `Assistant:` cue
    dropped), or a string (an `instruction` with Alpaca's `input` or Dolly's `context`, and `history`)."""
    value = data.get(key)
    if isinstance(value, list):
        turns = message_list(value, key, "role", "content", roles=None)
    elif key == "instruction" and not is_hh_prompt(value):
        turns = alpaca_prompt(data)
    else:
        turns = prompt_text(data, key)
    check_prompt(turns, key)
    return turns


def check_prompt(turns: Messages, key: str, start: int = 0) -> None:
    """`turns` are the prompt; the first is `key[start]` of the input row."""
    for i, turn in enumerate(turns, start=start):
        if turn["role"] == "system" and i != start:
            raise RowError(f"{key}[{i}].role", "a system message may only come first")
        if not turn["content"].strip():
            raise RowError(f"{key}[{i}].content", "is empty")
    if turns[-1]["role"] != "user":
        raise RowError(f"{key}[{start + len(turns) - 1}].role", "the prompt must end with a user turn")


def reply_turns(data: dict[str, Any], key: str, prompt_key: str | None, prompt: Messages, hh: bool) -> Reply:
    """`key`'s turns after the prompt: a message list, HH-RLHF text (in an HH row) or one assistant turn. A list or
    transcript that starts with the prompt's turns (UltraFeedback, HH rows with a `prompt`) has them cut off."""
    value = data.get(key)
    if isinstance(value, list):
        turns = message_list(value, key, "role", "content", roles=None)
    elif hh:
        turns = hh_turns(hh_transcript(data, key, prompt_key), key)
    else:
        return [{"role": "assistant", "content": reply_field(data, key)}], 0
    if hh and prompt and prompt[0]["role"] == "system":  # an HH transcript has no system turn to repeat
        prompt = prompt[1:]
    offset = len(prompt) if prompt and len(turns) > len(prompt) and same_turns(turns[: len(prompt)], prompt) else 0
    return turns[offset:], offset


def check_reply(turns: Messages, key: str, offset: int) -> Messages:
    """`turns` are `key[offset:]` of the input row: assistant turns only (a user turn would be trained as a reply)."""
    if not turns:
        raise RowError(key, "has no reply after the turns it shares with the other reply")
    for i, turn in enumerate(turns, start=offset):
        if turn["role"] != "assistant":
            raise RowError(
                f"{key}[{i}].role",
                f"a reply holds only assistant turns, got {turn['role']!r} (the turns before the final reply belong "
                "in the prompt)",
            )
        if not turn["content"].strip():
            raise RowError(f"{key}[{i}].content", "is empty")
    return turns


def split_shared_prompt(prompt: Messages, chosen: Reply, rejected: Reply) -> tuple[Messages, Messages, Messages]:
    """The turns `chosen` and `rejected` share after `prompt` extend it, so each reply is its final assistant turns:
    with no `prompt` (implicit prompt, HH-RLHF) the shared turns are the prompt; a `prompt` of the first user turn
    and replies that go on with the conversation (Capybara-style) give the prompt the shared later turns."""
    (chosen_turns, chosen_at), (rejected_turns, rejected_at) = chosen, rejected
    if same_turns(chosen_turns, rejected_turns):
        raise RowError("rejected", "chosen and rejected are identical (the pair teaches nothing)")
    if prompt:  # the prompt ends with a user turn: the replies go on with the assistant's
        for key, (turns, at) in (("chosen", chosen), ("rejected", rejected)):
            if turns and turns[0]["role"] != "assistant":
                raise RowError(f"{key}[{at}].role", "a reply must start with an assistant turn")
    shared = 0
    while shared < min(len(chosen_turns), len(rejected_turns)) and same_turns(
        chosen_turns[shared : shared + 1], rejected_turns[shared : shared + 1]
    ):
        shared += 1
    if not prompt and not shared:
        raise RowError("chosen", "shares no prompt turns with rejected; add a `prompt` field")
    replies = (
        check_reply(chosen_turns[shared:], "chosen", chosen_at + shared),
        check_reply(rejected_turns[shared:], "rejected", rejected_at + shared),
    )
    if shared:
        check_prompt(prompt + chosen_turns[:shared], "chosen", start=chosen_at - len(prompt))
    return prompt + chosen_turns[:shared], *replies


ORIGIN = ("dataset", "round", "candidates_from")  # where a pulled pair comes from (`feedback pull`)


def origin(data: dict[str, Any]) -> dict[str, Any]:
    """A pulled pair's dataset, round and the runs whose candidates it compares, where the row has them as `feedback
    pull` writes them (other columns of those names are ignored, as any other column is)."""
    found: dict[str, Any] = {}
    if isinstance(data.get("dataset"), str) and data["dataset"]:
        found["dataset"] = data["dataset"]
    if isinstance(data.get("round"), int | str) and not isinstance(data["round"], bool) and data["round"] != "":
        found["round"] = data["round"]
    runs = data.get("candidates_from")  # {"run_id", "run"} or {"model"} each; run paths alone in older pulls
    if isinstance(runs, list) and all(
        isinstance(run, str) or (isinstance(run, dict) and all(isinstance(v, str) for v in run.values()))
        for run in runs
    ):
        found["candidates_from"] = runs
    return found


def pairs_origin(rows: list[dict[str, Any]], run_dir: Path) -> list[dict[str, Any]]:
    """How many of `rows` (`load_preferences`') come from each pulled dataset and round, and from which policies'
    candidates (for the manifest of the run at `run_dir`: which policy and round a reward or DPO run learnt from), a
    policy told by its run id (`runs.policy_key`: the same after runs/ moved) with the first row's run path, relative
    to `run_dir` as a manifest's paths are, as its hint; empty where no row was pulled."""
    from alignkit.runs import policy_in_file, policy_key

    def policies(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(policy_key(run) for run in row.get("candidates_from") or ())

    counts: Counter[tuple[Any, Any, tuple[str, ...]]] = Counter()
    named: dict[tuple[Any, Any, tuple[str, ...]], list[Any]] = {}
    for row in rows:
        key = (row.get("dataset"), row.get("round"), policies(row))
        counts[key] += 1
        named.setdefault(key, [policy_in_file(run, run_dir) for run in row.get("candidates_from") or ()])
    if set(counts) == {(None, None, ())}:
        return []
    return [
        {"dataset": key[0], "round": key[1], "candidates_from": named[key], "rows": n}
        for key, n in sorted(counts.items(), key=lambda item: str(item[0]))
    ]


def annotations(data: dict[str, Any]) -> dict[str, Any]:
    """Optional `margin`, `agreement` (numbers; CSV strings parsed) and `annotators` (names) of a pair, and where a
    pulled pair comes from (`origin`)."""
    found: dict[str, Any] = origin(data)
    for key in ("margin", "agreement"):
        value = number_field(data, key)
        if value is not None:
            found[key] = value
    if "agreement" in found and not 0.0 <= found["agreement"] <= 1.0:
        raise RowError("agreement", f"expected a fraction between 0 and 1, got {found['agreement']}")
    names = data.get("annotators")
    if isinstance(names, str) and names.strip():  # a CSV cell: a JSON list or comma-separated names
        try:
            names = json.loads(names) if names.lstrip().startswith("[") else [n.strip() for n in names.split(",")]
        except json.JSONDecodeError as exc:
            raise RowError("annotators", f"not a valid JSON list ({exc.msg})") from None
    if names not in (None, "", []):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RowError("annotators", "expected a list of annotator names")
        found["annotators"] = names
    return found


def number_field(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RowError(key, f"expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RowError(key, f"expected a number, got {type(value).__name__}")
    if math.isnan(value):
        return None  # an empty cell in a Parquet/pandas column
    if math.isinf(value):
        raise RowError(key, f"expected a finite number, got {value}")
    return float(value)


def label_field(data: dict[str, Any]) -> bool:
    """KTO's `label`: true (desirable) or false (undesirable); CSV spellings true/false/1/0/yes/no."""
    value = data.get("label")
    if value is None:
        raise RowError("label", "missing (true for a desirable completion, false for an undesirable one)")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    raise RowError("label", f"expected true or false, got {value!r}")
