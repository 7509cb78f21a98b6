"""`python -m benchmarks.dpo_variants DEMO_OUT SEED NAME [key=value ...]`: one DPO variant retrained on a finished
`alignkit demo` output (its SFT run and pairs), judged against the demo's SFT answers on the same held-out prompts
(its `heldout_prompts.jsonl`).

`key=value` are `trainer:` keys over the demo's DPO settings (values read as JSON where they parse, e.g.
`max_steps=32`, `loss_weights=[1.0,2.0]`), plus `pairs=all` to train on every decided pair instead of each prompt's
best vs worst, or `pairs=PATH` for a pairs file of its own, and `checked=PATH` for DPO's model selection on that
prompt file (`checked_prompts`, checked at steps 0, 8 and 16; the demo writes `checked_prompts.jsonl` with `--set
checked_prompts=40`). Appends one row to
`benchmarks/results/dpo-variants-<date>.jsonl`: the oracle win-rate vs SFT with its interval and W/T/L, checked
accuracy and degenerate rate (SFT, variant), mean words, training seconds.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import alignkit
from alignkit import evaluate, generate, judges, lineage
from benchmarks.rescore import saved_answers

ROOT = Path(__file__).resolve().parent.parent
DEMO_DPO = {  # alignkit/demo.py's DPO trainer settings
    "max_steps": 16,
    "eval_steps": 16,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "loss_type": ["sigmoid", "sft"],
    "loss_weights": [1.0, 1.0],
    "eval_on_start": False,
    "load_best_model_at_end": False,
}


PAIR_FILES = {"all": "pairs.jsonl", "best-worst": "pairs-best-worst.jsonl"}  # else `pairs=` is a file's path


def parse(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def main(demo_out: Path, seed: int, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    pairs = overrides.pop("pairs", "best-worst")
    checked = overrides.pop("checked", None)
    selection = {"checked_prompts": checked, "checked_max_new_tokens": 48} if checked else {}
    held = generate.load_prompt_items(str(demo_out / "heldout_prompts.jsonl"))  # as `alignkit demo` wrote them
    sft = saved_answers(demo_out, held)["sft"]
    started = time.time()
    run = alignkit.dpo(
        data={"paths": [str(demo_out / PAIR_FILES[pairs] if pairs in PAIR_FILES else Path(pairs))],
              "validation_split": 0.1},
        from_run=json.loads((demo_out / "report.json").read_text())["runs"]["sft"],  # the demo's, or its `sft_run`
        out=str(demo_out / "variants" / name),
        overwrite=True,
        early_stopping_patience=None,
        **selection,
        trainer=DEMO_DPO | ({"eval_steps": 8} if checked else {}) | overrides,
    )  # fmt: skip
    seconds = time.time() - started
    model, tokenizer = lineage.load_run_model(run.path)
    answers = generate.greedy_replies(model, tokenizer, [p.messages for p in held], 48, batch_size=40)
    won = evaluate.win_rate(held, answers, sft, evaluate.oracle_judge(judges.DEFAULT_RULE))
    sft_figures, _ = evaluate.answer_figures(held, sft)
    variant_figures, _ = evaluate.answer_figures(held, answers)
    return {
        "date": datetime.date.today().isoformat(),
        "seed": seed,
        "demo_out": str(demo_out),  # which demo's SFT run and pairs
        "name": name,
        "pairs": pairs,
        "trainer": overrides,
        "checked": checked,  # DPO's model selection: its prompt file, the step saved
        "kept_step": run.metrics.get("checked_kept_step"),
        "train_seconds": round(seconds),
        "win_rate_vs_sft": round(won["win_rate"], 4),
        "interval_95": won["interval_95"],
        "wins_ties_losses": [won["wins"], won["ties"], won["losses"]],
        "accuracy_sft_variant": [sft_figures["accuracy"], variant_figures["accuracy"]],
        "degenerate_sft_variant": [sft_figures["degenerate_rate"], variant_figures["degenerate_rate"]],
        "mean_words_sft_variant": [sft_figures["mean_words"], variant_figures["mean_words"]],
    }


if __name__ == "__main__":
    out_dir, seed_arg, variant, *assignments = sys.argv[1:]
    overrides = {key: parse(value) for key, value in (a.split("=", 1) for a in assignments)}
    row = main(Path(out_dir), int(seed_arg), variant, overrides)
    results = ROOT / "benchmarks" / "results" / f"dpo-variants-{row['date']}.jsonl"
    with results.open("a", encoding="utf-8") as file:
        file.write(json.dumps(row) + "\n")
    print(json.dumps(row))
