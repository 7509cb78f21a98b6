"""`python -m benchmarks.reward_transfer NAME REWARD_RUN [REWARD_RUN ...]`: reward models scored on every rated pair
they never trained on, from several demo outputs, not only on their own few held-out prompts.

A demo's reward run holds out a fifth of its pairs, whole prompts at a time (6-8 prompts when the demo rated 60 of
100, until 2026-12-04). Its accuracy moved by up to 0.18 between settings that differ little. Each `alignkit demo`
seed rates some of the same bundled prompts, so the other seeds' pairs hold more prompts a seed's reward model never
saw (31-35 in all with its own held-out ones, then; other candidates, other simulated annotators, the same rule).
Each run is scored on every pair of the given runs' pair files whose prompt is not among its own training rows (the
same `data.split` its stage made, from its config).

Appends one row per run to `benchmarks/results/reward-transfer-<date>.jsonl`: NAME, the run, its settings, and the
accuracy on its own held-out pairs and on all unseen pairs (pairs, prompts, and the mean of per-prompt accuracies,
which weighs each prompt once).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from alignkit import data, lineage
from alignkit.data import preferences
from alignkit.stages.reward import pair_margins, pairwise_metrics, prompt_key, prompt_keys, right_by_prompt

ROOT = Path(__file__).resolve().parent.parent


def pair_files(run_dir: Path) -> list[str]:
    """The pairs files a reward run trained on, from its config."""
    return yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["paths"]


def training_split(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(config, train rows, held-out rows) as the run's reward stage split them."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows = preferences.load_preferences(config["data"]["paths"])
    train, held = data.split(rows, config["data"]["validation_split"], config["data"]["seed"])
    return config, train, held


def accuracy(pairs: list[dict[str, Any]], margins: list[float]) -> dict[str, float]:
    """The share of `pairs` ordered right, over pairs and as the mean of per-prompt shares (each prompt weighs once)."""
    by_prompt = right_by_prompt(pairs, margins)
    per_prompt = sum(sum(v) / len(v) for v in by_prompt.values()) / len(by_prompt)
    over_pairs = sum(m > 0 for m in margins) / len(margins)
    return {"accuracy": round(over_pairs, 4), "per_prompt_accuracy": round(per_prompt, 4)}


def score(run_dir: Path, files: list[str]) -> dict[str, Any]:
    config, train, held = training_split(run_dir)
    seen = prompt_keys(train)
    unseen = [row for row in preferences.load_preferences(files) if prompt_key(row) not in seen]
    scorer = lineage.load_scorer(run_dir)
    margins = pair_margins(scorer, unseen)
    own = pairwise_metrics(scorer, held, bins=5)
    return {
        "settings": {"use_margin": config["use_margin"], "max_steps": config["trainer"].get("max_steps")}
        | {"learning_rate": config["trainer"].get("learning_rate")},
        "train_pairs": len(train),
        "own_held_out": {"pairs": len(held), "prompts": len(prompt_keys(held))}
        | {"accuracy": round(own["pairwise_accuracy"], 4)},
        "unseen": {"pairs": len(unseen), "prompts": len(prompt_keys(unseen))} | accuracy(unseen, margins),
    }


if __name__ == "__main__":
    name, run_dirs = sys.argv[1], [Path(p) for p in sys.argv[2:]]
    files = sorted({path for run in run_dirs for path in pair_files(run)})
    out = ROOT / "benchmarks" / "results" / f"reward-transfer-{datetime.date.today().isoformat()}.jsonl"
    for run_dir in run_dirs:
        row = {"date": datetime.date.today().isoformat(), "name": name, "run": str(run_dir)}
        row |= {"pair_files": files} | score(run_dir, files)
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))
