"""Supervised fine-tuning: chat data -> a LoRA (or any peft method, or full) adapter on the base, via TRL's SFTTrainer.

Every assistant turn becomes one prompt->completion example, so the loss falls on assistant tokens only and the chat
template is applied by TRL exactly as at inference (no BOS added twice: the template carries the special tokens).
"""

from __future__ import annotations

from typing import Any

from alignkit import data, runner, runs, training
from alignkit.config import SFTStageConfig


def build(plan: runner.Plan) -> Any:
    """TRL's SFTTrainer on prompt->completion examples, once the model's template is known to render the tool calls."""
    data.check_tool_template(plan.tokenizer, plan.train_rows + plan.eval_rows, ", ".join(plan.files))
    return training.build_sft(plan, data.prompt_completion)


RECIPE = runner.Recipe(
    "sft", classes=training.sft_classes, load_rows=lambda cfg, paths: data.load_chat(paths), build=build
)


def run(cfg: SFTStageConfig) -> runs.Run:
    """Train an SFT adapter on chat rows and return the finished run."""
    return runner.run(RECIPE, cfg)
