"""Supervised fine-tuning: chat data -> a LoRA (or any peft method, or full) adapter on the base, via TRL's SFTTrainer.

Every assistant turn becomes one prompt->completion example, so the loss falls on assistant tokens only and the chat
template is applied by TRL exactly as at inference (no BOS added twice: the template carries the special tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alignkit import data, models, runs, training
from alignkit.config import SFTStageConfig, TrainStageConfig

Rows = list[dict[str, Any]]


def run(cfg: SFTStageConfig) -> runs.Run:
    """Train an SFT adapter on chat rows and return the finished run."""
    return train("sft", cfg, data.load_chat, data.prompt_completion)


def train(
    stage: str, cfg: TrainStageConfig, load_rows: Callable[[list[str]], Rows], to_examples: Callable[[Rows], Rows]
) -> runs.Run:
    """The SFTTrainer recipe shared by `sft` (chat rows) and `pretrain` (text rows)."""
    cfg = training.resolve_resume(stage, cfg)
    parent = runs.open_run(cfg.from_run) if cfg.from_run else None
    train_rows, eval_rows, files = data.load_split(cfg.data, load_rows)  # every file validated before anything heavy
    path = runs.plan_path(stage, cfg)
    precision = models.pick_precision(cfg.model.precision)
    args = sft_args(cfg, path, bool(eval_rows), precision)
    peft_config = models.peft_config(cfg.peft)  # a bad `peft:` section fails before any work
    models.resolve_model(cfg.model.name)  # unknown model: fail before the run dir exists (embedded: convert once)
    run = training.create_run(stage, cfg, path, files, parent, args, peft_config, **precision.manifest)

    with run.removed_if_refused():
        model, tokenizer, peft_config = training.load_trainable(cfg, run, precision)
        data.check_tool_template(tokenizer, train_rows + eval_rows, ", ".join(files))
        trainer = build_trainer(args, model, tokenizer, peft_config, to_examples(train_rows), to_examples(eval_rows))
        if "padding_free" not in cfg.trainer:  # `trainer.padding_free: false` keeps padded batches
            use_padding_free(trainer, peft_config)
        training.trainable_tokens_for_trl(trainer.model)
        training.add_callbacks(trainer, run, cfg, has_eval=bool(eval_rows))
    return training.train_and_save(trainer, run, {"train_rows": len(train_rows), "eval_rows": len(eval_rows)})


def sft_args(cfg: TrainStageConfig, path: Any, has_eval: bool, precision: models.Precision) -> Any:
    from trl import SFTConfig

    return training.trainer_args(SFTConfig, cfg, str(path / "checkpoints"), has_eval, precision)


def build_trainer(
    args: Any, model: Any, tokenizer: Any, peft_config: Any, train_examples: Rows, eval_examples: Rows
) -> Any:
    from trl import SFTTrainer

    from datasets import Dataset

    # "use_json": rows whose tool calls have different argument keys stay as they are (Arrow would otherwise merge
    # every row's keys into one struct and fill the missing ones with null, and add `tool_calls: null` to plain turns)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_examples, on_mixed_types="use_json"),
        eval_dataset=Dataset.from_list(eval_examples, on_mixed_types="use_json") if eval_examples else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def use_padding_free(trainer: Any, peft_config: Any) -> None:
    """Batches as one row of real tokens (TRL's padding-free collator), not rows padded to the longest one.

    On mixed-length chat data most of a padded batch is padding, computed through every layer and the LM head. TRL
    refuses `padding_free=True` with `max_length` unless packing, because the flattened row can exceed `max_length`;
    but each example is still truncated to `max_length` when the dataset is prepared, so a batch never holds more than
    batch x max_length tokens, the bound a padded batch has. Attention stays within each example: transformers builds
    a block-diagonal mask from the restarting `position_ids`. Not for prompt learning (virtual tokens are prepended
    to each row) nor with packing (already padding-free).
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    args, collator = trainer.args, trainer.data_collator
    if getattr(peft_config, "is_prompt_learning", False) or args.packing or args.padding_free:
        return
    if isinstance(collator, DataCollatorForLanguageModeling):
        collator.padding_free = True
        if args.include_num_input_tokens_seen == "non_padding" and collator.pad_to_multiple_of is None:
            # Every token of the row is real; "non_padding" would count ids != pad, dropping each EOS when pad == EOS.
            args.include_num_input_tokens_seen = "all"
