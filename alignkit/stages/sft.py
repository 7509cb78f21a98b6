"""Supervised fine-tuning: chat data -> a LoRA (or any peft method, or full) adapter on the base, via TRL's SFTTrainer.

Every assistant turn becomes one prompt->completion example, so the loss falls on assistant tokens only and the chat
template is applied by TRL exactly as at inference (no BOS added twice: the template carries the special tokens).
"""

from __future__ import annotations

from alignkit import data, runs, training
from alignkit.config import SFTStageConfig


def run(cfg: SFTStageConfig) -> runs.Run:
    """Train an SFT adapter on chat rows and return the finished run."""
    return training.train_sft("sft", cfg, data.load_chat, data.prompt_completion)
