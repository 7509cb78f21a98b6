"""Reward modeling: a sequence-classification head with its own LoRA adapter on the same base, trained on preference
pairs with TRL's RewardTrainer (Bradley-Terry loss; minus the pair's `margin` when the data has one).

With `--from RUN` the run's adapters are merged into the in-memory base first, so the reward model starts from the
policy's weights and reads text through the policy's chat template. `lineage.load_scorer(run_dir)` gives the trained
model back as a `Scorer` for win-rates and online RL.
"""

from __future__ import annotations

import json
import math
from typing import Any

from alignkit import runner, runs
from alignkit.config import RewardStageConfig
from alignkit.data import preferences
from alignkit.evaluate import grouped_interval
from alignkit.lineage import REWARD_HEAD, Scorer

Pairs = list[dict[str, Any]]


def classes(cfg: RewardStageConfig) -> tuple[type[Any], type[Any]]:
    from trl import RewardConfig, RewardTrainer

    return RewardTrainer, RewardConfig


def uses_margin(plan: runner.Plan) -> bool:
    return plan.cfg.use_margin and any("margin" in pair for pair in plan.train_rows + plan.eval_rows)


def build(plan: runner.Plan) -> Any:
    """TRL's RewardTrainer; peft keeps the new `score` head trainable and saved."""
    plan.model.config.pad_token_id = plan.tokenizer.pad_token_id  # the head reads the last non-pad token
    with_margin = uses_margin(plan)
    return runner.trl_trainer(plan, lambda pairs: reward_dataset(pairs, with_margin))


def counts(plan: runner.Plan) -> dict[str, Any]:
    return runner.row_counts(plan) | {
        "margin_used": uses_margin(plan),
        # 0 unless validation files share prompts with the training files (the split is by prompt)
        "shared_prompts": len(prompt_keys(plan.train_rows) & prompt_keys(plan.eval_rows)),
        # how many prompts the held-out accuracy rests on: one prompt's pairs move it together
        "eval_prompts": len(prompt_keys(plan.eval_rows)),
    }


def held_out_metrics(trainer: Any, plan: runner.Plan) -> dict[str, Any]:
    """Pairwise accuracy and calibration of the trained model on the validation pairs (else the training pairs), and
    on validation pairs `eval_loss`: the Bradley-Terry loss TRL trains (less its optional reward-centring term).

    These stand in for TRL's last `evaluate()` (`final_evaluation=False`), which would score the same pairs again."""
    scored_split, pairs = ("validation", plan.eval_rows) if plan.eval_rows else ("train", plan.train_rows)
    scorer = Scorer(
        trainer.model, plan.tokenizer, plan.args.per_device_eval_batch_size, progress=f"scoring {scored_split} pairs"
    )
    margins = pair_margins(scorer, pairs)
    metrics = {"scored_split": scored_split, **margin_metrics(pairs, margins, plan.cfg.calibration_bins)}
    if scored_split == "validation":
        with_margin = uses_margin(plan)
        offsets = [pair.get("margin", 0.0) if with_margin else 0.0 for pair in pairs]
        metrics["eval_loss"] = sum(softplus(o - m) for m, o in zip(margins, offsets, strict=True)) / len(pairs)
    return metrics


RECIPE = runner.Recipe(
    "reward",
    classes=classes,
    load_rows=lambda cfg, paths, bad_rows=None: preferences.load_preferences(paths, bad_rows),
    build=build,
    head=REWARD_HEAD,
    manifest=lambda plan: {"head": REWARD_HEAD} | runner.pairs_origin(plan),
    counts=counts,
    final_metrics=held_out_metrics,
    final_evaluation=False,
)


def run(cfg: RewardStageConfig) -> runs.Run:
    """Train a reward model on preference pairs; metrics.json gets held-out pairwise accuracy and calibration."""
    return runner.run(RECIPE, cfg)


def prompt_key(pair: dict[str, Any]) -> str:
    """The key a pair's prompt is split and grouped by."""
    return json.dumps(pair["prompt"], sort_keys=True)


def prompt_keys(pairs: Pairs) -> set[str]:
    return {prompt_key(pair) for pair in pairs}


def reward_dataset(pairs: Pairs, with_margin: bool) -> Any:
    """TRL's conversational preference rows; `margin` (0 where a pair has none) only when the data has margins."""
    from datasets import Dataset

    keep = ("prompt", "chosen", "rejected")
    rows = [{k: pair[k] for k in keep} | ({"margin": pair.get("margin", 0.0)} if with_margin else {}) for pair in pairs]
    return Dataset.from_list(rows)


def pairwise_metrics(scorer: Scorer, pairs: Pairs, bins: int) -> dict[str, Any]:
    """Pairwise accuracy, mean reward margin and a calibration table of `scorer` on preference pairs."""
    return margin_metrics(pairs, pair_margins(scorer, pairs), bins)


def margin_metrics(pairs: Pairs, margins: list[float], bins: int) -> dict[str, Any]:
    """`pairwise_metrics` from each pair's r_chosen − r_rejected."""
    table = calibration(margins, bins)
    gaps = [b["count"] * abs(b["observed_accuracy"] - b["mean_predicted"]) for b in table if b["count"]]
    return {
        "pairwise_accuracy": sum(m > 0 for m in margins) / len(margins),
        # resampling prompts, not pairs: one prompt's pairs are right or wrong together
        "accuracy_interval_95": [round(x, 4) for x in grouped_interval(list(right_by_prompt(pairs, margins).values()))],
        "mean_margin": sum(margins) / len(margins),
        "calibration": table,
        "expected_calibration_error": sum(gaps) / len(margins),
        "scored_pairs": len(margins),
    }


def pair_margins(scorer: Scorer, pairs: Pairs) -> list[float]:
    """r_chosen − r_rejected of each pair: positive where `scorer` orders it as the annotators did."""
    prompts = [pair["prompt"] for pair in pairs]
    rewards = scorer.score(prompts * 2, [pair["chosen"] for pair in pairs] + [pair["rejected"] for pair in pairs])
    return [c - r for c, r in zip(rewards[: len(pairs)], rewards[len(pairs) :], strict=True)]


def right_by_prompt(pairs: Pairs, margins: list[float]) -> dict[str, list[bool]]:
    """Whether each pair was ordered right (margin > 0), grouped by its prompt."""
    grouped: dict[str, list[bool]] = {}
    for pair, margin in zip(pairs, margins, strict=True):
        grouped.setdefault(prompt_key(pair), []).append(margin > 0)
    return grouped


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


def softplus(x: float) -> float:
    """log(1 + e^x) without overflow: −log sigmoid(−x), the Bradley-Terry loss of a pair whose margin is −x."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
