"""Supervised fine-tuning: chat data -> a LoRA (or any peft method, or full) adapter on the base, via TRL's SFTTrainer.

The loss falls on assistant tokens only. A conversation is one example, every assistant turn masked in, when the
model's chat template renders its turns as prefixes of the whole (`data.sft_examples`); otherwise every assistant turn
becomes one prompt->completion example. Either way the template is applied exactly as at inference (no BOS added
twice: the template carries the special tokens).
"""

from __future__ import annotations

from typing import Any

from alignkit import data, runner, runs, training
from alignkit.config import SFTStageConfig


def build(plan: runner.Plan) -> Any:
    """TRL's SFTTrainer on the chat rows' examples, once the model's template is known to render the tool calls."""
    data.check_tool_template(plan.tokenizer, plan.train_rows + plan.eval_rows, plan.files)
    prompt_loss = plan.args.completion_only_loss is False  # None (TRL's default): only the replies are trained
    return training.build_sft(plan, lambda rows: data.sft_examples(rows, plan.tokenizer, prompt_loss))


RECIPE = runner.Recipe(
    "sft",
    classes=training.sft_classes,
    load_rows=lambda cfg, paths, bad_rows=None: data.load_chat(paths, bad_rows),
    build=build,
)


def run(cfg: SFTStageConfig) -> runs.Run:
    """Train an SFT adapter on chat rows and return the finished run."""
    return runner.run(RECIPE, cfg)
