"""`python -m benchmarks.reward_errors DEMO_OUT [DEMO_OUT ...]`: where a demo's reward model errs on its held-out
pairs. For each finished `alignkit demo` output, the reward run's prompt-disjoint validation pairs (the same
`data.split` the reward stage made, from its config), each scored by the reward model and labelled by the level at
which the `careful` rule tells its two answers apart: degenerate, correct, task, length, or none.

Writes `benchmarks/results/reward-errors-<date>.json`: per demo output, the held-out prompts and pairs, and per level
the pairs ordered right, the pairs and the prompts they come from (a level whose rule disagrees with the annotators'
label is counted apart). It answers whether a low reward accuracy is a few hard prompts or a rule the model did not
learn.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from alignkit import generate, judges, lineage
from alignkit.stages.reward import pair_margins, prompt_keys
from benchmarks.reward_transfer import training_split

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ("degenerate", "correct", "task", "length")


def reward_errors(demo_out: Path) -> dict[str, Any]:
    _, _, held = training_split(demo_out / "reward")  # the rows the reward stage held out
    specs = {json.dumps(p.messages): p for p in generate.load_prompt_items(str(demo_out / "train_prompts.jsonl"))}
    margins = pair_margins(lineage.load_scorer(demo_out / "reward"), held)
    levels: dict[str, dict[str, Any]] = {}
    for row, margin in zip(held, margins, strict=True):
        prompt = specs[json.dumps(row["prompt"])]
        a = judges.careful_score(row["chosen"][0]["content"], prompt)
        b = judges.careful_score(row["rejected"][0]["content"], prompt)
        level = next((name for name, x, y in zip(LEVELS, a, b, strict=True) if x != y), "none")
        key = level if a >= b else f"{level} (rule disagrees with the label)"
        counts = levels.setdefault(key, {"right": 0, "pairs": 0, "prompts": set()})
        counts["right"] += margin > 0
        counts["pairs"] += 1
        counts["prompts"].add(prompt.text)
    return {
        "held_out_prompts": len(prompt_keys(held)),
        "held_out_pairs": len(held),
        "accuracy": sum(c["right"] for c in levels.values()) / max(1, len(held)),
        "by_level": {key: c | {"prompts": len(c["prompts"])} for key, c in sorted(levels.items())},
    }


if __name__ == "__main__":
    results = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.reward_errors " + " ".join(sys.argv[1:]),
        "outputs": {path: reward_errors(Path(path)) for path in sys.argv[1:]},
    }
    out = ROOT / "benchmarks" / "results" / f"reward-errors-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
