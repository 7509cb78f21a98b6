"""Continued (domain-adaptive) pretraining: raw text, next-token loss on every token, same adapter machinery as SFT.

Its run can be the `--from` of `alignkit sft`: the adapter is merged into the in-memory base before SFT adds its own.
"""

from __future__ import annotations

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


RECIPE = runner.Recipe(
    "pretrain",
    classes=training.sft_classes,
    load_rows=lambda cfg, paths: data.load_text(paths, field=text_column(cfg.trainer)),
    build=trainer_on_text,
)


def run(cfg: PretrainStageConfig) -> runs.Run:
    """Train a pretraining adapter on `{"text"}` rows (TRL's language-modeling format) and return the finished run."""
    return runner.run(RECIPE, cfg)
