"""Public data formats (LLaMA-Factory, Anthropic HH-RLHF, TRL with extra columns, tool calling) load as alignkit's
canonical rows through the public loaders; rows that fit no format name the closest one and the field; a DPO and an
SFT run train on them."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModelForCausalLM

import alignkit
import alignkit.stages.rl
from alignkit import AlignkitError, generate, runs
from alignkit.config import RLStageConfig
from alignkit.data import check_tool_template, load_chat, prompt_completion
from alignkit.data.formats import NO_TOOLS_HERE, renders_tools
from alignkit.data.preferences import load_preferences, load_unpaired
from alignkit.judges import Prompt
from tests.conftest import CHATML, run_capturing_trainer, run_cli, write_jsonl

QUESTION = "What is 2 plus 2?"
HISTORY = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": QUESTION},
]
PAIR = {
    "prompt": [{"role": "user", "content": QUESTION}],
    "chosen": [{"role": "assistant", "content": "4."}],
    "rejected": [{"role": "assistant", "content": "5."}],
}
SHAREGPT_PAIR = {
    "system": "Be brief.",
    "conversations": [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": QUESTION},
    ],
    "chosen": {"from": "gpt", "value": "4."},
    "rejected": {"from": "gpt", "value": "5."},
}
# What TRL-format hub sets look like: implicit prompt plus scores (trl-lib/ultrafeedback_binarized), and a `prompt`
# repeated inside whole conversations plus `prompt_id`/`messages` columns (HuggingFaceH4/ultrafeedback_binarized).
TRL_WITH_EXTRA_COLUMNS = [
    {
        "chosen": [PAIR["prompt"][0], PAIR["chosen"][0]],
        "rejected": [PAIR["prompt"][0], PAIR["rejected"][0]],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    },
    {
        "prompt": QUESTION,
        "prompt_id": "a1b2",
        "chosen": [PAIR["prompt"][0], PAIR["chosen"][0]],
        "rejected": [PAIR["prompt"][0], PAIR["rejected"][0]],
        "messages": [PAIR["prompt"][0], PAIR["chosen"][0]],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    },
    {**PAIR, "source": "evol_instruct", "score_chosen": None},
]

WEATHER_FUNCTION = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_TOOL = {"type": "function", "function": WEATHER_FUNCTION}
CITIES = ["Paris", "Oslo", "Lima", "Rome"]


def openai_tool_row(city: str) -> dict[str, Any]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": f'{{"city": "{city}"}}'},
    }
    return {
        "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "assistant", "content": f"It is 18C and sunny in {city}."},
        ],
        "tools": [WEATHER_TOOL],
    }


def sharegpt_tool_row(city: str) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT tool data: the call is JSON text in a `function_call` turn, `tools` is JSON text."""
    return {
        "conversations": [
            {"from": "human", "value": f"Weather in {city}?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
            {"from": "observation", "value": "18C and sunny"},
            {"from": "gpt", "value": f"It is 18C and sunny in {city}."},
        ],
        "tools": json.dumps([WEATHER_FUNCTION]),
    }


def canonical_tool_row(city: str, call_id: str | None) -> dict[str, Any]:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
    result = {"role": "tool", "content": "18C and sunny"}
    return {
        "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": "", "tool_calls": [call | ({"id": call_id} if call_id else {})]},
            result | ({"tool_call_id": call_id} if call_id else {}),
            {"role": "assistant", "content": f"It is 18C and sunny in {city}."},
        ],
        "tools": [WEATHER_TOOL],
    }


# its system turn, shortened to fit the tiny model's 512 positions
HERMES_SYSTEM = (
    "You are a function calling AI model. <tools> [{'name': 'get_weather', 'parameters': {'city': 'string'}}] </tools> "
    "Return each call within <tool_call></tool_call> XML tags."
)


def hermes_call(city: str) -> str:
    return f"<tool_call>\n{{'name': 'get_weather', 'arguments': {{'city': '{city}'}}}}\n</tool_call>"


def hermes_row(city: str) -> dict[str, Any]:
    """NousResearch's hermes-function-calling-v1: the tools in the system turn, calls and results as text."""
    return {
        "conversations": [
            {"from": "system", "value": HERMES_SYSTEM},
            {"from": "human", "value": f"Weather in {city}?"},
            {"from": "gpt", "value": hermes_call(city)},
            {"from": "tool", "value": "<tool_response>\n{'temperature': '18C'}\n</tool_response>"},
            {"from": "gpt", "value": f"It is 18C in {city}."},
        ]
    }


# A ChatML template that renders tools and tool calls (as tool-aware hub templates do), and one that shows the tools
# list but drops the calls.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}"
    "{% for call in message['tool_calls'] or [] %}<tool_call>{{ call['function'] | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOOLS_LIST_ONLY_TEMPLATE = "{% for tool in tools or [] %}{{ tool | tojson }}\n{% endfor %}" + CHATML
# A template with no tool role (as Llama 2's and Gemma's): it raises on any other
USER_ASSISTANT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}" + CHATML
)


def load_error(load: Any, path: Path) -> str:
    with pytest.raises(AlignkitError) as error:
        load([str(path)])
    return error.value.message


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def tokenizer_with(model_dir: str, template: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = template
    return tokenizer


# ---- preference rows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_llama_factory_sharegpt_pairs_load_as_conversational_pairs(suffix, tmp_path):
    path = tmp_path / f"sharegpt{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist([SHAREGPT_PAIR]), path)
    elif suffix == ".csv":  # LLaMA-Factory's own export: the turn lists and reply objects as JSON text cells
        cells = [v if isinstance(v, str) else json.dumps(v) for v in SHAREGPT_PAIR.values()]
        write_csv(path, list(SHAREGPT_PAIR), [cells])
    else:
        write_jsonl(path, [SHAREGPT_PAIR])
    system = {"role": "system", "content": "Be brief."}
    assert load_preferences([str(path)]) == [
        {"prompt": [system, *HISTORY], "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    ]


def test_llama_factory_alpaca_pairs_load_with_input_and_system(tmp_path):
    row = {
        "system": "Be brief.",
        "instruction": "Add the numbers.",
        "input": "2 and 2",
        "chosen": "4.",
        "rejected": "5.",
    }
    assert load_preferences([str(write_jsonl(tmp_path / "alpaca.jsonl", [row]))]) == [
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Add the numbers.\n\n2 and 2"},
            ],
            "chosen": PAIR["chosen"],
            "rejected": PAIR["rejected"],
        }
    ]


def test_hh_rlhf_text_splits_into_shared_prompt_turns_and_the_differing_replies(tmp_path):
    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}"
    row = {"chosen": f"{history}\n\nAssistant: 4.", "rejected": f"{history}\n\nAssistant: 5."}
    assert load_preferences([str(write_jsonl(tmp_path / "hh.jsonl", [row]))]) == [
        {"prompt": HISTORY, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    ]


def test_hh_rlhf_prompt_column_is_parsed_and_the_replies_are_what_follows_it(tmp_path):
    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}\n\nAssistant:"
    rm_static = {"prompt": history, "chosen": " 4.", "rejected": " 5."}  # Dahoas/rm-static: the reply continues it
    whole = {"prompt": history, "chosen": f"{history} 4.", "rejected": f"{history} 5."}  # the prompt repeated
    path = write_jsonl(tmp_path / "rm_static.jsonl", [rm_static, whole])
    pair = {"prompt": HISTORY, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    assert load_preferences([str(path)]) == [pair, pair]
    kto = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": history, "completion": " 4.", "label": True}])
    assert load_unpaired([str(kto)]) == [{"prompt": HISTORY, "completion": PAIR["chosen"], "label": True}]


def test_hh_rlhf_prompt_text_is_turns_in_prompt_files_and_sft_rows(tmp_path):
    """Nectar / Dahoas rows hold the prompt as HH text: `rl --data`, `eval --prompts` and SFT read its turns (they
    made one user message of the whole transcript, `Human:`/`Assistant:` markers and the open cue included)."""
    from alignkit.evaluate import load_eval_prompts
    from alignkit.generate import load_prompts

    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}\n\nAssistant: "
    nectar = {"prompt": history, "answers": [{"answer": "4.", "model": "m", "rank": 1.0}], "turns": 2}
    dahoas = {"prompt": history.rstrip(), "response": " 4.", "chosen": " 4.", "rejected": " 5."}
    path = write_jsonl(tmp_path / "prompts.jsonl", [nectar, dahoas])
    assert load_prompts(str(path)) == [HISTORY, HISTORY]
    assert [p.messages for p in load_eval_prompts(str(path))] == [HISTORY, HISTORY]
    sft = write_jsonl(tmp_path / "sft.jsonl", [dahoas])
    assert load_chat([str(sft)]) == [{"messages": HISTORY + PAIR["chosen"]}]


def test_hh_rlhf_prompt_with_a_preamble_reads_the_preamble_as_the_system_turn(tmp_path):
    """A prompt with text before its HH-RLHF transcript and the open `Assistant:` cue (the system prompt of HH-style
    sets) was one user turn holding the preamble, the `Human:`/`Assistant:` markers and the cue, in SFT, reward/dpo,
    kto and generate/eval prompt files. Now the preamble is the system turn and the transcript its turns, the replies
    read after it as after any HH prompt; markers before the first `Human:` turn are refused naming the field."""
    from alignkit.evaluate import load_eval_prompts
    from alignkit.generate import load_prompts

    history = f"Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}\n\nAssistant:"
    prompt = [{"role": "system", "content": "Be brief."}, *HISTORY]
    rows = [
        {"prompt": history, "chosen": " 4.", "rejected": " 5."},
        {"prompt": history, "chosen": f"{history} 4.", "rejected": f"{history} 5."},  # the prompt repeated
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    pair = {"prompt": prompt, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    assert load_preferences([str(path)]) == [pair, pair]
    assert load_prompts(str(path)) == [prompt, prompt]
    assert [p.messages for p in load_eval_prompts(str(path))] == [prompt, prompt]
    kto = write_jsonl(tmp_path / "kto.jsonl", [{"prompt": history, "completion": " 4.", "label": True}])
    assert load_unpaired([str(kto)]) == [{"prompt": prompt, "completion": PAIR["chosen"], "label": True}]
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": history, "completion": " 4."}])
    assert load_chat([str(sft)]) == [{"messages": prompt + PAIR["chosen"]}]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": f"Hi\n\nAssistant: Hello!{history[9:]}", "completion": "4."}])
    assert load_error(load_chat, bad).startswith(
        f"{bad}:line 1: field `prompt`: holds an `Assistant:` turn before its first `Human:` turn"
    )


def test_hh_rlhf_pairs_of_whole_transcripts_after_a_preamble_read_the_preamble_as_the_system_turn(tmp_path, tiny_model):
    """A pair with no prompt column whose `chosen` and `rejected` are whole HH-RLHF transcripts after a preamble (the
    system prompt before the first `Human:` turn) was refused as "prompt missing (needed when chosen and rejected are
    plain strings)": neither is a plain string. The preamble is now the prompt's system turn and the transcripts are
    read as any HH pair's, for reward/dpo and kto; replies that do not share it are refused naming the field."""
    turns = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}\n\nAssistant:"
    row = {"chosen": f"Be brief.{turns} 4.", "rejected": f"Be brief.{turns} 5."}
    prompt = [{"role": "system", "content": "Be brief."}, *HISTORY]
    pair = {"prompt": prompt, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    rows = [row, row | {"system": "Be brief."}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert load_preferences([str(path)]) == [pair, pair]
    assert load_unpaired([str(path)])[:2] == [
        {"prompt": prompt, "completion": PAIR["chosen"], "label": True},
        {"prompt": prompt, "completion": PAIR["rejected"], "label": False},
    ]
    refused = [
        (row | {"rejected": f"Be kind.{turns} 5."}, "`rejected`: has another preamble (system prompt) before its "
         "first `Human:` turn than chosen: the replies of a pair answer one prompt"),
        (row | {"rejected": f"{turns} 5."}, "`rejected`: has no preamble (system prompt) before its first `Human:` "
         "turn where chosen has one"),
        (row | {"chosen": "4."}, "`chosen`: is not a whole HH-RLHF transcript as rejected is"),
        (row | {"system": "Be kind."}, "`system`: differs from the row's own system message"),
    ]  # fmt: skip
    for bad_row, expected in refused:
        bad = write_jsonl(tmp_path / "bad.jsonl", [bad_row])
        assert load_error(load_preferences, bad).startswith(f"{bad}:line 1: field {expected}")
    out = tmp_path / "run"
    result = run_cli("reward", "--data", str(bad), "--model", tiny_model, "--out", str(out))
    assert result.returncode == 2 and "prompt missing" not in result.stderr
    assert f"{bad}:line 1: field `system`: differs" in result.stderr and not out.exists()


def test_hh_rlhf_transcripts_are_never_trained_as_one_reply(tmp_path):
    """An HH-RLHF `chosen` transcript as an SFT completion trained `Human:`/`Assistant:` markers and the user's turns
    as the assistant's words; a completion repeating its prompt trained the prompt twice. A transcript is now read as
    its turns after the prompt, and a reply holding HH turns is refused in every format."""
    transcript = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}\n\nAssistant: 4."
    conversation = {"messages": HISTORY + PAIR["chosen"]}
    rows = [
        {"prompt": "Hi", "completion": transcript},
        {"prompt": "\n\nHuman: Hi\n\nAssistant:", "completion": transcript},
        {"prompt": "Hi", "completion": HISTORY + PAIR["chosen"]},
    ]
    assert load_chat([str(write_jsonl(tmp_path / "sft.jsonl", rows))]) == [conversation] * 3
    inside_a_reply = (
        "holds HH-RLHF `Human:`/`Assistant:` turns inside a reply; split it into turns (messages), or give the whole "
        "transcript from its first `Human:` turn"
    )
    left_whole = f"Hello!\n\nHuman: {QUESTION}\n\nAssistant: 4."
    refused = [
        (load_chat, {"prompt": "Hi", "completion": left_whole}, "`completion`"),
        (load_chat, {"messages": turns(("user", "Hi"), ("assistant", left_whole))}, "`messages[1].content`"),
        (load_chat, {"instruction": "Hi", "output": left_whole}, "`output`"),
        (load_preferences, {"prompt": "Hi", "chosen": left_whole, "rejected": "Go away."}, "`chosen`"),
        (load_unpaired, {"prompt": "Hi", "completion": left_whole, "label": True}, "`completion`"),
    ]
    for load, row, field in refused:
        path = write_jsonl(tmp_path / "bad.jsonl", [row])
        assert load_error(load, path) == f"{path}:line 1: field {field}: {inside_a_reply}"
    path = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "Yo", "completion": transcript}])
    assert "field `completion[0].role`: the completion opens with a user turn" in load_error(load_chat, path)


def test_hh_rlhf_transcript_in_a_prompt_is_its_turns_and_one_left_whole_in_a_user_turn_is_refused(tmp_path):
    """A `prompt` that is a whole HH-RLHF transcript ending with its `Human:` turn (no open `Assistant:` cue) made
    `dpo`/`reward`/`kto` glue the reply onto the user's last turn (`a reply must start with an assistant turn`); HH
    markers inside a user's text (a prompt string, a user turn, Alpaca's `instruction`/`input`/`history`) were
    trained or generated from as the user's words. A whole transcript is read as its turns, everywhere, through the
    one HH splitter; a user turn that is a transcript where it cannot be split is refused naming the field, and
    markers after the user's own words are that user's text (a chat to summarise)."""
    from alignkit.generate import load_prompts

    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}"
    reply = [{"role": "assistant", "content": "4."}]
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": history, "chosen": "4.", "rejected": "5."}])
    assert load_preferences([str(path)]) == [
        {"prompt": HISTORY, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    ]
    assert load_prompts(str(path)) == [HISTORY]
    write_jsonl(path, [{"prompt": history, "completion": "4.", "label": True}])
    assert load_unpaired([str(path)]) == [{"prompt": HISTORY, "completion": reply, "label": True}]
    write_jsonl(
        path, [{"prompt": history, "completion": "4."}, {"prompt": f"\n\nHuman: {QUESTION}", "completion": "4."}]
    )
    assert load_chat([str(path)]) == [{"messages": HISTORY + reply}, {"messages": HISTORY[-1:] + reply}]

    inside_a_user_turn = (
        "holds HH-RLHF `Human:`/`Assistant:` turns inside a user turn; split it into turns (messages), or give the "
        "whole transcript from its first `Human:` turn"
    )

    def prompt_file(paths: list[str]) -> Any:
        return load_prompts(paths[0])

    quoted = f"Summarise this chat:{history}"  # the user's own words first: a chat the user asks about
    summarise = [{"role": "user", "content": quoted}]
    write_jsonl(path, [{"prompt": quoted, "completion": "4."}, {"instruction": quoted, "output": "4."}])
    assert load_chat([str(path)]) == [{"messages": summarise + reply}] * 2
    write_jsonl(path, [{"prompt": quoted, "chosen": "4.", "rejected": "5."}])
    assert load_preferences([str(path)])[0]["prompt"] == summarise and load_prompts(str(path)) == [summarise]
    refused = [
        (load_chat, {"messages": turns(("user", history), ("assistant", "4."))}, "`messages[0].content`"),
        (load_chat, {"instruction": "Answer it.", "input": history, "output": "4."}, "`input`"),
        (load_chat, {"instruction": "And?", "history": [[history, "Hello!"]], "output": "4."}, "`history[0][0]`"),
        (
            load_preferences,
            {"prompt": turns(("user", history)), "chosen": "4.", "rejected": "5."},
            "`prompt[0].content`",
        ),
        (load_unpaired, {"prompt": turns(("user", history)), "completion": "4.", "label": True}, "`prompt[0].content`"),
        (prompt_file, {"text": f"\n\nHuman: {QUESTION}"}, "`text`"),
    ]
    for load, row, field in refused:
        write_jsonl(path, [row])
        error = load_error(load, path)
        assert error.startswith(f"{path}:line 1: field {field}: {inside_a_user_turn}"), (row, error)


def test_hh_rlhf_transcript_left_whole_in_a_system_or_tool_turn_is_refused_as_in_a_user_turn(tmp_path):
    """A system message or tool result that was a whole HH-RLHF transcript (a `system` column filled with the chat,
    an observation holding the turns) was trained and prompted with as that turn's text, markers and the assistant's
    words included, where a user turn was refused. Now every turn but a reply is checked as a user turn is: refused
    naming the field when it is a transcript from its first `Human:` turn (written on Windows too), kept when the
    markers follow the turn's own words."""
    from alignkit.generate import load_prompts

    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}"
    windows = f"Human: Hi\r\n\r\nAssistant: Hello!\r\n\r\nHuman: {QUESTION}"
    weather = openai_tool_row("Paris")

    def with_result(result: str) -> dict[str, Any]:
        messages = [dict(m) for m in weather["messages"]]
        messages[2]["content"] = result
        return {**weather, "messages": messages}

    def prompt_file(paths: list[str]) -> Any:
        return load_prompts(paths[0])

    inside = "holds HH-RLHF `Human:`/`Assistant:` turns inside {}; split it into turns (messages)"
    sharegpt = [{"from": "system", "value": windows}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "4."}]
    refused = [
        (
            load_chat,
            {"messages": turns(("system", history), ("user", "Hi"), ("assistant", "4."))},
            "`messages[0].content`",
        ),
        (load_chat, {"conversations": sharegpt}, "`conversations[0].value`"),
        (load_chat, {"system": history, "instruction": "Hi", "output": "4."}, "`system`"),
        (load_preferences, {"system": windows, "prompt": QUESTION, "chosen": "4.", "rejected": "5."}, "`system`"),
        (load_unpaired, {"system": history, "prompt": QUESTION, "completion": "4.", "label": True}, "`system`"),
        (prompt_file, {"system": history, "prompt": QUESTION}, "`system`"),
        (load_chat, with_result(history), "`messages[2].content`"),
    ]
    for load, row, field in refused:
        path = write_jsonl(tmp_path / "bad.jsonl", [row])
        error = load_error(load, path)
        turn = "a tool result" if field == "`messages[2].content`" else "a system message"
        assert error == f"{path}:line 1: field {field}: {inside.format(turn)}", (row, error)

    example = f"Answer as in this chat:{history}"  # the system message's own words first: an example it quotes
    log = f"Chat log found:{history}"
    path = write_jsonl(
        tmp_path / "kept.jsonl", [{"system": example, "instruction": QUESTION, "output": "4."}, with_result(log)]
    )
    rows = load_chat([str(path)])
    assert rows[0]["messages"][0] == {"role": "system", "content": example}
    assert rows[1]["messages"][2]["content"] == log


def test_dolly_context_is_part_of_the_prompt_and_response_the_answer(tmp_path):
    """databricks-dolly-15k rows (`instruction`, `context`, `response`): SFT refused them, and as prompts (`rl
    --data`, `eval --prompts`) the `context` a closed-QA instruction asks about was dropped."""
    from alignkit.evaluate import load_eval_prompts

    dolly = {"instruction": QUESTION, "context": "Two and two.", "response": "4.", "category": "closed_qa"}
    open_qa = {"instruction": QUESTION, "context": "", "response": "4.", "category": "open_qa"}
    path = write_jsonl(tmp_path / "dolly.jsonl", [dolly, open_qa])
    asked = [{"role": "user", "content": f"{QUESTION}\n\nTwo and two."}]
    assert load_chat([str(path)]) == [
        {"messages": asked + PAIR["chosen"]},
        {"messages": PAIR["prompt"] + PAIR["chosen"]},
    ]
    assert [(p.messages, p.spec.reference) for p in load_eval_prompts(str(path))] == [
        (asked, "4."),
        (PAIR["prompt"], "4."),
    ]
    kto = write_jsonl(tmp_path / "kto.jsonl", [dolly | {"label": True}])
    assert load_unpaired([str(kto)]) == [{"prompt": asked, "completion": PAIR["chosen"], "label": True}]
    both = write_jsonl(tmp_path / "both.jsonl", [dolly | {"input": "Three."}])
    with pytest.raises(AlignkitError, match=r"line 1: field `context`: the row has both `input` and `context`"):
        load_chat([str(both)])


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (  # oasst1: one message of a conversation tree per row; the assistant's replies became prompts
            {"message_id": "m2", "parent_id": "m1", "role": "assistant", "text": "4.", "lang": "en", "rank": 0},
            "field `role`: an OpenAssistant message-tree row",
        ),
        (  # oasst_top1: a whole chat in ChatML; the prompt held the answer
            {"text": f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n"},
            "field `text`: holds a whole chat in ChatML markup",
        ),
        (  # timdettmers/openassistant-guanaco
            {"text": f"### Human: {QUESTION}### Assistant: 4."},
            "field `text`: holds a whole chat in `### Human:`/`### Assistant:` markup",
        ),
    ],
)
def test_conversation_text_rows_are_refused_as_prompts_and_sft_rows(tmp_path, row, problem):
    """A `text` row was one prompt (`rl --data`, `eval --prompts`) whatever it held; SFT called it pretraining text."""
    from alignkit.evaluate import load_eval_prompts
    from alignkit.generate import load_prompts

    path = write_jsonl(tmp_path / "oasst.jsonl", [row])
    for load in (load_prompts, load_eval_prompts, lambda p: load_chat([p])):
        with pytest.raises(AlignkitError, match=rf"oasst.jsonl:line 1: {re.escape(problem)}.*{{messages: \["):
            load(str(path))
    assert load_prompts(str(write_jsonl(tmp_path / "plain.jsonl", [{"text": QUESTION}]))) == [PAIR["prompt"]]


def test_stanford_shp_rows_are_pairs_by_their_label(tmp_path):
    """stanfordnlp/SHP: `labels` 1 prefers `human_ref_A`, 0 `human_ref_B` (it was refused: field `chosen`: missing)."""
    from alignkit.generate import load_prompts

    shp = {"post_id": "p1", "domain": "askmath_train", "history": QUESTION, "score_A": 9, "score_B": 2}
    rows = [
        shp | {"human_ref_A": "4.", "human_ref_B": "5.", "labels": 1},
        shp | {"human_ref_A": "5.", "human_ref_B": "4.", "labels": 0},
    ]
    path = str(write_jsonl(tmp_path / "shp.jsonl", rows))
    assert load_preferences([path]) == [PAIR, PAIR]
    assert load_unpaired([path])[:2] == [
        {"prompt": PAIR["prompt"], "completion": PAIR["chosen"], "label": True},
        {"prompt": PAIR["prompt"], "completion": PAIR["rejected"], "label": False},
    ]
    assert load_prompts(path) == [PAIR["prompt"]] * 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0] | {"labels": 2}])
    with pytest.raises(AlignkitError, match=r"line 1: field `labels`: expected 1 \(human_ref_A preferred\)"):
        load_preferences([str(bad)])


@pytest.mark.parametrize(
    ("row", "fix"),
    [
        (
            {
                "prompt": QUESTION,
                "response_0": "4.",
                "response_1": "5.",
                "better_response_id": 0,
                "safer_response_id": 1,
            },
            "PKU-SafeRLHF data: make `chosen`/`rejected` from response_0/response_1 by `better_response_id`",
        ),
        (
            {
                "prompt": f"\n\nHuman: {QUESTION}\n\nAssistant: ",
                "answers": [{"answer": "4.", "rank": 1.0}],
                "num_responses": 1,
            },
            "Nectar data: its `answers` are ranked (`rank` 1 is best), not paired",
        ),
        (
            {"instruction": QUESTION, "completions": [{"response": "4.", "overall_score": 9.0}]},
            "UltraFeedback (not binarized) data: its `completions` are rated, not paired",
        ),
    ],
)
def test_rows_that_need_a_choice_are_refused_naming_the_dataset_and_the_choice(tmp_path, row, fix):
    """Which response is chosen depends on a choice alignkit won't guess; the error said only `chosen: missing` and
    listed every column."""
    path = str(write_jsonl(tmp_path / "data.jsonl", [row]))
    for load in (load_preferences, load_unpaired, load_chat):
        with pytest.raises(AlignkitError, match=re.escape(f"missing; the row looks like {fix}")):
            load([path])


def test_replies_that_go_on_with_the_conversation_give_their_shared_turns_to_the_prompt(tmp_path):
    """Capybara-DPO: `prompt` is the first user turn, chosen/rejected the rest of the conversation (with or without
    the prompt repeated first); only the final assistant turn differs."""
    rest = HISTORY[1:]
    capybara = {"prompt": "Hi", "chosen": [*rest, *PAIR["chosen"]], "rejected": [*rest, *PAIR["rejected"]]}
    repeated = {"prompt": "Hi", "chosen": HISTORY + PAIR["chosen"], "rejected": HISTORY + PAIR["rejected"]}
    path = write_jsonl(tmp_path / "capybara.jsonl", [capybara, repeated])
    pair = {"prompt": HISTORY, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    assert load_preferences([str(path)]) == [pair, pair]


def test_trl_pairs_with_extra_columns_load_and_the_extra_columns_are_dropped(tmp_path):
    path = write_jsonl(tmp_path / "ultrafeedback.jsonl", TRL_WITH_EXTRA_COLUMNS)
    assert load_preferences([str(path)]) == [PAIR, PAIR, PAIR]


def test_llama_factory_kto_conversations_split_at_the_last_assistant_turn(tmp_path):
    rows = [
        {"messages": [*HISTORY, {"role": "assistant", "content": "4."}], "label": True},
        {"conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": "5."}], "label": False},
    ]
    assert load_unpaired([str(write_jsonl(tmp_path / "kto.jsonl", rows))]) == [
        {"prompt": HISTORY, "completion": PAIR["chosen"], "label": True},
        {"prompt": PAIR["prompt"], "completion": PAIR["rejected"], "label": False},
    ]


# ---- chat rows ------------------------------------------------------------------------------------------------

FRENCH = {"role": "system", "content": "Always answer in French."}


def test_a_system_column_becomes_the_first_turn_in_every_chat_and_preference_format(tmp_path):
    hello, bonjour = {"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Bonjour!"}
    system = {"system": FRENCH["content"]}
    chat = [
        system | {"messages": [hello, bonjour]},
        system | {"prompt": "Hello?", "completion": "Bonjour!"},
        system | {"messages": [FRENCH, hello, bonjour]},  # the same instruction twice is one system turn
    ]
    assert load_chat([str(write_jsonl(tmp_path / "chat.jsonl", chat))]) == [{"messages": [FRENCH, hello, bonjour]}] * 3
    pairs = [system | PAIR, system | TRL_WITH_EXTRA_COLUMNS[0]]
    assert (
        load_preferences([str(write_jsonl(tmp_path / "pairs.jsonl", pairs))])
        == [{**PAIR, "prompt": [FRENCH, *PAIR["prompt"]]}] * 2
    )
    kto = [system | {"prompt": QUESTION, "completion": "4.", "label": True}]
    assert load_unpaired([str(write_jsonl(tmp_path / "kto.jsonl", kto))]) == [
        {"prompt": [FRENCH, *PAIR["prompt"]], "completion": PAIR["chosen"], "label": True}
    ]


def test_a_system_column_that_differs_from_the_rows_system_message_is_refused(tmp_path):
    row = {"system": "Be brief.", "messages": [FRENCH, {"role": "user", "content": "Hi"}, HISTORY[1]]}
    path = write_jsonl(tmp_path / "chat.jsonl", [row])
    assert load_error(load_chat, path) == (
        f"{path}:line 1: field `system`: differs from the row's own system message; keep one of the two"
    )


def test_alpaca_history_becomes_the_earlier_turns_of_sft_and_preference_rows(tmp_path):
    history = {"history": [["What is 1+1?", "2."]]}
    earlier = turns(("user", "What is 1+1?"), ("assistant", "2."))
    sft = [history | {"instruction": "And times 3?", "input": "", "output": "That gives 6."}]
    assert load_chat([str(write_jsonl(tmp_path / "alpaca.jsonl", sft))]) == [
        {"messages": [*earlier, *turns(("user", "And times 3?"), ("assistant", "That gives 6."))]}
    ]
    csv_cell = write_csv(  # a CSV history cell holds JSON
        tmp_path / "alpaca.csv",
        ["instruction", "output", "history"],
        [["And times 3?", "6.", '[["What is 1+1?", "2."]]']],
    )
    assert load_chat([str(csv_cell)])[0]["messages"][:2] == earlier
    pair = [history | {"instruction": "And times 3?", "chosen": "6.", "rejected": "5."}]
    assert load_preferences([str(write_jsonl(tmp_path / "pairs.jsonl", pair))]) == [
        {
            "prompt": [*earlier, *turns(("user", "And times 3?"))],
            "chosen": turns(("assistant", "6.")),
            "rejected": turns(("assistant", "5.")),
        }
    ]


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (
            "What is 1+1? 2.",
            "field `history`: expected a list of [instruction, response] pairs (not valid JSON: Expecting value)",
        ),
        ({"q": "a"}, "field `history`: expected a list of [instruction, response] pairs, got dict"),
        ([["What is 1+1?"]], "field `history[0]`: expected an [instruction, response] pair of non-empty strings"),
        ([["What is 1+1?", ""]], "field `history[0]`: expected an [instruction, response] pair of non-empty strings"),
    ],
    ids=["text", "object", "one-element", "empty-response"],
)
def test_malformed_alpaca_history_is_one_error_naming_the_field(history, expected, tmp_path):
    path = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Q", "output": "A", "history": history}])
    assert load_error(load_chat, path) == f"{path}:line 1: {expected}"


def test_openai_weight_0_keeps_an_assistant_turn_as_untrained_context(tmp_path):
    hi = turns(("user", "Say hi"), ("assistant", "Hi there!"))
    question = turns(("user", "What is 2+2?"), ("assistant", "4."))
    row = {"messages": [hi[0], hi[1] | {"weight": 0}, question[0], question[1] | {"weight": 1}]}
    rows = load_chat([str(write_jsonl(tmp_path / "weights.jsonl", [row]))])
    assert rows == [{"messages": [hi[0], hi[1] | {"weight": 0}, *question]}]
    assert prompt_completion(rows) == [{"prompt": [*hi, question[0]], "completion": [question[1]]}]


def test_openai_developer_turn_is_the_system_turn_in_chat_and_preference_rows(tmp_path):
    """OpenAI's newer models name the system turn `developer`: a row exported from them was refused (`unknown role
    'developer'`)."""
    developer = {"role": "developer", "content": "Answer briefly."}
    chat = {"messages": [developer, *turns(("user", "What is 2+2?"), ("assistant", "4."))]}
    rows = load_chat([str(write_jsonl(tmp_path / "chat.jsonl", [chat]))])
    assert rows == [{"messages": [{"role": "system", "content": "Answer briefly."}, *chat["messages"][1:]]}]
    pair = {"prompt": [developer, *turns(("user", "Hi"))], "chosen": "Hello!", "rejected": "Go away."}
    (row,) = load_preferences([str(write_jsonl(tmp_path / "pairs.jsonl", [pair]))])
    assert row["prompt"][0] == {"role": "system", "content": "Answer briefly."}


def test_original_sharegpt_dumps_name_the_models_turns_chatgpt_bing_or_bard(tmp_path):
    """The ShareGPT dumps as shared name the model's turn for the assistant that gave it; they were refused as
    unknown roles."""
    said = [("human", "Say hi"), ("chatgpt", "Hi!"), ("human", "Again"), ("bing", "Hello!"), ("human", "Once more")]
    row = {"conversations": [{"from": who, "value": text} for who, text in [*said, ("bard", "Hey!")]]}
    rows = load_chat([str(write_jsonl(tmp_path / "sharegpt.jsonl", [row]))])
    texts = ["Say hi", "Hi!", "Again", "Hello!", "Once more", "Hey!"]
    messages = [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]
    assert rows == [{"messages": messages}]


def test_sharegpt_weight_0_keeps_a_gpt_turn_as_untrained_context_and_a_null_weight_is_trained(tmp_path):
    """ShareGPT `weight`s (as axolotl reads them) were ignored: a `"weight": 0` turn was trained. A null weight (a
    Parquet gap, as in SlimOrca's human turns) is no weight."""
    row = {
        "conversations": [
            {"from": "human", "value": "Say hi", "weight": None},
            {"from": "gpt", "value": "Hi there!", "weight": 0},
            {"from": "human", "value": "What is 2+2?", "weight": None},
            {"from": "gpt", "value": "4.", "weight": None},
        ]
    }
    rows = load_chat([str(write_jsonl(tmp_path / "sharegpt.jsonl", [row]))])
    hi = turns(("user", "Say hi"), ("assistant", "Hi there!"))
    assert prompt_completion(rows) == [
        {"prompt": [*hi, {"role": "user", "content": "What is 2+2?"}], "completion": turns(("assistant", "4."))}
    ]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ((0.5, 1), "field `messages[1].weight`: expected 0 (not trained) or 1 (trained), got 0.5"),
        (("0", 1), "field `messages[1].weight`: expected 0 (not trained) or 1 (trained), got '0'"),
        ((0, 0), "field `messages`: every assistant turn has weight 0 (nothing to learn from)"),
    ],
    ids=["fraction", "text", "all-zero"],
)
def test_assistant_weights_other_than_0_or_1_or_all_0_are_refused(weights, expected, tmp_path):
    replies = [{"role": "assistant", "content": f"A{i}", "weight": w} for i, w in enumerate(weights)]
    row = {"messages": [HISTORY[0], replies[0], {"role": "user", "content": QUESTION}, replies[1]]}
    path = write_jsonl(tmp_path / "weights.jsonl", [row])
    assert load_error(load_chat, path) == f"{path}:line 1: {expected}"


# ---- prompt files (generate, eval, rl, feedback simulate) -------------------------------------------------------


def test_a_txt_prompt_file_holds_a_prompt_per_line_or_per_paragraph(tmp_path):
    """A plain list of prompts, one per line, was read as one paragraph and refused ("field `prompt`: missing")."""
    from alignkit import evaluate, generate, synth

    lines = tmp_path / "prompts.txt"
    lines.write_text("Write a haiku.\nExplain gravity.\nName three rivers.\n")
    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text("Summarise this:\nThe sky is blue.\n\nName three rivers.\n")
    assert [p.messages for p in generate.load_prompt_items(str(lines))] == [
        [{"role": "user", "content": text}] for text in ("Write a haiku.", "Explain gravity.", "Name three rivers.")
    ]
    assert [p.messages[-1]["content"] for p in evaluate.load_eval_prompts(str(paragraphs))] == [
        "Summarise this:\nThe sky is blue.",
        "Name three rivers.",
    ]
    assert [s["task"] for s in synth.load_seeds(str(lines))] == [
        "Write a haiku.",
        "Explain gravity.",
        "Name three rivers.",
    ]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(AlignkitError, match="no rows"):
        generate.load_prompt_items(str(tmp_path / "empty.txt"))


def test_prompt_rows_take_every_training_shape_with_its_system_and_history(tmp_path):
    from alignkit.generate import load_prompts
    from alignkit.jsonl import prompt_id

    system = {"role": "system", "content": "Be brief."}
    rows = [
        {"prompt": QUESTION},
        {"system": "Be brief.", "prompt": QUESTION},
        {"system": "Be brief.", "instruction": QUESTION, "history": [["Hi", "Hello!"]]},
        {"messages": [*HISTORY, {"role": "assistant", "content": "4."}], "system": "Be brief."},
        {"conversations": SHAREGPT_PAIR["conversations"], "system": "Be brief."},
    ]
    prompts = load_prompts(str(write_jsonl(tmp_path / "prompts.jsonl", rows)))
    assert prompts == [turns(("user", QUESTION)), [system, *turns(("user", QUESTION))]] + [[system, *HISTORY]] * 3
    # ids are the messages' hash: a plain prompt keeps the id every earlier round gave it
    assert prompt_id(prompts[0]) == prompt_id([{"role": "user", "content": QUESTION}])
    assert prompt_id(turns(("user", "Hi"))) == "b03cbbe7211f66c1"


def test_preference_files_are_prompt_files_with_the_prompt_dpo_reads(tmp_path):
    """`rl --data` / `eval --prompts` on Intel/orca_dpo_pairs (`question`, `system`) and Anthropic HH-RLHF (only
    `chosen`/`rejected`) were refused (field `prompt`: missing) though `alignkit dpo` reads their prompts."""
    from alignkit.generate import load_prompts

    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}"
    first, later = {"role": "user", "content": "Hi"}, {"role": "user", "content": QUESTION}
    capybara = [first, {"role": "assistant", "content": "Hello!"}, later]  # `prompt` is the first turn only
    rows = [
        {"system": "Be brief.", "question": QUESTION, "chosen": "4.", "rejected": "5."},
        {"chosen": f"{history}\n\nAssistant: 4.", "rejected": f"{history}\n\nAssistant: 5."},
        {
            "prompt": "Hi",
            "chosen": [*capybara, {"role": "assistant", "content": "4."}],
            "rejected": [*capybara, {"role": "assistant", "content": "5."}],
        },
    ]
    path = str(write_jsonl(tmp_path / "pairs.jsonl", rows))
    assert load_prompts(path) == [[{"role": "system", "content": "Be brief."}, *PAIR["prompt"]], HISTORY, capybara]
    assert load_prompts(path) == [pair["prompt"] for pair in load_preferences([path])]


# ---- file types -----------------------------------------------------------------------------------------------


def test_csv_cells_that_start_with_a_bracket_or_brace_are_text_unless_they_are_turns(tmp_path):
    sft = write_csv(
        tmp_path / "sft.csv",
        ["prompt", "completion"],
        [
            ["[INST] What is 2+2? [/INST]", "4."],
            ["What does [citation needed] mean?", "[citation needed] marks an unsourced claim."],
            ["Give the first three primes as a JSON list", "[2, 3, 5]"],
            ["Give the point as JSON", '{"x": 1, "y": 2}'],
            ["Hi", json.dumps([{"role": "assistant", "content": "Hello!"}])],
        ],
    )
    assert load_chat([str(sft)]) == [
        {"messages": turns(("user", "[INST] What is 2+2? [/INST]"), ("assistant", "4."))},
        {
            "messages": turns(
                ("user", "What does [citation needed] mean?"),
                ("assistant", "[citation needed] marks an unsourced claim."),
            )
        },
        {"messages": turns(("user", "Give the first three primes as a JSON list"), ("assistant", "[2, 3, 5]"))},
        {"messages": turns(("user", "Give the point as JSON"), ("assistant", '{"x": 1, "y": 2}'))},
        {"messages": turns(("user", "Hi"), ("assistant", "Hello!"))},
    ]
    pairs = write_csv(tmp_path / "pairs.csv", ["prompt", "chosen", "rejected"], [["Primes?", "[2, 3, 5]", "[2, 4, 6]"]])
    assert load_preferences([str(pairs)]) == [
        {
            "prompt": turns(("user", "Primes?")),
            "chosen": turns(("assistant", "[2, 3, 5]")),
            "rejected": turns(("assistant", "[2, 4, 6]")),
        }
    ]


def test_csv_from_pandas_reads_message_lists_written_as_python_reprs(tmp_path):
    """`df.to_csv` writes a list of dicts as its repr (single quotes): the pair trained the repr text as the replies
    (`"[{'role': 'user', ..."`); numpy's repr (`Dataset.to_pandas()`: no commas) is refused at the row's first line."""

    ultrafeedback = {
        "prompt": QUESTION,
        "chosen": HISTORY[2:] + PAIR["chosen"],
        "rejected": HISTORY[2:] + PAIR["rejected"],
    }
    pd.DataFrame([ultrafeedback]).to_csv(tmp_path / "pairs.csv", index=False)
    assert load_preferences([str(tmp_path / "pairs.csv")]) == [PAIR]
    pd.DataFrame([{"prompt": PAIR["prompt"], "completion": PAIR["chosen"]}]).to_csv(tmp_path / "sft.csv", index=False)
    assert load_chat([str(tmp_path / "sft.csv")]) == [{"messages": PAIR["prompt"] + PAIR["chosen"]}]
    pd.DataFrame([SHAREGPT_PAIR]).to_csv(tmp_path / "sharegpt.csv", index=False)  # reply objects as dict reprs
    assert load_preferences([str(tmp_path / "sharegpt.csv")])[0]["chosen"] == PAIR["chosen"]

    from datasets import Dataset

    Dataset.from_list([ultrafeedback]).to_pandas().to_csv(tmp_path / "numpy.csv", index=False)
    assert load_error(load_preferences, tmp_path / "numpy.csv") == (
        f"{tmp_path / 'numpy.csv'}:line 2: column `chosen` looks like a list of messages but is neither JSON nor a "
        "Python list"
    )


def test_a_byte_order_mark_and_windows_line_endings_read_as_the_same_rows(tmp_path):
    """Files saved on Windows (Notepad's UTF-8 BOM, CRLF line ends): the rows are the same, and a CSV cell over
    several lines holds `\n` line ends, not `\r\n`."""
    rows = [{"instruction": "Say hi\non two lines", "input": "", "output": "hi"}, {"instruction": "Add", "output": "4"}]
    expected = load_chat([str(write_jsonl(tmp_path / "unix.jsonl", rows))])
    bom = b"\xef\xbb\xbf"
    jsonl = "".join(json.dumps(row) + "\r\n" for row in rows)
    (tmp_path / "windows.jsonl").write_bytes(bom + jsonl.encode())
    (tmp_path / "windows.json").write_bytes(bom + json.dumps(rows, indent=2).replace("\n", "\r\n").encode())
    csv_text = 'instruction,input,output\r\n"Say hi\r\non two lines",,hi\r\nAdd,,4\r\n'
    (tmp_path / "windows.csv").write_bytes(bom + csv_text.encode())
    for name in ("windows.jsonl", "windows.json", "windows.csv"):
        assert load_chat([str(tmp_path / name)]) == expected, name
    (tmp_path / "bad.csv").write_bytes(bom + csv_text.replace(",,4", ",,").encode())
    assert load_error(load_chat, tmp_path / "bad.csv").startswith(f"{tmp_path / 'bad.csv'}:line 4: field `output`")


def test_windows_line_ends_inside_text_are_newlines_in_every_file_type(tmp_path):
    """A `\r\n` inside a JSON or JSONL string, a Parquet value or a save dir's column reached the chat template as
    `\r\n` (only a CSV cell was read as `\n`): the same text trained otherwise by file type, and an HH-RLHF turn
    written on Windows (`\r\n\r\nHuman:`) inside a reply was trained as the reply."""
    from datasets import Dataset

    windows = [{"instruction": "Say hi\r\non two lines", "input": "", "output": "hi\r\nthere"}]
    write_jsonl(tmp_path / "rows.jsonl", windows)
    (tmp_path / "rows.json").write_text(json.dumps(windows))
    pq.write_table(pa.Table.from_pylist(windows), tmp_path / "rows.parquet")
    pd.DataFrame(windows).to_csv(tmp_path / "rows.csv", index=False)
    Dataset.from_list(windows).save_to_disk(str(tmp_path / "saved"))
    expected = [{"messages": turns(("user", "Say hi\non two lines"), ("assistant", "hi\nthere"))}]
    for name in ("rows.jsonl", "rows.json", "rows.parquet", "rows.csv", "saved"):
        assert load_chat([str(tmp_path / name)]) == expected, name
    pair = {"prompt": turns(("user", "Add\r\n2 and 2")), "chosen": "4.\r\nDone.", "rejected": "5."}
    assert load_preferences([str(write_jsonl(tmp_path / "pairs.jsonl", [pair]))])[0]["prompt"][0]["content"] == (
        "Add\n2 and 2"
    )
    hh = write_jsonl(
        tmp_path / "hh.jsonl", [{"prompt": "Hi", "completion": "Hello!\r\n\r\nHuman: 2+2?\r\n\r\nAssistant: 4."}]
    )
    assert "field `completion`: holds HH-RLHF `Human:`/`Assistant:` turns inside a reply" in load_error(load_chat, hh)


def test_old_mac_line_ends_are_newlines_and_only_line_ends_split_a_file_into_lines(tmp_path):
    """A lone `\r` (old Mac line ends) inside text reached the chat template as `\r` where `\r\n` was read as `\n`,
    so an HH-RLHF turn written that way (`\r\rHuman:`) inside a reply was trained as the reply; a CSV whose rows end in
    `\r` was refused (`line 0: malformed CSV`). And a JSON Lines file was split at every line break `str.splitlines`
    knows, so a row holding U+2028 unescaped (as `json.dumps(..., ensure_ascii=False)` and alignkit itself write
    it) was `not valid JSON` past the first line, in a data file and in an interrupted command's saved rows."""
    from alignkit import jsonl

    expected = [{"messages": turns(("user", "Say hi\non two lines"), ("assistant", "hi\nthere"))}] * 2
    mac = [{"instruction": "Say hi\ron two lines", "input": "", "output": "hi\rthere"}] * 2
    (tmp_path / "mac.jsonl").write_text("".join(json.dumps(row) + "\r" for row in mac))
    (tmp_path / "mac.csv").write_bytes(b"instruction,input,output\r" + b'"Say hi\ron two lines",,"hi\rthere"\r' * 2)
    for name in ("mac.jsonl", "mac.csv"):
        assert load_chat([str(tmp_path / name)]) == expected, name
    (tmp_path / "bad.csv").write_bytes(b'instruction,input,output\r"Say hi\ron two lines",,hi\rAdd,,\r')
    assert load_error(load_chat, tmp_path / "bad.csv").startswith(f"{tmp_path / 'bad.csv'}:line 4: field `output`")
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"prompt": "Hi", "completion": "Hello!\r\rHuman: 2+2?\r\rAssistant: 4."}])
    assert "field `completion`: holds HH-RLHF `Human:`/`Assistant:` turns inside a reply" in load_error(load_chat, hh)

    separated = [{"instruction": "Hi", "output": "Hello!"}, {"instruction": "Say\u2028hi", "output": "hi\x85there"}]
    path = tmp_path / "unescaped.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in separated), encoding="utf-8")
    assert load_chat([str(path)])[1] == {"messages": turns(("user", "Say\u2028hi"), ("assistant", "hi\x85there"))}
    out = tmp_path / "candidates.jsonl"
    jsonl.append_partial(out, separated)
    assert jsonl.start_partial(out, overwrite=False, resume=True, command="generate") == separated


def test_json_lines_saved_as_json_is_read_as_json_lines(tmp_path):
    rows = [{"messages": turns(("user", f"Q{i}"), ("assistant", f"A{i}"))} for i in range(3)]
    path = write_jsonl(tmp_path / "train.json", rows)  # as many hub datasets ship it
    assert load_chat([str(path)]) == rows
    write_jsonl(path, [*rows, {"messages": turns(("user", "Q3"))}])
    assert load_error(load_chat, path).startswith(f"{path}:line 4: field `messages`: has no assistant turn")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_json_list_or_pretty_printed_objects_are_read_whatever_the_suffix(suffix, tmp_path):
    """`json.dump(rows, f, indent=2)` into `train.jsonl`, or objects printed one after another: refused as `line 1:
    not valid JSON` (JSON Lines) or `expected a JSON object, got list`."""
    rows = [{"messages": turns(("user", f"Q{i}"), ("assistant", f"A{i}"))} for i in range(2)]
    path = tmp_path / f"train{suffix}"
    for text in (json.dumps(rows, indent=2), json.dumps(rows), "\n".join(json.dumps(row, indent=2) for row in rows)):
        path.write_text(text)
        assert load_chat([str(path)]) == rows
    path.write_text("\n".join(json.dumps(row, indent=2) for row in [*rows, {"messages": turns(("user", "Q2"))}]))
    assert load_error(load_chat, path).startswith(f"{path}:line 25: field `messages`: has no assistant turn")


def test_a_cut_off_json_lines_row_is_named_by_its_own_line_first_last_or_after_a_blank_line(tmp_path):
    """A first line cut off is not read as the start of pretty-printed JSON and reported where that JSON breaks (line
    2), also when the line after it is broken too (it was `line 2: not valid JSON (Expecting ',' delimiter)`, as a
    whole .json file's error); a cut-off last line says what is cut off (not `starting at at column`), and a blank
    line keeps the count. Pretty-printed JSON broken on a later line is named at that line."""
    rows = [json.dumps({"messages": turns(("user", f"Q{i}"), ("assistant", f"A{i}"))}) for i in range(3)]
    cut = rows[0].split(', {"role": "assistant"')[0]  # ends after the user turn: `... "Q0"}`
    pretty_cut = json.dumps([json.loads(row) for row in rows], indent=1)[:-20]  # a JSON list saved as .jsonl, cut
    first_cut = f"line 1: not valid JSON (Expecting ',' delimiter at column {len(cut) + 1})"
    pretty = json.dumps(json.loads(rows[0]), indent=2).replace('"messages": [', '"messages": [,')
    compact = rows[0].replace("[", "[\n").replace("}, ", "},\n").replace('"A0"}', '"A0"},')  # broken on line 3
    path = tmp_path / "train.jsonl"
    for lines, problem in (
        ([cut, *rows[1:]], first_cut),
        ([cut, cut, rows[2]], first_cut),
        ([cut, "", rows[1][:30], rows[2]], first_cut),
        ([cut, "not json", rows[2]], first_cut),
        ([rows[0][:44], cut], "line 1: not valid JSON (Unterminated string starting at column 43)"),
        ([pretty], "line 2: not valid JSON (Expecting value)"),
        ([compact], "line 3: not valid JSON"),
        (["", cut, rows[1]], "line 2: not valid JSON (Expecting ',' delimiter"),
        ([cut], "line 1: not valid JSON (Expecting ',' delimiter"),
        ([*rows[:2], rows[2][:44]], "line 3: not valid JSON (Unterminated string starting at column 43)"),
        ([rows[0], "", rows[1], cut], "line 4: not valid JSON (Expecting ',' delimiter"),
        ([pretty_cut], f"line {pretty_cut.count(chr(10)) + 1}: not valid JSON (the file ends before the JSON does)"),
    ):
        path.write_text("\n".join(lines) + "\n")
        assert load_error(load_chat, path).startswith(f"{path}:{problem}")
    path.write_text("\n".join([rows[0], "", rows[1]]) + "\n")
    assert load_chat([str(path)]) == [json.loads(rows[0]), json.loads(rows[1])]


def test_a_json_file_of_one_row_object_is_that_row_and_a_data_wrapper_is_its_list(tmp_path):
    row = {"messages": turns(("user", "Q1"), ("assistant", "A1"))}
    one = tmp_path / "one.json"
    one.write_text(json.dumps(row))
    assert load_chat([str(one)]) == [row]
    pair = tmp_path / "pair.json"
    pair.write_text(json.dumps({"chosen": HISTORY + PAIR["chosen"], "rejected": HISTORY + PAIR["rejected"]}))
    assert load_preferences([str(pair)]) == [
        {"prompt": HISTORY, "chosen": PAIR["chosen"], "rejected": PAIR["rejected"]}
    ]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [row, row]}))
    assert load_chat([str(wrapped)]) == [row, row]
    wrapped.write_text(json.dumps({"version": 1, "data": [row, row]}))
    assert load_chat([str(wrapped)]) == [row, row]
    wrapped.write_text(json.dumps({"train": [row, row], "test": [row]}))
    assert load_error(load_chat, wrapped) == f"{wrapped}: holds several lists (train, test), not one list of rows"


def test_compressed_files_are_read_through_their_codec_and_a_damaged_one_is_named(tmp_path):
    """Hub dumps come as `train.jsonl.gz`, `c4-00000.json.gz`: they were refused as file type `.gz`."""
    import bz2
    import gzip
    import lzma

    from alignkit.data import load_text

    rows = [{"messages": turns(("user", f"Q{i}"), ("assistant", f"A{i}"))} for i in range(2)]
    jsonl = "".join(json.dumps(row) + "\n" for row in rows).encode()
    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(jsonl))
    (tmp_path / "rows.json.bz2").write_bytes(bz2.compress(json.dumps(rows).encode()))
    csv_text = "prompt,completion\nQ0,A0\nQ1,A1\n"
    (tmp_path / "rows.csv.xz").write_bytes(lzma.compress(csv_text.encode()))
    for name in ("rows.jsonl.gz", "rows.json.bz2", "rows.csv.xz"):
        assert load_chat([str(tmp_path / name)]) == rows, name
    corpus = tmp_path / "corpus"
    corpus.mkdir()  # a folder of compressed shards, as c4's
    (corpus / "part-0.txt.gz").write_bytes(gzip.compress(b"First paragraph.\n\nSecond paragraph.\n"))
    assert [row["text"] for row in load_text([str(corpus)])] == ["First paragraph.", "Second paragraph."]
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(jsonl)[:-12])
    assert load_error(load_chat, truncated).startswith(f"{truncated}: cannot decompress")
    unknown = tmp_path / "rows.gz"
    unknown.write_bytes(gzip.compress(jsonl))
    assert load_error(load_chat, unknown) == f"{unknown}: unsupported file type `.gz`"


# ---- tool-calling chat rows -----------------------------------------------------------------------------------


def test_openai_tool_calls_load_the_same_from_jsonl_and_a_save_dir(tmp_path):
    from datasets import Dataset

    rows = [openai_tool_row(city) for city in CITIES[:2]]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))  # Arrow fills absent keys (tool_calls...) with None
    expected = [canonical_tool_row(city, "call_1") for city in CITIES[:2]]
    assert load_chat([str(write_jsonl(tmp_path / "tools.jsonl", rows))]) == expected
    assert load_chat([str(tmp_path / "saved")]) == expected


def test_openai_tool_rows_saved_by_pandas_to_csv_load_with_their_tools(tmp_path):
    """`df.to_csv` writes the `tools` list as its Python repr, as it does the messages: the messages were read, and
    the row refused for `tools` 'not valid JSON'."""
    rows = [openai_tool_row(city) for city in CITIES[:2]]
    pd.DataFrame(rows).to_csv(tmp_path / "tools.csv", index=False)
    assert load_chat([str(tmp_path / "tools.csv")]) == [canonical_tool_row(city, "call_1") for city in CITIES[:2]]


def test_sharegpt_function_call_and_observation_turns_load_as_tool_calls(tmp_path):
    path = write_jsonl(tmp_path / "sharegpt_tools.jsonl", [sharegpt_tool_row("Paris")])
    assert load_chat([str(path)]) == [canonical_tool_row("Paris", None)]


def test_prompt_completion_rows_keep_the_tool_turns_of_their_prompt(tmp_path):
    """TRL's prompt/completion form of a tool conversation: its call turn (content null) was refused, and a call
    beside text was dropped, leaving the answer to a tool result the model never asked for."""
    messages = openai_tool_row("Paris")["messages"]
    row = {"prompt": messages[:3], "completion": messages[3:], "tools": [WEATHER_TOOL]}
    path = write_jsonl(tmp_path / "prompt_completion_tools.jsonl", [row])
    assert load_chat([str(path)]) == [canonical_tool_row("Paris", "call_1")]


def test_tool_conversations_as_prompts_are_answered_with_their_tools_in_view(tiny_model, tmp_path):
    """`generate`/`eval --prompts` on tool rows: the call turn (content null) and LLaMA-Factory's function_call turns
    were refused, and the chat template was never given the row's tools."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [openai_tool_row("Paris"), sharegpt_tool_row("Oslo")])
    # each prompt runs to the tool's result: the reply to generate is the answer after it
    assert generate.load_prompt_items(str(prompts)) == [
        Prompt(canonical_tool_row("Paris", "call_1")["messages"][:3], tools=[WEATHER_TOOL]),
        Prompt(canonical_tool_row("Oslo", None)["messages"][:3], tools=[WEATHER_TOOL]),
    ]
    model_dir = tmp_path / "tiny-tools"
    shutil.copytree(tiny_model, model_dir)
    tokenizer = tokenizer_with(tiny_model, TOOLS_TEMPLATE)
    tokenizer.save_pretrained(model_dir)
    sampling = generate.Sampling(temperature=1.0, max_new_tokens=8, seed=3)
    one = write_jsonl(tmp_path / "one.jsonl", [openai_tool_row("Paris")])
    out = generate.run(str(one), str(tmp_path / "out.jsonl"), n=1, model_name=str(model_dir), sampling=sampling)
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["tools"] == [WEATHER_TOOL]
    model = AutoModelForCausalLM.from_pretrained(model_dir)

    def reply(tools: list[dict[str, Any]] | None) -> str:  # the first draw from the seed, the prompt rendered so
        rendered = tokenizer.apply_chat_template(row["prompt"], tools=tools, add_generation_prompt=True)
        ids = torch.tensor([rendered["input_ids"]])
        torch.manual_seed(sampling.seed)
        [tokens] = generate.decode(model, ids, torch.ones_like(ids), 8, temperature=1.0, top_p=sampling.top_p)
        return tokenizer.decode(tokens, skip_special_tokens=True).strip()

    assert reply([WEATHER_TOOL]) != reply(None)  # the tools change what the model says
    assert row["candidates"][0]["text"] == reply([WEATHER_TOOL])


def test_the_same_question_with_other_tools_is_another_prompt_to_resume_and_to_simulate(tiny_model, tmp_path):
    """`prompt_id` hashed the messages alone: a question asked with other tools shared its id, so `generate --resume`
    took the row made with one tool list as done for the other, which never got candidates."""
    from alignkit.feedback import simulate
    from alignkit.jsonl import partial_file, prompt_id

    other_tool = {"type": "function", "function": {**WEATHER_FUNCTION, "name": "get_forecast"}}
    question = {"prompt": "Weather in Paris?", "skill": "weather"}
    model_dir = tmp_path / "tiny-tools"
    shutil.copytree(tiny_model, model_dir)
    tokenizer_with(tiny_model, TOOLS_TEMPLATE).save_pretrained(model_dir)
    sampling = generate.Sampling(temperature=1.0, max_new_tokens=4, seed=3)
    out = tmp_path / "out.jsonl"
    first = write_jsonl(tmp_path / "forecast.jsonl", [{**question, "tools": [other_tool]}])
    generate.run(str(first), str(out), n=1, model_name=str(model_dir), sampling=sampling)
    out.rename(partial_file(out))  # as if stopped after that prompt, with the weather prompt yet to do
    both = write_jsonl(
        tmp_path / "both.jsonl", [{**question, "tools": [WEATHER_TOOL]}, {**question, "tools": [other_tool]}]
    )
    generate.run(str(both), str(out), n=1, model_name=str(model_dir), sampling=sampling, resume=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["tools"] for row in rows] == [[other_tool], [WEATHER_TOOL]]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    assert [row["prompt_id"] for row in rows] == [
        prompt_id(messages, [other_tool]),
        prompt_id(messages, [WEATHER_TOOL]),
    ]
    assert prompt_id(messages, []) == prompt_id(messages) != prompt_id(messages, [WEATHER_TOOL])
    assert set(simulate.load_answer_key(str(both))) == {row["prompt_id"] for row in rows}


def test_dpo_checked_prompts_are_answered_with_their_tools(tmp_path):
    """dpo's model selection answered its checked prompts without their `tools`: another prompt than the one checked.
    The demo's prompt files kept no tools either."""
    from alignkit import demo, judges, training
    from tests.conftest import build_tiny_model

    sharp = build_tiny_model(tmp_path / "sharp", initializer_range=0.5)  # greedy replies that are not empty
    tokenizer = tokenizer_with(str(sharp), TOOLS_TEMPLATE)
    model = AutoModelForCausalLM.from_pretrained(sharp).eval()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    [with_tools] = generate.greedy_replies(model, tokenizer, [messages], 8, tools=[[WEATHER_TOOL]])
    [without] = generate.greedy_replies(model, tokenizer, [messages], 8)
    prompt = Prompt(messages, judges.PromptSpec(reference=with_tools), [WEATHER_TOOL])
    assert judges.correct(without, prompt.spec) is False  # the answer without the tools fails the check
    callback = training.CheckedPromptsCallback([prompt], tokenizer, 8)
    callback.check(model, 0)
    assert callback.scores[0]["accuracy"] == 1.0
    demo.write_prompts(tmp_path / "checked.jsonl", [prompt])
    assert generate.load_prompt_items(str(tmp_path / "checked.jsonl")) == [prompt]


def test_feedback_push_refuses_candidates_of_prompts_with_tools(tmp_path):
    """`generate` writes a tool prompt's `tools` in its row; `feedback push` dropped them, so annotators rated answers
    to functions they were not shown and `feedback pull` made pairs that trained without them."""
    from alignkit.feedback import push

    row = {
        "prompt": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "candidates": [{"text": "It is sunny."}, {"text": "Let me check."}],
    }
    path = write_jsonl(tmp_path / "candidates.jsonl", [row])
    assert load_error(lambda paths: push.load_candidates(paths[0]), path) == (
        f"{path}:line 1: field `tools`: prompts with tools are not rated: annotators are not shown the tools "
        f"({NO_TOOLS_HERE})"
    )


def test_rl_refuses_prompts_with_tools_it_cannot_show(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Weather in Paris?", "tools": [WEATHER_TOOL]}])
    with pytest.raises(AlignkitError) as error:
        alignkit.stages.rl.load_rows(RLStageConfig(), [str(prompts)])
    assert error.value.message == (
        f"{prompts}: prompt rows with `tools` are not supported by `alignkit rl` (TRL's GRPO/RLOO show every prompt "
        "the same trainer-wide tools, not a row's)"
    )


def test_tool_rows_give_every_example_its_tools_as_json_text():
    rows = [canonical_tool_row("Paris", None), {"messages": HISTORY[:2]}]
    examples = prompt_completion(rows)
    assert [json.loads(e["tools"]) if e["tools"] else None for e in examples] == [[WEATHER_TOOL], [WEATHER_TOOL], None]
    assert examples[0]["completion"] == [rows[0]["messages"][1]]
    assert examples[1]["prompt"] == rows[0]["messages"][:3]


def test_tool_rows_are_refused_when_the_chat_template_drops_tools(tiny_model):
    rows = [canonical_tool_row("Paris", None)]
    with pytest.raises(AlignkitError) as error:
        check_tool_template(tokenizer_with(tiny_model, CHATML), rows, ["tools.jsonl"])
    assert error.value.message == "tools.jsonl: rows use tool calls but the model's chat template does not render tools"
    assert error.value.hint == "use a model whose template supports tools"
    check_tool_template(tokenizer_with(tiny_model, CHATML), [{"messages": HISTORY[:2]}], ["chat.jsonl"])
    check_tool_template(tokenizer_with(tiny_model, TOOLS_TEMPLATE), rows, ["tools.jsonl"])


def test_tool_rows_refused_among_several_files_name_the_file_and_line_that_holds_them(tiny_model, tmp_path):
    """`sft --data chats.jsonl --data tools.jsonl` on a template without tools named every file given, `chats.jsonl`
    first: the user could not tell which file (or row) to fix."""
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": HISTORY[:2]}] * 4)
    tools = write_jsonl(tmp_path / "tools.jsonl", [{"messages": HISTORY[:2]}, openai_tool_row("Paris")])
    out = tmp_path / "runs" / "sft"
    result = run_cli("sft", "--data", str(chats), "--data", str(tools), "--model", tiny_model, "--out", str(out))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tools}:line 2: rows use tool calls but the model's chat template does not render tools — fix: use "
        "a model whose template supports tools"
    ]


def test_hermes_rows_train_their_text_calls_on_a_template_without_tool_support(tiny_model, tmp_path):
    """Hermes function-calling rows were refused (`conversations[3].from: unknown role 'tool'`). Their calls stay
    text, trained in the `gpt` turns, and their results are `tool` turns a ChatML template (the embedded SmolLM2's,
    which shows no `tools` list) renders as any role: the row trains with it, as axolotl and LLaMA-Factory train it."""
    path = write_jsonl(tmp_path / "hermes.jsonl", [hermes_row(city) for city in CITIES])
    [first, *_] = load_chat([str(path)])
    assert first == {
        "messages": [
            {"role": "system", "content": HERMES_SYSTEM},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": hermes_call("Paris")},
            {"role": "tool", "content": "<tool_response>\n{'temperature': '18C'}\n</tool_response>"},
            {"role": "assistant", "content": "It is 18C in Paris."},
        ]
    }
    assert generate.load_prompt_items(str(path))[0] == Prompt(first["messages"][:4])  # answered after the result
    sft, trainer = run_capturing_trainer(
        alignkit.sft,
        data={"paths": [str(path)], "validation_split": 0.0},
        model={"name": tiny_model},  # ChatML, as the embedded model
        out=str(tmp_path / "runs" / "sft"),
        trainer={"max_steps": 1, "per_device_train_batch_size": 2},
    )
    example = trainer.train_dataset[0]
    trained = [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    assert sft.complete
    # the call and the answer are trained, the tool's result is context
    assert (
        trainer.processing_class.decode(trained) == f"{hermes_call('Paris')}<|im_end|>\nIt is 18C in Paris.<|im_end|>\n"
    )


def test_hermes_rows_are_refused_when_the_chat_template_has_no_tool_role(tiny_model):
    rows = [{"messages": [*HISTORY[:2], {"role": "tool", "content": "18C"}, {"role": "assistant", "content": "18C."}]}]
    with pytest.raises(AlignkitError) as error:
        check_tool_template(tokenizer_with(tiny_model, USER_ASSISTANT_TEMPLATE), rows, ["hermes.jsonl"])
    assert error.value.message == (
        "hermes.jsonl: rows have `tool` turns (tool results) but the model's chat template does not render a "
        "`tool` role"
    )
    assert error.value.hint == (
        'use a model whose template has a tool role, or make the results user turns (ShareGPT `"from": "human"`, '
        'messages `"role": "user"`)'
    )
    check_tool_template(
        tokenizer_with(tiny_model, USER_ASSISTANT_TEMPLATE), [{"messages": HISTORY[:2]}], ["chat.jsonl"]
    )


@pytest.mark.parametrize(
    ("template", "renders"),
    [(TOOLS_TEMPLATE, True), (CHATML, False), (TOOLS_LIST_ONLY_TEMPLATE, False)],
    ids=["tools-and-calls", "neither", "tools-list-only"],
)
def test_renders_tools_needs_both_the_tools_list_and_the_calls(template, renders, tiny_model):
    assert renders_tools(tokenizer_with(tiny_model, template)) is renders


# ---- rows that fit no format ------------------------------------------------------------------------------------

ARGUMENTS_NOT_JSON = openai_tool_row("Paris")
ARGUMENTS_NOT_JSON["messages"][1]["tool_calls"][0]["function"]["arguments"] = "city=Paris"
CALL_NOT_JSON = sharegpt_tool_row("Paris")
CALL_NOT_JSON["conversations"][1]["value"] = "get_weather(Paris)"
CALLS = {
    city: [{"role": "assistant", "content": "", "tool_calls": openai_tool_row(city)["messages"][1]["tool_calls"]}]
    for city in CITIES
}
PAIR_AFTER_TOOL = {"chosen": "It is 18C.", "rejected": "It is 30C."}
HH_HISTORY = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}"

SFT_ON_PAIRS = (
    "field `chosen`: a preference pair (chosen/rejected): SFT trains one reply per prompt; train pairs with `alignkit "
    "dpo` or `alignkit reward`, or give SFT {prompt, completion} or {messages} rows"
)
BAD_ROWS = [
    (load_chat, PAIR, SFT_ON_PAIRS),  # was `completion`: missing
    (
        load_chat,
        {"chosen": f"{HH_HISTORY}\n\nAssistant: 4.", "rejected": f"{HH_HISTORY}\n\nAssistant: 5."},
        SFT_ON_PAIRS,
    ),
    (load_chat, {"instruction": QUESTION, "chosen": "4.", "rejected": "5."}, SFT_ON_PAIRS),  # was `output`: missing
    (
        load_preferences,
        {**SHAREGPT_PAIR, "chosen": "4."},
        "row looks like sharegpt preference data: field `chosen`: expected {from, value}, got str",
    ),
    (
        load_preferences,
        {**SHAREGPT_PAIR, "rejected": {"from": "human", "value": "5."}},
        "row looks like sharegpt preference data: field `rejected.from`: expected 'gpt' (a reply), got 'human'",
    ),
    (
        load_preferences,
        {**SHAREGPT_PAIR, "conversations": SHAREGPT_PAIR["conversations"][:2]},
        "row looks like sharegpt preference data: field `conversations[1].role`: the prompt must end with a user turn",
    ),
    (
        load_preferences,
        {"chosen": f"{HH_HISTORY}\n\nAssistant: 4.", "rejected": "5."},
        'row looks like HH-RLHF data: field `rejected`: expected "\\n\\nHuman: ...\\n\\nAssistant: ..." turns',
    ),
    (
        load_preferences,
        {"chosen": f"{HH_HISTORY}\n\nAssistant: 4.", "rejected": f"{HH_HISTORY}\n\nAssistant:"},
        "row looks like HH-RLHF data: field `rejected[3].content`: is empty",
    ),
    (
        load_preferences,
        {
            "prompt": "Hi",
            "chosen": [*HISTORY[1:], *PAIR["chosen"]],
            "rejected": [{"role": "assistant", "content": "?"}],
        },
        "field `chosen[1].role`: a reply holds only assistant turns, got 'user' "
        "(the turns before the final reply belong in the prompt)",
    ),
    (
        load_unpaired,
        {"messages": [*HISTORY[:2], HISTORY[2]], "label": True},
        "row looks like KTO conversation data: field `messages[2].role`: "
        "the last turn must be the assistant reply the label rates",
    ),
    (
        load_unpaired,
        {"messages": HISTORY[:2], "label": "maybe"},
        "row looks like KTO conversation data: field `label`: expected true or false, got 'maybe'",
    ),
    (
        load_chat,
        ARGUMENTS_NOT_JSON,
        "field `messages[1].tool_calls[0].function.arguments`: "
        "expected a JSON object (not valid JSON: Expecting value)",
    ),
    (
        load_chat,
        CALL_NOT_JSON,
        "field `conversations[1].value`: expected a JSON tool call {name, arguments} (not valid JSON: Expecting value)",
    ),
    (
        load_chat,
        {"messages": [HISTORY[0], {"role": "tool", "content": "18C"}, HISTORY[1]]},
        "field `messages[1].role`: a tool result must follow an assistant tool call",
    ),
    (
        load_chat,
        {"conversations": [hermes_row("Paris")["conversations"][i] for i in (0, 1, 3, 4)]},
        "field `conversations[2].role`: a tool result must follow an assistant tool call",
    ),
    (  # a result naming its call's id needs the structured call, not text
        load_chat,
        {
            "messages": [
                HISTORY[0],
                HISTORY[1],
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                HISTORY[1],
            ]
        },
        "field `messages[2].role`: a tool result must follow an assistant tool call",
    ),
    (
        load_chat,
        {**openai_tool_row("Paris"), "tools": WEATHER_FUNCTION},
        "field `tools`: expected a list of function schemas, got dict",
    ),
    (  # the replies differ only in their calls: once read as "identical", the calls dropped
        load_preferences,
        {"prompt": PAIR["prompt"], "chosen": CALLS["Paris"], "rejected": CALLS["Oslo"]},
        f"field `chosen[0].tool_calls`: tool calls and results are not read here ({NO_TOOLS_HERE})",
    ),
    (
        load_preferences,
        {"prompt": openai_tool_row("Paris")["messages"][:3], **PAIR_AFTER_TOOL},
        f"field `prompt[1].tool_calls`: tool calls and results are not read here ({NO_TOOLS_HERE})",
    ),
    (
        load_preferences,
        {**SHAREGPT_PAIR, "tools": json.dumps([WEATHER_FUNCTION])},
        f"field `tools`: preference and KTO rows with tools are not supported ({NO_TOOLS_HERE})",
    ),
    (
        load_unpaired,
        {"messages": openai_tool_row("Paris")["messages"], "label": True},
        f"row looks like KTO conversation data: field `messages`: KTO rows with tool calls are not supported "
        f"({NO_TOOLS_HERE})",
    ),
    (
        load_unpaired,
        {**hermes_row("Paris"), "label": True},
        f"row looks like KTO conversation data: field `conversations`: KTO rows with tool calls are not supported "
        f"({NO_TOOLS_HERE})",
    ),
]


@pytest.mark.parametrize(
    ("load", "row", "expected"),
    BAD_ROWS,
    ids=[
        "sft-on-trl-pairs",
        "sft-on-hh-rlhf-pairs",
        "sft-on-alpaca-pairs",
        "sharegpt-chosen-string",
        "sharegpt-reply-from-human",
        "sharegpt-prompt-ends-with-gpt",
        "hh-rejected-not-turns",
        "hh-empty-reply",
        "user-turn-in-a-reply",
        "kto-ends-with-user",
        "kto-bad-label",
        "openai-arguments-not-json",
        "sharegpt-call-not-json",
        "tool-result-without-call",
        "hermes-tool-turn-without-call",
        "tool-call-id-without-structured-call",
        "tools-not-a-list",
        "pair-replies-differ-in-tool-calls",
        "pair-prompt-with-tool-turns",
        "pair-with-tools-column",
        "kto-conversation-with-tool-calls",
        "kto-hermes-conversation",
    ],
)
def test_a_row_that_fits_no_format_names_the_closest_format_and_the_field(load, row, expected, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [row])
    assert load_error(load, path) == f"{path}:line 1: {expected}"


# ---- data.skip_bad_rows ------------------------------------------------------------------------------------------


def hh_pair(question: str, chosen: str, rejected: str) -> dict[str, str]:
    """An Anthropic HH-RLHF row: two transcripts that share the prompt."""
    history = f"\n\nHuman: {question}\n\nAssistant:"
    return {"chosen": f"{history} {chosen}", "rejected": f"{history} {rejected}"}


def chat(question: str, reply: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]}


HH_WITH_BAD_ROWS = [
    hh_pair("What is 1 plus 1?", "2.", "3."),
    hh_pair("What is 2 plus 2?", "4.", "4."),  # line 2: chosen and rejected are the same transcript
    hh_pair("What is 3 plus 3?", "6.", "7."),
    hh_pair("What is 4 plus 4?", "8.", "9."),
    hh_pair("What is 5 plus 5?", "10.", ""),  # line 5: the rejected reply is empty
    hh_pair("What is 6 plus 6?", "12.", "13."),
]
CHAT_WITH_BAD_ROWS = [chat("Hi", "Hello!"), chat("Bye", "Goodbye!"), chat("Thanks", "  "), chat("Why?", "Because.")]


def test_skip_bad_rows_leaves_out_the_rows_that_fail_and_counts_them_per_file(tmp_path, alignkit_records):
    """Each training loader keeps every good row, in order, counts the bad ones under the file as given (the
    manifest's key) and says so in one warning per file, naming the first bad row's line and problem."""
    from alignkit.data import BadRows, load_text

    hh = write_jsonl(tmp_path / "hh.jsonl", HH_WITH_BAD_ROWS)
    scraped = write_jsonl(tmp_path / "scraped.jsonl", CHAT_WITH_BAD_ROWS)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "Soil holds water."}, {"text": ""}, {"text": "Air."}])
    bad_rows = BadRows(skip=True)

    pairs = load_preferences([str(hh)], bad_rows)
    assert [pair["prompt"][0]["content"] for pair in pairs] == [f"What is {i} plus {i}?" for i in (1, 3, 4, 6)]
    unpaired = load_unpaired([str(hh)], BadRows(skip=True))  # KTO: both halves of each kept pair
    assert [(row["completion"][0]["content"], row["label"]) for row in unpaired[:2]] == [("2.", True), ("3.", False)]
    assert len(unpaired) == 8
    assert [row["messages"][0]["content"] for row in load_chat([str(scraped)], bad_rows)] == ["Hi", "Bye", "Why?"]
    assert load_text([str(corpus)], bad_rows=bad_rows) == [{"text": "Soil holds water."}, {"text": "Air."}]

    assert bad_rows.skipped == {str(hh): 2, str(scraped): 1, str(corpus): 1}
    warnings = [r.getMessage() for r in alignkit_records.records if r.levelname == "WARNING"]
    assert warnings[0] == (
        f"{hh}: skipped 2 of 6 rows that fail the checks (first: line 2: row looks like HH-RLHF data: field "
        "`rejected`: chosen and rejected are identical (the pair teaches nothing))"
    )
    assert warnings[2] == (
        f"{scraped}: skipped 1 of 4 rows that fail the checks (first: line 3: field `messages[1].content`: is empty)"
    )
    assert len(warnings) == 4 and all("\n" not in warning for warning in warnings)


def test_a_bad_training_row_is_refused_naming_skip_bad_rows_and_a_prompt_file_without_it(tmp_path):
    """The default stays: the whole file is refused on its first bad row, and a training file's fix offers the
    option; a prompt file (generate, eval, feedback) has no such option and its fix does not name it."""
    from alignkit.data import BadRows

    hh = write_jsonl(tmp_path / "hh.jsonl", HH_WITH_BAD_ROWS)
    with pytest.raises(AlignkitError) as refused:
        load_preferences([str(hh)], BadRows())
    assert refused.value.message.startswith(f"{hh}:line 2: row looks like HH-RLHF data: field `rejected`: chosen and")
    assert refused.value.message.endswith("(+1 more rows with problems)")
    assert refused.value.hint.endswith("; or skip them: --set data.skip_bad_rows=true")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}, {"prompt": ""}])
    with pytest.raises(AlignkitError) as refused:
        generate.load_prompts_with_columns(str(prompts))
    assert refused.value.message.startswith(f"{prompts}:line 2") and "skip_bad_rows" not in str(refused.value)


def test_skip_bad_rows_still_refuses_a_file_with_no_good_row_and_file_level_problems(tmp_path):
    """Nothing to train on, or a file that cannot be read, is refused in one line whatever the option says, in a
    streamed corpus too."""
    from alignkit.data import BadRows

    all_bad = write_jsonl(tmp_path / "all-bad.jsonl", [HH_WITH_BAD_ROWS[1], HH_WITH_BAD_ROWS[4]])
    with pytest.raises(AlignkitError) as refused:
        load_preferences([str(all_bad)], BadRows(skip=True))
    assert refused.value.message.startswith(
        f"{all_bad}: all 2 rows fail the checks, none left to train on (first: line 1: row looks like HH-RLHF"
    )
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(CHAT_WITH_BAD_ROWS[0]) + "\n{not json\n", encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    for path, problem in ((broken, f"{broken}:line 2: not valid JSON"), (empty, f"{empty}: no rows")):
        with pytest.raises(AlignkitError) as refused:
            load_chat([str(path)], BadRows(skip=True))
        assert refused.value.message.startswith(problem)
    pulled = PAIR | {"dataset": "round-1", "record_id": "r1-prompt0-0badc0de"}  # as `feedback pull` writes it
    twice = write_jsonl(tmp_path / "twice.jsonl", [pulled, pulled])
    with pytest.raises(AlignkitError, match="pulled pairs given twice"):
        load_preferences([str(twice)], BadRows(skip=True))
    # a stream skips failing rows as they pass, not a file it cannot read: refused before any run dir exists
    streamed = {"paths": [str(broken)], "streaming": True, "skip_bad_rows": True}
    with pytest.raises(AlignkitError, match=f"{broken}:line 2: not valid JSON"):
        alignkit.pretrain(data=streamed, trainer={"max_steps": 1}, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ---- training -------------------------------------------------------------------------------------------------


def test_sft_trains_on_tool_calls_and_dpo_on_sharegpt_pairs(tiny_model, tmp_path):
    model_dir = tmp_path / "tiny-tools"
    shutil.copytree(tiny_model, model_dir)
    tokenizer_with(tiny_model, TOOLS_TEMPLATE).save_pretrained(model_dir)
    openai = write_jsonl(tmp_path / "openai_tools.jsonl", [openai_tool_row(city) for city in CITIES])
    sharegpt = write_jsonl(tmp_path / "sharegpt_tools.jsonl", [sharegpt_tool_row(city) for city in CITIES])
    pairs = write_jsonl(tmp_path / "sharegpt_pairs.jsonl", [SHAREGPT_PAIR] * 4)
    extra = write_jsonl(tmp_path / "ultrafeedback.jsonl", TRL_WITH_EXTRA_COLUMNS)
    tiny = {"max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1}

    sft, trainer = run_capturing_trainer(
        alignkit.sft,
        data={"paths": [str(openai), str(sharegpt)], "validation_split": 0.0},
        model={"name": str(model_dir)},
        out=str(tmp_path / "runs" / "sft"),
        trainer=tiny,
    )
    assert sft.complete and sft.metrics["train_rows"] == 2 * len(CITIES)
    texts = [trainer.processing_class.decode(ids) for ids in trainer.train_dataset["input_ids"]]
    # one example per conversation, its two assistant turns (the call and the answer) both trained
    assert len(texts) == 2 * len(CITIES) and all(json.dumps(WEATHER_TOOL) in text for text in texts)
    first = trainer.train_dataset[0]
    trained = trainer.processing_class.decode(
        [t for t, lab in zip(first["input_ids"], first["labels"], strict=True) if lab != -100]
    )
    assert trained.startswith('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    assert "sunny in Paris." in trained and "18C and sunny<|im_end|>" not in trained  # the tool's result is context

    dpo = alignkit.dpo(
        data={"paths": [str(pairs), str(extra)], "validation_split": 0.0},
        from_run=str(sft.path),
        out=str(tmp_path / "runs" / "dpo"),
        trainer=tiny,
    )
    assert dpo.complete and dpo.metrics["train_rows"] == 4 + len(TRL_WITH_EXTRA_COLUMNS)


def test_each_public_format_trains_one_step_through_the_cli(tiny_model, tmp_path):
    """The files users bring, one optimizer step each through the matching stage's command."""
    alpaca = tmp_path / "alpaca.json"  # LLaMA-Factory's alpaca: one JSON list, `{{name}}` placeholders left as text
    alpaca.write_text(json.dumps([
        {"instruction": "Say hello to {{name}}.", "input": "", "output": "Hello, {{name}}!"},
        {"instruction": "Add the numbers.", "input": "2 and 2", "output": "4."},
    ]))  # fmt: skip
    c4 = write_jsonl(tmp_path / "c4.jsonl", [{"text": f"Compost needs air and water, part {i}."} for i in range(4)])
    history = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {QUESTION}"
    hh_sft = tmp_path / "hh_sft.jsonl.gz"  # HH-RLHF transcripts as completions, gzipped as hub dumps come
    hh_sft.write_bytes(
        gzip.compress(json.dumps({"prompt": "Hi", "completion": f"{history}\n\nAssistant: 4."}).encode())
    )
    pandas_pairs = tmp_path / "pandas_pairs.csv"  # message lists as the Python reprs pandas' to_csv writes
    pd.DataFrame(TRL_WITH_EXTRA_COLUMNS[:1] * 2).to_csv(pandas_pairs, index=False)
    files = {
        "sharegpt pairs": write_jsonl(tmp_path / "sharegpt_pairs.jsonl", [SHAREGPT_PAIR] * 2),
        "alpaca pairs": write_jsonl(tmp_path / "alpaca_pairs.jsonl", [
            {"instruction": "Add the numbers.", "input": "2 and 2", "chosen": "4.", "rejected": "5."}] * 2),
        "hh-rlhf": write_jsonl(tmp_path / "hh.jsonl", [
            {"chosen": f"{history}\n\nAssistant: 4.", "rejected": f"{history}\n\nAssistant: 5."}] * 2),
        "trl + extra columns": write_jsonl(tmp_path / "ultrafeedback.jsonl", TRL_WITH_EXTRA_COLUMNS),
        "pandas csv": pandas_pairs,
    }  # fmt: skip
    kto = write_jsonl(tmp_path / "kto.jsonl", [
        {"messages": [*HISTORY, {"role": "assistant", "content": "4."}], "label": True},
        {"messages": [*HISTORY, {"role": "assistant", "content": "5."}], "label": False}])  # fmt: skip
    one_step = ["--max-steps", "1", "--set", "trainer.per_device_train_batch_size=2"]

    made: list[runs.Run] = []

    def trains(*argv: str) -> runs.Run:
        out = tmp_path / "runs" / f"{argv[0]}-{len(made)}"
        done = run_cli(*argv, "--out", str(out), *one_step)
        assert done.returncode == 0, f"alignkit {' '.join(argv)}: {done.stderr[-1500:]}"
        run = runs.Run(out)
        assert run.complete and run.metrics["global_step"] == 1
        made.append(run)
        return run

    sft = trains("sft", "--data", str(alpaca), "--data", str(hh_sft), "--model", tiny_model)
    assert sft.metrics["train_rows"] + sft.metrics["eval_rows"] == 3, sft.metrics
    trains("pretrain", "--data", str(c4), "--model", tiny_model)
    # every pair format at once: each file is read by its own loader, then all rows train together
    every_pair_file = [arg for path in files.values() for arg in ("--data", str(path))]
    for stage in ("dpo", "reward"):
        run = trains(stage, "--from", str(sft.path), *every_pair_file)
        assert {Path(f).name for f in run.manifest["data"]} >= {Path(p).name for p in files.values()}, run.manifest
    trains("dpo", "--from", str(sft.path), "--data", str(kto), "--set", "method=kto")


def test_openai_content_parts_are_read_as_their_text_and_an_image_part_is_refused(tmp_path):
    """OpenAI's chat format may give a message's content as a list of parts (`[{"type": "text", "text"}]`): it was
    refused as "expected a string, got list"; its text parts are the message, a part that is no text is named."""

    def parts(*texts: str) -> list[dict[str, str]]:
        return [{"type": "text", "text": text} for text in texts]

    chat = {
        "messages": [
            {"role": "system", "content": parts("Be brief.")},
            {"role": "user", "content": parts("Name a colour.", "One word.")},
            {"role": "assistant", "content": parts("Blue.")},
        ]
    }
    assert load_chat([str(write_jsonl(tmp_path / "chat.jsonl", [chat]))]) == [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour.\nOne word."},
                {"role": "assistant", "content": "Blue."},
            ]
        }
    ]
    pair = {
        "prompt": [{"role": "user", "content": parts(QUESTION)}],
        "chosen": [{"role": "assistant", "content": parts("4.")}],
        "rejected": [{"role": "assistant", "content": parts("5.")}],
    }
    (loaded,) = load_preferences([str(write_jsonl(tmp_path / "pairs.jsonl", [pair]))])
    assert loaded["prompt"] == [{"role": "user", "content": QUESTION}]
    assert loaded["chosen"] == [{"role": "assistant", "content": "4."}]
    assert loaded["rejected"] == [{"role": "assistant", "content": "5."}]

    image = {"type": "image_url", "image_url": {"url": "cat.png"}}
    seen = {"messages": [{"role": "user", "content": [*parts("What is this?"), image]}, chat["messages"][2]]}
    with pytest.raises(AlignkitError, match=r"line 1: field `messages\[0\]\.content\[1\]`: a 'image_url' part"):
        load_chat([str(write_jsonl(tmp_path / "image.jsonl", [seen]))])


def test_a_folders_files_of_other_types_are_said_once_per_machine(tmp_path, alignkit_records, monkeypatch):
    """A data folder's files that no reader takes (notes, a licence) are left out with a warning, said by the
    machine's first process only: every process of an `accelerate launch` run reads the data."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "chat.jsonl", [{"messages": HISTORY[:2]}])
    (folder / "LICENSE.pdf").write_bytes(b"%PDF-1.4")

    def warnings() -> list[str]:
        found = [r.getMessage() for r in alignkit_records.records if r.levelname == "WARNING"]
        alignkit_records.clear()
        return found

    assert load_chat([str(folder)]) == [{"messages": HISTORY[:2]}]
    assert warnings() == [f"{folder}: files of type .pdf are not read (not a data file type)"]
    monkeypatch.setenv("LOCAL_RANK", "1")  # another process of the run on this machine
    assert load_chat([str(folder)]) == [{"messages": HISTORY[:2]}]
    assert warnings() == []
