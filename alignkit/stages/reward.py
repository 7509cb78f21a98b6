"""Reward modeling: a sequence-classification head with its own LoRA adapter on the same base, trained on preference
pairs with TRL's RewardTrainer (Bradley-Terry loss; minus the pair's `margin` when the data has one).

With `--from RUN` the run's adapters are merged into the in-memory base first, so the reward model starts from the
policy's weights and reads text through the policy's chat template. `lineage.load_scorer(run_dir)` gives the trained
model back as a `Scorer` for win-rates and online RL.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from alignkit import data, hardware, models, runs, training
from alignkit.config import RewardStageConfig
from alignkit.data import preferences
from alignkit.errors import AlignkitError
from alignkit.lineage import REWARD_HEAD, Scorer

Pairs = list[dict[str, Any]]


def run(cfg: RewardStageConfig) -> runs.Run:
    """Train a reward model on preference pairs; metrics.json gets held-out pairwise accuracy and calibration."""
    from trl import RewardConfig, RewardTrainer

    cfg = training.resolve_resume("reward", cfg)
    parent = runs.open_run(cfg.from_run) if cfg.from_run else None
    if parent and parent.stage == "reward":
        raise AlignkitError(f"{parent.path}: is a reward model, not a policy", "pass --from an sft (or dpo) run")
    if parent:
        cfg = dataclasses.replace(cfg, model=training.parent_model_config(cfg.model, parent))
    train_pairs, eval_pairs, files = data.load_split(cfg.data, preferences.load_preferences)
    path = runs.plan_path("reward", cfg)
    precision = hardware.pick_precision(cfg.model.precision)
    args = training.trainer_args(RewardConfig, cfg, str(path / "checkpoints"), bool(eval_pairs), precision)
    peft_config = models.peft_config(cfg.peft, task_type="SEQ_CLS")  # a bad `peft:` section fails before any work
    models.resolve_model(cfg.model.name)
    run = training.create_run(
        "reward", cfg, path, files, parent, args, peft_config, head=REWARD_HEAD, **precision.manifest
    )

    with run.removed_if_refused():
        # peft keeps the new `score` head trainable and saved
        model, tokenizer, peft_config = training.load_trainable(cfg, run, precision, head=REWARD_HEAD)
        model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
        with_margin = cfg.use_margin and any("margin" in pair for pair in train_pairs + eval_pairs)
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=reward_dataset(train_pairs, with_margin),
            eval_dataset=reward_dataset(eval_pairs, with_margin) if eval_pairs else None,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        training.add_callbacks(trainer, run, cfg, has_eval=bool(eval_pairs))
    scored_split, scored_pairs = ("validation", eval_pairs) if eval_pairs else ("train", train_pairs)

    def held_out_metrics(trainer: Any) -> dict[str, Any]:
        scorer = Scorer(trainer.model, tokenizer, batch_size=args.per_device_eval_batch_size)
        return {"scored_split": scored_split, **pairwise_metrics(scorer, scored_pairs, cfg.calibration_bins)}

    counts = {
        "train_rows": len(train_pairs),
        "eval_rows": len(eval_pairs),
        "margin_used": with_margin,
        "shared_prompts": len(prompt_keys(train_pairs) & prompt_keys(eval_pairs)),  # 0 unless validation files share
    }
    return training.train_and_save(trainer, run, counts, final_metrics=held_out_metrics)


def prompt_keys(pairs: Pairs) -> set[str]:
    return {json.dumps(pair["prompt"], sort_keys=True) for pair in pairs}


def reward_dataset(pairs: Pairs, with_margin: bool) -> Any:
    """TRL's conversational preference rows; `margin` (0 where a pair has none) only when the data has margins."""
    from datasets import Dataset

    keep = ("prompt", "chosen", "rejected")
    rows = [{k: pair[k] for k in keep} | ({"margin": pair.get("margin", 0.0)} if with_margin else {}) for pair in pairs]
    return Dataset.from_list(rows)


def pairwise_metrics(scorer: Scorer, pairs: Pairs, bins: int) -> dict[str, Any]:
    """Pairwise accuracy, mean reward margin and a calibration table of `scorer` on preference pairs."""
    prompts = [pair["prompt"] for pair in pairs]
    margins = [
        c - r
        for c, r in zip(
            scorer.score(prompts, [pair["chosen"] for pair in pairs]),
            scorer.score(prompts, [pair["rejected"] for pair in pairs]),
            strict=True,
        )
    ]
    table = calibration(margins, bins)
    gaps = [b["count"] * abs(b["observed_accuracy"] - b["mean_predicted"]) for b in table if b["count"]]
    return {
        "pairwise_accuracy": sum(m > 0 for m in margins) / len(margins),
        "mean_margin": sum(margins) / len(margins),
        "calibration": table,
        "expected_calibration_error": sum(gaps) / len(margins),
        "scored_pairs": len(margins),
    }


def calibration(margins: list[float], bins: int) -> list[dict[str, Any]]:
    """Reliability table of P(chosen ≻ rejected) = sigmoid(r_chosen − r_rejected).

    Each pair counts at the model's confidence in its own pick, max(p, 1 − p) in [0.5, 1]; per bin: count, mean
    predicted confidence, and observed accuracy (share of pairs where the pick is the annotators' chosen). A calibrated
    model has observed ≈ predicted in every bin. Empty bins are kept (count 0) so tables line up across runs.
    """
    width = 0.5 / bins
    binned: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for margin in margins:
        confidence = max(sigmoid(margin), 1 - sigmoid(margin))
        binned[min(int((confidence - 0.5) / width), bins - 1)].append((confidence, margin > 0))
    return [
        {
            "lower": round(0.5 + i * width, 6),
            "upper": round(0.5 + (i + 1) * width, 6),
            "count": len(picks),
            "mean_predicted": sum(c for c, _ in picks) / len(picks) if picks else None,
            "observed_accuracy": sum(right for _, right in picks) / len(picks) if picks else None,
        }
        for i, picks in enumerate(binned)
    ]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
