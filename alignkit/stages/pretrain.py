"""Continued (domain-adaptive) pretraining: raw text, next-token loss on every token, same adapter machinery as SFT.

Its run can be the `--from` of `alignkit sft`: the adapter is merged into the in-memory base before SFT adds its own.
"""

from __future__ import annotations

from alignkit import data, runner, runs, training
from alignkit.config import PretrainStageConfig

RECIPE = runner.Recipe(
    "pretrain",
    classes=training.sft_classes,
    load_rows=lambda cfg, paths: data.load_text(paths),
    build=lambda plan: training.build_sft(plan, to_examples=list),  # `{"text"}` rows are TRL's LM format already
)


def run(cfg: PretrainStageConfig) -> runs.Run:
    """Train a pretraining adapter on `{"text"}` rows (TRL's language-modeling format) and return the finished run."""
    return runner.run(RECIPE, cfg)
