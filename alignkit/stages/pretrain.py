"""Continued (domain-adaptive) pretraining: raw text, next-token loss on every token, same adapter machinery as SFT.

Its run can be the `--from` of `alignkit sft`: the adapter is merged into the in-memory base before SFT adds its own.
"""

from __future__ import annotations

import math
from typing import Any

from alignkit import data, runner, runs, training
from alignkit.config import PretrainStageConfig


def text_column(trainer: dict[str, Any]) -> str:
    """The column that holds the text: TRL's `dataset_text_field` (`text` unless set)."""
    return str(trainer.get("dataset_text_field") or "text")


def trainer_on_text(plan: runner.Plan) -> Any:
    """The SFTTrainer on TRL's language-modeling rows: the text under the column TRL reads."""
    column = text_column(plan.cfg.trainer)
    return training.build_sft(plan, to_examples=lambda rows: [{column: row["text"]} for row in rows])


def perplexities(trainer: Any, plan: runner.Plan) -> dict[str, float]:
    """Perplexity of the validation text before training and at the end (exp of the per-token loss), the figure
    continued pretraining is judged by, as LLaMA-Factory's `pt` stage reports it."""
    losses = [record["eval_loss"] for record in trainer.state.log_history if "eval_loss" in record]
    if not losses:
        return {}
    return {"eval_perplexity_start": math.exp(losses[0]), "eval_perplexity": math.exp(losses[-1])}


RECIPE = runner.Recipe(
    "pretrain",
    classes=training.sft_classes,
    load_rows=lambda cfg, paths: data.load_text(paths, field=text_column(cfg.trainer)),
    build=trainer_on_text,
    final_metrics=perplexities,
)


def run(cfg: PretrainStageConfig) -> runs.Run:
    """Train a pretraining adapter on `{"text"}` rows (TRL's language-modeling format) and return the finished run."""
    return runner.run(RECIPE, cfg)
