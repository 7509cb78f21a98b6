"""`python -m benchmarks.reward_scoring DEMO_OUT`: the reward stage's final scoring of its held-out pairs, as it was
and as it is. A demo's reward model scores the reward run's prompt-disjoint validation pairs (the stage's own
`data.split`) in one process, two ways taken in turn, twice: pair by pair in batches as they come (every pair's
chosen, then every pair's rejected: `pair_margins` before each distinct conversation was scored once, in batches of
similar length), and through today's `pair_margins`.

Writes `benchmarks/results/reward-scoring-<date>.json`: pairs, conversations and distinct conversations, the seconds
of each try, the ratio of the faster tries, and the largest difference between the two ways' margins (padding changes
the order of the sums, not the figures).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from alignkit import hardware, lineage
from alignkit.stages.reward import pair_margins
from benchmarks.reward_transfer import training_split

ROOT = Path(__file__).resolve().parent.parent


def pair_by_pair(scorer: lineage.Scorer, pairs: list[dict]) -> list[float]:
    """Margins scored as the stage did before: every pair's two conversations, in order, a batch at a time."""
    conversations = [[*p["prompt"], *p[side]] for side in ("chosen", "rejected") for p in pairs]
    rewards: list[float] = []
    for start in range(0, len(conversations), scorer.batch_size):
        rewards += scorer.score_conversations(conversations[start : start + scorer.batch_size])
    return [c - r for c, r in zip(rewards[: len(pairs)], rewards[len(pairs) :], strict=True)]


if __name__ == "__main__":
    demo_out = Path(sys.argv[1])
    _, _, held = training_split(demo_out / "reward")
    scorer = lineage.load_scorer(demo_out / "reward")
    scorer.score([held[0]["prompt"]], [held[0]["chosen"]])  # warm up: first-call allocations are no one's cost
    ways = {"pair_by_pair": pair_by_pair, "distinct_by_length": pair_margins}
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    margins: dict[str, list[float]] = {}
    for _ in range(2):  # alternated, the faster of two each: a neighbour's load falls on both ways alike
        for way, score in ways.items():
            started = time.perf_counter()
            margins[way] = score(scorer, held)
            seconds[way].append(round(time.perf_counter() - started, 2))
    distinct = {json.dumps([p["prompt"], p[side]]) for p in held for side in ("chosen", "rejected")}
    results = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.reward_scoring " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **hardware.pick_precision().manifest},
        "pairs": len(held),
        "conversations": 2 * len(held),
        "distinct_conversations": len(distinct),
        "seconds": seconds,
        "speedup": round(min(seconds["pair_by_pair"]) / min(seconds["distinct_by_length"]), 2),
        "max_margin_difference": max(
            abs(a - b) for a, b in zip(margins["pair_by_pair"], margins["distinct_by_length"], strict=True)
        ),
    }
    out = ROOT / "benchmarks" / "results" / f"reward-scoring-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
