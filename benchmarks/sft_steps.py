"""`python -m benchmarks.sft_steps OUT NAME STEPS LEARNING_RATE`: the demo's SFT stage (`demo.train_sft`, on the
bundled `datasets/sft.jsonl`) with those steps and learning rate, then its greedy answers to every bundled prompt
with a spec (`datasets/prompts.jsonl` and `datasets/sft_eval.jsonl`, 140 prompts; SFT never trains on either),
checked.

Appends one row to `benchmarks/results/sft-steps-<date>.jsonl`: steps, learning rate, training seconds, checked
accuracy overall and per skill, the checked prompts, degenerate rate, mean words. It answers how much SFT the demo
should do: more steps only help the loop if the SFT model gets more answers right.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from alignkit import demo, evaluate, generate, lineage
from alignkit.paths import bundled_data

ROOT = Path(__file__).resolve().parent.parent


def main(out: Path, name: str, steps: int, learning_rate: float) -> dict[str, Any]:
    started = time.time()
    run = demo.train_sft(demo.DemoConfig(sft_steps=steps, sft_learning_rate=learning_rate), out / name)
    seconds = time.time() - started
    prompts = generate.load_prompt_items(str(bundled_data("prompts.jsonl")))
    prompts += evaluate.load_eval_prompts(str(bundled_data("sft_eval.jsonl")))
    model, tokenizer = lineage.load_inference_model(run.path)
    answers = generate.greedy_replies(model, tokenizer, [p.messages for p in prompts], 48, batch_size=40)
    figures, _ = evaluate.answer_figures(prompts, answers)
    return {
        "date": datetime.date.today().isoformat(),
        "name": name,
        "steps": steps,
        "learning_rate": learning_rate,
        "train_seconds": round(seconds, 1),
        "accuracy": figures["accuracy"],
        "degenerate_rate": figures["degenerate_rate"],
        "mean_words": figures["mean_words"],
        "checked_prompts": figures["checked_prompts"],
        "accuracy_by_skill": figures["accuracy_by_skill"],
    }


if __name__ == "__main__":
    out_dir, variant, steps_arg, lr_arg = sys.argv[1:]
    row = main(Path(out_dir), variant, int(steps_arg), float(lr_arg))
    results = ROOT / "benchmarks" / "results" / f"sft-steps-{row['date']}.jsonl"
    with results.open("a", encoding="utf-8") as file:
        file.write(json.dumps(row) + "\n")
    print(json.dumps(row))
