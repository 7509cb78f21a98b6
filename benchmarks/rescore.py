"""`python -m benchmarks.rescore DEMO_OUT [DEMO_OUT ...]`: a finished demo's saved answers (`eval/answers.jsonl`)
scored again with today's checks (`judges`), against the figures its report holds. When a check changes, this says
what it changes on runs already made, without generating anything. Appends one row per demo to
`benchmarks/results/rescore-<date>.jsonl`: accuracy and degenerate rate per run, and the DPO-vs-SFT oracle win-rate,
as the report had them and as scored now.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from alignkit import evaluate, generate, runs
from alignkit.judges import Prompt

ROOT = Path(__file__).resolve().parent.parent


def saved_answers(demo_out: Path, held: list[Prompt]) -> dict[str, list[str]]:
    """Each evaluated run's saved answer (`eval/answers.jsonl`) to each of the `held` prompts, in their order."""
    answers: dict[str, dict[str, str]] = {}
    for line in (demo_out / "eval" / "answers.jsonl").read_text().splitlines():
        row = json.loads(line)
        answers.setdefault(row["run"], {})[json.dumps(row["prompt"])] = row["answer"]
    return {run: [found[json.dumps(p.messages)] for p in held] for run, found in answers.items()}


def rescore(demo_out: Path) -> dict[str, Any]:
    report = json.loads((demo_out / "report.json").read_text())
    held = generate.load_prompt_items(str(demo_out / "heldout_prompts.jsonl"))
    by_run = saved_answers(demo_out, held)
    now = {run: evaluate.answer_figures(held, texts)[0] for run, texts in by_run.items()}
    won = evaluate.win_rate(held, by_run["dpo"], by_run["sft"], evaluate.oracle_judge(report["config"]["rule"]))
    return {
        "date": datetime.date.today().isoformat(),
        "git_commit": runs.git_commit(),
        "demo_out": str(demo_out),
        "seed": report["config"]["seed"],
        "accuracy": {"report": report["accuracy"], "now": {run: f["accuracy"] for run, f in now.items()}},
        "degenerate_rate": {
            "report": report["degenerate_rate"],
            "now": {run: f["degenerate_rate"] for run, f in now.items()},
        },
        "win_rate_vs_sft": {"report": report["win_rate_vs_sft"], "now": won["win_rate"]},
        "wins_ties_losses": {
            "report": [
                report["evaluation"]["comparisons"]["dpo vs sft"]["oracle"][k] for k in ("wins", "ties", "losses")
            ],
            "now": [won["wins"], won["ties"], won["losses"]],
        },
        "rule": report["config"]["rule"],
    }


if __name__ == "__main__":
    results = ROOT / "benchmarks" / "results" / f"rescore-{datetime.date.today().isoformat()}.jsonl"
    for out_dir in sys.argv[1:]:
        row = rescore(Path(out_dir))
        with results.open("a", encoding="utf-8") as file:
            file.write(json.dumps(row) + "\n")
        print(json.dumps(row))
