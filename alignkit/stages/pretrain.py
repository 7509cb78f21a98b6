"""Continued (domain-adaptive) pretraining: raw text, next-token loss on every token, same adapter machinery as SFT.

Its run can be the `--from` of `alignkit sft`: the adapter is merged into the in-memory base before SFT adds its own.
"""

from __future__ import annotations

from alignkit import data, runs, training
from alignkit.config import PretrainStageConfig


def run(cfg: PretrainStageConfig) -> runs.Run:
    """Train a pretraining adapter on `{"text"}` rows (TRL's language-modeling format) and return the finished run."""
    return training.train_sft("pretrain", cfg, data.load_text, to_examples=list)
