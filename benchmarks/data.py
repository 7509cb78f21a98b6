"""The benchmark's SFT data, two length distributions:

- `sft_rows` (mixed): many short samples, as real chat data is, one assistant turn per row. Short rows are the bundled
  single-turn chats; every `long_every`-th row is a long answer built from the bundled domain text, so padded
  batches waste what real data wastes. One assistant turn per row keeps alignkit's prompt/completion examples and
  TRL's `messages` rows the same tokens.
- `multiturn_rows` (long multi-turn): every row a conversation of 4-8 exchanges (~250-500 tokens), the bundled
  chats strung together, the shape of assistant logs and tool-use traces.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from alignkit.paths import bundled_data


def sft_rows(n: int, long_every: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """`n` chat rows: mostly the bundled short chats, every `long_every`-th a long (~250-400 token) answer."""
    rng = random.Random(seed)
    chats = [json.loads(line) for line in bundled_data("sft.jsonl").read_text().splitlines()]
    short = [c for c in chats if sum(m["role"] == "assistant" for m in c["messages"]) == 1]
    texts = [json.loads(line)["text"] for line in bundled_data("domain_text.jsonl").read_text().splitlines()]
    rows = []
    for i in range(n):
        if i % long_every == long_every - 1:
            answer = " ".join(rng.sample(texts, 3))
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": "Tell me about this topic in some detail."},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        else:
            rows.append(rng.choice(short))
    return rows


def multiturn_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` long conversations: 4-8 of the bundled single-turn chats as consecutive exchanges of one conversation."""
    rng = random.Random(seed)
    chats = [json.loads(line) for line in bundled_data("sft.jsonl").read_text().splitlines()]
    exchanges = [c["messages"][-2:] for c in chats if [m["role"] for m in c["messages"]] == ["user", "assistant"]]
    return [{"messages": [m for pair in rng.sample(exchanges, rng.randint(4, 8)) for m in pair]} for _ in range(n)]


def rl_prompts(n: int) -> list[dict[str, Any]]:
    """`n` prompts for online RL, TRL's conversational prompt rows: the bundled prompt file's first ones."""
    rows = [json.loads(line) for line in bundled_data("prompts.jsonl").read_text().splitlines()]
    return [{"prompt": [{"role": "user", "content": row["prompt"]}]} for row in rows[:n]]


def preference_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` preference pairs (TRL's conversational format): the bundled answer vs a longer, padded-out one."""
    rng = random.Random(seed)
    chats = [json.loads(line) for line in bundled_data("sft.jsonl").read_text().splitlines()]
    short = [c["messages"] for c in chats if c["messages"][-1]["role"] == "assistant" and len(c["messages"]) <= 3]
    rows = []
    for _ in range(n):
        messages = rng.choice(short)
        answer = messages[-1]["content"]
        worse = answer + " " + " ".join(rng.choice(short)[-1]["content"] for _ in range(2))
        rows.append(
            {
                "prompt": messages[:-1],
                "chosen": [{"role": "assistant", "content": answer}],
                "rejected": [{"role": "assistant", "content": worse}],
            }
        )
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
