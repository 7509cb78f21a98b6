"""`alignkit feedback simulate`: oracle annotators that rate through Argilla's API exactly as people do (own login,
own queue, one response per record), with a deterministic preference rule plus seeded noise.

Rules score a candidate; higher is preferred. `concise` (the demo's) prefers the shorter answer, a preference a small
model learns visibly in minutes. Swap it with `--rule`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.client import AnnotatorSession
from alignkit.feedback.push import stable_seed


@dataclass(frozen=True)
class Rule:
    """A hidden preference: `score` (higher is preferred). Like a person, the annotator calls two answers a tie when
    their scores differ by less than `min_gap` or by less than `min_ratio` of the larger one."""

    score: Callable[[str], float]
    min_gap: float = 0.0
    min_ratio: float = 0.0

    def noticeable(self, a: float, b: float) -> bool:
        gap = abs(a - b)
        return gap > 0 and gap >= self.min_gap and gap >= self.min_ratio * max(abs(a), abs(b))

    def compare(self, first: str, second: str, exact: bool = False) -> float:
        """1.0 when `first` is preferred, 0.0 when `second` is, 0.5 for a tie (`exact`: any score gap counts)."""
        a, b = self.score(first), self.score(second)
        return float(a > b) if (a != b if exact else self.noticeable(a, b)) else 0.5


def words(text: str) -> int:
    return len(text.split())


RULES: dict[str, Rule] = {
    "concise": Rule(lambda text: -words(text), min_gap=3, min_ratio=0.2),
    "verbose": Rule(lambda text: words(text), min_gap=3, min_ratio=0.2),
    "no_lists": Rule(lambda text: -len(re.findall(r"^\s*(?:[-*]|\d+\.)\s", text, flags=re.MULTILINE))),
    "exclamation": Rule(lambda text: float(text.rstrip().endswith("!"))),
}


def rule(name: str) -> Rule:
    if name not in RULES:
        raise AlignkitError(f"unknown oracle rule {name!r}", f"one of: {', '.join(RULES)}")
    return RULES[name]


def judge(texts: list[str], oracle: Rule, flip: bool) -> dict[str, Any]:
    """Answer values for one record: a choice + strength for two candidates, else a ranking (best first; answers
    whose difference is not noticeable share a rank)."""
    scores = [-s if flip else s for s in map(oracle.score, texts)]
    if len(texts) == 2:
        if not oracle.noticeable(*scores):
            return {schema.PREFERENCE: "tie"}
        gap = abs(scores[0] - scores[1]) / max(1.0, abs(scores[0]), abs(scores[1]))
        strength = 3 if gap >= 0.5 else 2 if gap >= 0.2 else 1
        return {schema.PREFERENCE: "1" if scores[0] > scores[1] else "2", schema.STRENGTH: strength}
    ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
    ranks, rank = {}, 0
    for position, i in enumerate(ranked):  # a new rank once an answer is noticeably worse than its rank's best
        if position == 0 or oracle.noticeable(scores[ranked[rank - 1]], scores[i]):
            rank = position + 1
        ranks[i] = rank
    return {schema.RANKING: [{"value": schema.candidate_field(i), "rank": ranks[i]} for i in ranked]}


def rate_all(
    session: AnnotatorSession,
    dataset_name: str,
    rule_name: str = "concise",
    noise: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> int:
    """Rate every record pending for this annotator (up to `limit`); returns how many responses were submitted."""
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
            flip = random.Random(stable_seed(seed, session.username, record["id"])).random() < noise
            session.respond(record["id"], judge(texts, oracle, flip))
            submitted += 1
            if limit is not None and submitted >= limit:
                break
    return submitted
