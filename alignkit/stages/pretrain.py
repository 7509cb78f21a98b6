"""Continued (domain-adaptive) pretraining: raw text, next-token loss on every token, same adapter machinery as SFT.

Its run can be the `--from` of `alignkit sft`: the adapter is merged into the in-memory base before SFT adds its own.
"""

from __future__ import annotations

import math
from typing import Any

from alignkit import data, runner, runs, training
from alignkit.config import PretrainStageConfig
from alignkit.errors import AlignkitError, Placeholder, option


def text_column(trainer: dict[str, Any]) -> str:
    """The column that holds the text: TRL's `dataset_text_field` (`text` unless set)."""
    return str(trainer.get("dataset_text_field") or "text")


def trainer_on_text(plan: runner.Plan) -> Any:
    """The SFTTrainer on TRL's language-modeling rows: the text under the column TRL reads; streamed rows as
    `datasets`' IterableDataset, which TRL tokenizes and packs as training reads it."""
    column = text_column(plan.cfg.trainer)

    def examples(rows: Any) -> Any:
        if isinstance(rows, data.TextStream):
            return rows.dataset(column)
        return [{column: row["text"]} for row in rows]

    trainer = training.build_sft(plan, to_examples=examples)
    if isinstance(plan.train_rows, data.TextStream):
        # Passes one after another in one "epoch" that `max_steps` ends: a resumed run skips the batches it trained
        # (transformers reads them again, unused) across passes too; it would count its skip in the first pass only.
        # Repeated once TRL packed it, so each pass packs as the in-memory rows do.
        trainer.train_dataset = trainer.train_dataset.repeat(None)
    return trainer


def check_streaming(plan: runner.Plan, args: Any) -> None:
    """A streamed corpus has no length to count epochs in: its run is as long as `trainer.max_steps`."""
    if isinstance(plan.train_rows, data.TextStream) and args.max_steps <= 0:
        raise AlignkitError(
            "config: data.streaming needs trainer.max_steps (a stream has no length to count epochs in)",
            f"pass {option('trainer.max_steps', Placeholder('N'))} (the corpus has {len(plan.train_rows):,} training "
            "rows; a step trains "
            "per_device_train_batch_size x gradient_accumulation_steps packed rows of trainer.max_length tokens)",
        )


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
    load_rows=lambda cfg, paths, bad_rows=None: data.load_text(paths, "data.paths", text_column(cfg.trainer), bad_rows),
    load_stream=lambda cfg, bad_rows: data.stream_text_split(cfg.data, text_column(cfg.trainer), bad_rows),
    check=check_streaming,
    build=trainer_on_text,
    final_metrics=perplexities,
)


def run(cfg: PretrainStageConfig) -> runs.Run:
    """Train a pretraining adapter on `{"text"}` rows (TRL's language-modeling format) and return the finished run."""
    return runner.run(RECIPE, cfg)
