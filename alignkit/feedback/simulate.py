"""`alignkit feedback simulate`: oracle annotators that rate through Argilla's API exactly as people do (own login,
own queue, one response per record), with a hidden preference rule (`alignkit.judges`) plus noise.

Like a person who knows the subject, the simulated annotator holds an answer key: the prompt specs (skill, reference,
must_contain, decline) of the prompt file the candidates came from, matched to records by `prompt_id`. The key stays
with the annotator; Argilla records carry no hidden answers. `careful` (the default) puts non-degenerate before
correct before doing the task before concise (length only between answers that pass every check); swap it with
`--rule`. The noise is seeded from the annotator and the record's content, so a rating does not depend on ids the
server assigns.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from alignkit.data.formats import RowError, read_rows, tools_field
from alignkit.data.validate import convert_all
from alignkit.errors import AlignkitError
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.client import AnnotatorSession
from alignkit.feedback.push import stable_seed
from alignkit.jsonl import prompt_id, prompt_row
from alignkit.judges import DEFAULT_RULE, Prompt, PromptSpec, Rule, rule

AnswerKey = Mapping[str, PromptSpec]  # prompt_id -> what the annotator knows about that prompt


def load_answer_key(path: str) -> dict[str, PromptSpec]:
    """prompt_id -> spec from a prompt file (spec fields on each row) or an `alignkit generate` file (`spec`)."""

    def entry(data: dict[str, Any]) -> tuple[str, PromptSpec]:
        spec = data.get("spec", data)
        if not isinstance(spec, dict):
            raise RowError("spec", "expected an object with skill / reference / must_contain / decline")
        return prompt_id(prompt_row(data), tools_field(data)), PromptSpec.from_row(spec)

    expected = "prompt rows with optional skill / reference / must_contain"
    return dict(convert_all(read_rows(path, "answer_key"), entry, expected))


def judge(texts: list[str], oracle: Rule, flip: bool, prompt: Prompt | None = None) -> dict[str, Any]:
    """Answer values for one record: a choice + strength for two candidates, else a ranking (best first; answers
    whose difference is not noticeable share a rank). `flip`: the noise, an annotator who prefers the opposite."""
    prompt = prompt or Prompt([])
    scores = [tuple(-v for v in s) if flip else s for s in (oracle.score(t, prompt) for t in texts)]
    if len(texts) == 2:
        if not oracle.noticeable(*scores):
            return {schema.PREFERENCE: "tie"}
        a, b = scores[0][-1], scores[1][-1]
        gap = 1.0 if scores[0][:-1] != scores[1][:-1] else abs(a - b) / max(1.0, abs(a), abs(b))
        strength = 3 if gap >= 0.5 else 2 if gap >= 0.2 else 1
        return {schema.PREFERENCE: "1" if scores[0] > scores[1] else "2", schema.STRENGTH: strength}
    ranked = sorted(range(len(texts)), key=lambda i: scores[i], reverse=True)  # stable: equal keep order
    ranks, rank = {}, 0
    for position, i in enumerate(ranked):  # a new rank once an answer is noticeably worse than its rank's best
        if position == 0 or oracle.noticeable(scores[ranked[rank - 1]], scores[i]):
            rank = position + 1
        ranks[i] = rank
    return {schema.RANKING: [{"value": schema.candidate_field(i), "rank": ranks[i]} for i in ranked]}


def rate_all(
    session: AnnotatorSession,
    dataset_name: str,
    rule_name: str = DEFAULT_RULE,
    noise: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
    answer_key: AnswerKey | None = None,
) -> int:
    """Rate every record pending for this annotator (up to `limit`); returns how many responses were submitted.
    `answer_key` (`load_answer_key`): the prompt specs a prompt-aware rule such as `careful` checks answers against;
    without it such a rule can judge only degeneration, refusals and length."""
    oracle = rule(rule_name)
    dataset = next((d for d in session.datasets() if d["name"] == dataset_name), None)
    if dataset is None:
        raise AlignkitError(
            f"{session.username} sees no dataset {dataset_name!r}", "check the name and workspace membership"
        )
    submitted = 0
    while limit is None or submitted < limit:
        queue = session.queue(dataset["id"], limit=50)
        if not queue:
            break
        for record in queue:
            n = sum(1 for name in record["fields"] if name.startswith("candidate_"))
            texts = [record["fields"][schema.candidate_field(i)] for i in range(n)]
            prompt = record_prompt(record, answer_key or {})
            content = json.dumps([prompt.messages, texts])
            flip = random.Random(stable_seed(seed, session.username, content)).random() < noise
            session.respond(record["id"], judge(texts, oracle, flip, prompt))
            submitted += 1
            if limit is not None and submitted >= limit:
                break
    return submitted


def record_prompt(record: dict[str, Any], answer_key: AnswerKey) -> Prompt:
    """The record's conversation (as shown: the prompt field) and its spec from the annotator's answer key."""
    metadata = record.get("metadata") or {}
    messages = [{"role": "user", "content": record["fields"].get("prompt", "")}]
    return Prompt(messages, answer_key.get(str(metadata.get("prompt_id")), PromptSpec()))
