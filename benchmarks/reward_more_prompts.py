"""`python -m benchmarks.reward_more_prompts OUT DEMO_OUT DEMO_OUT DEMO_OUT`: does the reward model order unseen pairs
better when more prompts were rated?

Each `alignkit demo` seed rates some of the same bundled prompts (60 of 100 until 2026-12-04), so two seeds together
have rated more of them than one (about 84 of those 100). For each demo as the test, the other two give the
training data, with the first one's reward config and `REWARD_STEPS` steps (env, default 96):

- `one`: the first other demo's pairs (its rated prompts, as the demo trains on);
- `two-same-pairs`: both other demos' pairs, shuffled and cut to as many pairs as `one` has: more prompts, not more
  pairs;
- `two`: both other demos' pairs (more prompts, and twice the candidates on the prompts both rated).

All three are scored on the test demo's pairs whose prompt none of them trained on (each run's own `data.split`).
Appends one row per test demo to `benchmarks/results/reward-more-prompts-<date>.jsonl`: the common unseen pairs and
prompts, and per model its training pairs and prompts and its accuracy there (over pairs, and the mean per prompt).
"""

from __future__ import annotations

import datetime
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from alignkit import jsonl, lineage
from alignkit.config import RewardStageConfig, load_config
from alignkit.data import preferences
from alignkit.stages import reward
from alignkit.stages.reward import pair_margins, prompt_key, prompt_keys
from benchmarks.reward_transfer import accuracy, pair_files, training_split

ROOT = Path(__file__).resolve().parent.parent


def train(config: Path, files: list[str], out: Path, steps: int) -> Path:
    """A reward run of `config` (a demo's reward config.yaml) on `files`, for `steps` steps."""
    values = {"data": {"paths": files}, "out": str(out), "overwrite": True, "trainer": {"max_steps": steps}}
    return reward.run(load_config(RewardStageConfig, config, values=values)).path


def same_pairs_file(files: list[str], pairs: int, path: Path) -> str:
    """`pairs` pairs drawn from all of `files` (seeded), written to `path`."""
    rows = preferences.load_preferences(files)
    random.Random(0).shuffle(rows)
    jsonl.write_jsonl(path, rows[:pairs], overwrite=True)
    return str(path)


def main(out: Path, demos: list[Path], steps: int) -> list[dict[str, Any]]:
    rows = []
    for test in demos:
        first, second = (demo for demo in demos if demo != test)
        config = first / "reward" / "config.yaml"
        one, both = pair_files(first / "reward"), pair_files(first / "reward") + pair_files(second / "reward")
        one_pairs = len(preferences.load_preferences(one))
        files = {
            "one": one,
            "two-same-pairs": [same_pairs_file(both, one_pairs, out / f"pairs-{test.name}.jsonl")],
            "two": both,
        }
        runs = {name: train(config, paths, out / f"{name}-test-{test.name}", steps) for name, paths in files.items()}
        trained = {name: training_split(run)[1] for name, run in runs.items()}
        seen = set().union(*(prompt_keys(pairs) for pairs in trained.values()))
        unseen = [
            pair for pair in preferences.load_preferences(pair_files(test / "reward")) if prompt_key(pair) not in seen
        ]
        row: dict[str, Any] = {"date": datetime.date.today().isoformat(), "test": str(test), "steps": steps}
        row |= {"unseen": {"pairs": len(unseen), "prompts": len(prompt_keys(unseen))}}
        for name, run in runs.items():
            margins = pair_margins(lineage.load_scorer(run), unseen)
            row[name] = {"train_pairs": len(trained[name]), "train_prompts": len(prompt_keys(trained[name]))}
            row[name] |= accuracy(unseen, margins)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    out_dir, demo_dirs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = ROOT / "benchmarks" / "results" / f"reward-more-prompts-{datetime.date.today().isoformat()}.jsonl"
    for result in main(out_dir, demo_dirs, int(os.environ.get("REWARD_STEPS", "96"))):
        with results.open("a", encoding="utf-8") as file:
            file.write(json.dumps(result) + "\n")
