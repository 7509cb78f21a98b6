"""`alignkit feedback simulate`: oracle annotators that rate through Argilla's API exactly as people do (own login,
own queue, one response per record), with a deterministic preference rule plus seeded noise.

Rules score a candidate; higher is preferred. `concise` (the demo's) prefers the shorter answer, a preference a small
model learns visibly in minutes. Swap it with `--rule`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.client import AnnotatorSession
from alignkit.feedback.push import stable_seed

RULES: dict[str, Callable[[str], float]] = {
    "concise": lambda text: -len(text.split()),
    "verbose": lambda text: len(text.split()),
    "no_lists": lambda text: -len(re.findall(r"^\s*(?:[-*]|\d+\.)\s", text, flags=re.MULTILINE)),
    "exclamation": lambda text: float(text.rstrip().endswith("!")),
}


def rule(name: str) -> Callable[[str], float]:
    if name not in RULES:
        raise AlignkitError(f"unknown oracle rule {name!r}", f"one of: {', '.join(RULES)}")
    return RULES[name]


def judge(texts: list[str], score: Callable[[str], float], flip: bool) -> dict[str, Any]:
    """Answer values for one record: a choice + strength for two candidates, else a ranking (best first)."""
    scores = [score(t) for t in texts]
    if flip:
        scores = [-s for s in scores]
    if len(texts) == 2:
        if scores[0] == scores[1]:
            return {schema.PREFERENCE: "tie"}
        gap = abs(scores[0] - scores[1]) / max(1.0, abs(scores[0]), abs(scores[1]))
        strength = 3 if gap >= 0.5 else 2 if gap >= 0.2 else 1
        return {schema.PREFERENCE: "1" if scores[0] > scores[1] else "2", schema.STRENGTH: strength}
    ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
    return {schema.RANKING: [{"value": schema.candidate_field(i), "rank": r + 1} for r, i in enumerate(ranked)]}


def rate_all(
    session: AnnotatorSession,
    dataset_name: str,
    rule_name: str = "concise",
    noise: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> int:
    """Rate every record pending for this annotator (up to `limit`); returns how many responses were submitted."""
    score = rule(rule_name)
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
            session.respond(record["id"], judge(texts, score, flip))
            submitted += 1
            if limit is not None and submitted >= limit:
                break
    return submitted
