"""`python -m benchmarks.demo_seeds`: the demo loop on several seeds, the figures that say whether it made the model
better, side by side.

Each seed runs `alignkit demo --set seed=N` in its own process (a fresh Argilla, nothing shared) into
`<out>/seed-N/`, then this script collects from each `report.json`: reward accuracy on prompt-disjoint held-out pairs,
the DPO-vs-SFT oracle win-rate with its 95 % interval, checked accuracy and degenerate rate of base / SFT / DPO,
mean words, the forgetting ratio, the alarms, seconds. Writes `benchmarks/results/demo-seeds-<date>.json` and prints
a markdown table (the one in docs/preference-training.md). Environment: DEMO_SEEDS (0,1,2), DEMO_OUT (demo-seeds),
DEMO_ARGS (extra `alignkit demo` flags), DEMO_RESULTS (the results file's name, for a second run on one day),
DEMO_KEEP=1 (a seed whose report.json is already in DEMO_OUT is read, not rerun: resume after an interruption).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from alignkit import hardware
from alignkit.runs import Run, git_commit

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {  # issue 17's bar for the demo, per seed
    "win_rate_vs_sft": ">= 0.75, interval's lower bound > 0.5",
    "accuracy": "dpo >= sft, over the same prompts",
    "degenerate_rate": "dpo <= sft",
    "forgetting_ppl_ratio": "<= 1.05",
    "reward_accuracy": ">= 0.80 (prompt-disjoint)",
    "seconds_total": "<= 600 on 2 quiet cores",
}


def seed_figures(report: dict[str, Any]) -> dict[str, Any]:
    comparison = report["evaluation"]["comparisons"]["dpo vs sft"]["oracle"]
    runs = report["evaluation"]["runs"]
    return {
        # HEAD when the seed's DPO run was made (DEMO_KEEP reads earlier seeds); a tree changed while a demo ran
        # can differ from the code that process had already imported
        "git_commit": Run(report["runs"]["dpo"]).manifest.get("git_commit"),
        "reward_accuracy": report["reward_accuracy"],
        "reward_shared_prompts": report["reward_shared_prompts"],
        "reward_eval_prompts": report.get("reward_eval_prompts"),  # reports before 2026-12-04 (late) have none
        "reward_accuracy_interval": report.get("reward_accuracy_interval"),  # before 2026-12-04 (session 17): none
        "win_rate_vs_sft": report["win_rate_vs_sft"],
        "win_rate_vs_sft_interval": report["win_rate_vs_sft_interval"],
        "wins_ties_losses": [comparison["wins"], comparison["ties"], comparison["losses"]],
        "win_rate_vs_sft_reward_model": report["win_rate_vs_sft_reward_model"],
        "accuracy": report["accuracy"],
        "accuracy_by_skill": {name: figures["accuracy_by_skill"] for name, figures in runs.items()},
        # accuracy's denominators, the same for every model since 2026-12-06 (session 30): before, a greeting without a
        # name entered only when it failed and a refused open prompt only as a failure
        "checked_prompts": {name: figures["checked_prompts"] for name, figures in runs.items()},
        "checked_by_skill": {name: figures.get("checked_by_skill") for name, figures in runs.items()},
        "degenerate_rate": report["degenerate_rate"],
        "mean_words": report["mean_words"],
        "refusal_rate_harmful": {name: figures["refusal_rate_harmful"] for name, figures in runs.items()},
        "forgetting_ppl_ratio": report["forgetting_ppl_ratio"],
        "alarms": report["alarms"],
        "verdict": report.get("verdict"),  # reports before 2026-12-03 (evening) have none
        "dpo_checked_steps": report.get("dpo_checked_steps"),  # reports before 2026-12-05: no model selection
        "dpo_kept_step": report.get("dpo_kept_step"),
        "seconds_total": report["seconds_total"],
        "sft_run": report.get("config", {}).get("sft_run"),  # an earlier SFT run reused: `sft` took no time
        "seconds_per_stage": report["seconds_per_stage"],
        "examples": report["evaluation"]["examples"],
    }


def met(figures: dict[str, Any]) -> dict[str, bool]:
    accuracy, degenerate = figures["accuracy"], figures["degenerate_rate"]
    same_prompts = all(figures[k]["dpo"] == figures[k]["sft"] for k in ("checked_prompts", "checked_by_skill"))
    return {
        "win_rate_vs_sft": figures["win_rate_vs_sft"] >= 0.75 and figures["win_rate_vs_sft_interval"][0] > 0.5,
        "accuracy": accuracy["dpo"] >= accuracy["sft"] and same_prompts,
        "degenerate_rate": degenerate["dpo"] <= degenerate["sft"],
        "forgetting_ppl_ratio": figures["forgetting_ppl_ratio"] <= 1.05,
        "reward_accuracy": figures["reward_accuracy"] >= 0.80,
        "seconds_total": figures["seconds_total"] <= 600 and not figures.get("sft_run"),  # a whole loop only
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| seed | reward acc. (prompt-disjoint) | DPO vs SFT win-rate [95 %] (W/T/L) | accuracy base / SFT / DPO | "
        "degenerate SFT / DPO | words SFT / DPO | ppl ratio | s | alarms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, f in results["seeds"].items():
        low, high = f["win_rate_vs_sft_interval"]
        acc, deg, words = f["accuracy"], f["degenerate_rate"], f["mean_words"]
        alarms = "; ".join(a for found in f["alarms"].values() for a in found) or "none"
        lines.append(
            f"| {seed} | {f['reward_accuracy']:.3f} | {f['win_rate_vs_sft']:.3f} [{low:.3f}, {high:.3f}] "
            f"({'/'.join(map(str, f['wins_ties_losses']))}) | {acc['base']:.3f} / {acc['sft']:.3f} / "
            f"{acc['dpo']:.3f} | {deg['sft']:.3f} / {deg['dpo']:.3f} | {words['sft']:.1f} / {words['dpo']:.1f} | "
            f"{f['forgetting_ppl_ratio']:.3f} | {f['seconds_total']:.0f} | {alarms} |"
        )
    return "\n".join(lines)


def main() -> None:
    seeds = [int(s) for s in os.environ.get("DEMO_SEEDS", "0,1,2").split(",")]
    out = Path(os.environ.get("DEMO_OUT", "demo-seeds"))
    extra = shlex.split(os.environ.get("DEMO_ARGS", ""))
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": f"python -m benchmarks.demo_seeds (DEMO_SEEDS={','.join(map(str, seeds))})"
        + (f" (DEMO_ARGS={shlex.join(extra)})" if extra else ""),
        "git_commit": git_commit(),
        # fp32 on CPUs without native bf16: a seed takes several times longer there (docs/preference-training.md)
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **hardware.pick_precision().manifest},
        "targets": TARGETS,
        "seeds": {},
        "met": {},
    }
    for seed in seeds:
        seed_out = out / f"seed-{seed}"
        command = [sys.executable, "-m", "alignkit.cli", "demo", "--out", str(seed_out), "--set", f"seed={seed}"]
        if not (os.environ.get("DEMO_KEEP") == "1" and (seed_out / "report.json").is_file()):
            subprocess.run([*command, *extra], check=True)
        figures = seed_figures(json.loads((seed_out / "report.json").read_text()))
        results["seeds"][str(seed)] = figures
        results["met"][str(seed)] = met(figures)
    path = ROOT / "benchmarks" / "results" / os.environ.get("DEMO_RESULTS", f"demo-seeds-{results['date']}.json")
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
