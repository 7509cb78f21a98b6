"""Which records annotators see first: one rule, used by `feedback push` (stored as metadata) and the annotate app.

With a reward model: the pairs it is least sure about first (|P(A≻B) − 0.5| small). Without one: the prompts whose
candidates differ most first (a rating between near-identical answers teaches little).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from alignkit import judges, lineage

Scorer = Callable[[list[dict[str, str]], list[str]], list[float]]


def priority(prompt: list[dict[str, str]], candidates: Sequence[str], scorer: Scorer | None = None) -> float:
    """Higher = rate sooner."""
    if scorer is not None and len(candidates) >= 2:
        rewards = scorer(prompt, list(candidates))
        best, second = sorted(rewards, reverse=True)[:2]
        p_best = 1.0 / (1.0 + math.exp(-(best - second)))
        return 1.0 - 2.0 * abs(p_best - 0.5)  # 1 = coin flip, 0 = certain
    return diversity(candidates)


def diversity(candidates: Sequence[str]) -> float:
    """Mean pairwise word-set Jaccard distance between candidates (0 = identical, 1 = no word in common). Words are
    split at spaces and, in Chinese and Japanese, which have none, per character (`judges.CJK_CHAR`): one whole
    answer was one word, so any two Chinese answers that differed at all were "completely different"."""
    sets = [set(judges.regex.sub(f"({judges.CJK_CHAR})", r" \1 ", text.lower()).split()) for text in candidates]
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
    if not pairs:
        return 0.0
    return sum(1.0 - len(a & b) / max(1, len(a | b)) for a, b in pairs) / len(pairs)


def suggestion(prompt: list[dict[str, str]], candidates: Sequence[str], scorer: Scorer) -> tuple[int, float]:
    """The reward model's pre-label: (index of the candidate it prefers, its probability of beating the next best)."""
    rewards = scorer(prompt, list(candidates))
    order = sorted(range(len(rewards)), key=lambda i: rewards[i], reverse=True)
    margin = rewards[order[0]] - rewards[order[1]] if len(order) > 1 else 0.0
    return order[0], 1.0 / (1.0 + math.exp(-margin))


def reward_scorer(run_dir: str) -> Scorer:
    """A finished `alignkit reward` run as a `Scorer`: the reward of each candidate as the reply to the prompt."""
    reward_model = lineage.load_scorer(run_dir)

    def score(prompt: list[dict[str, str]], candidates: list[str]) -> list[float]:
        return reward_model.score([prompt] * len(candidates), list(candidates))

    return score
