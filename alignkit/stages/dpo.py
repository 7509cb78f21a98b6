"""Preference optimisation of an SFT policy with TRL: DPO and its loss variants, KTO, SimPO and ORPO.

The reference is the SFT policy itself, and it costs no second model copy:

- default (`peft:` empty): the parent run's adapter is loaded trainable on the base (older ancestors merged in memory)
  and handed to the trainer without `ref_model`; TRL copies it into a frozen `ref` adapter beside the trained one
  (trl/trainer/dpo_trainer.py and kto_trainer.py, `model.add_adapter("ref", ...)`). The run's adapter then *replaces*
  the parent's (`adapter_continues` in the manifest), so `lineage.load_run_model` applies it instead of the SFT adapter.
- with a `peft:` section, or a fully fine-tuned parent: the parent model is merged in memory and a new adapter is
  trained on it; the reference is that model with the adapter disabled.
- `peft.method: full`: the reference log-probs are precomputed once before training (no second copy either).

DPO also precomputes them by default whenever training sees every row at least once (`precompute_pays`): one
reference pass per row instead of one per row per epoch, with the same loss and updates.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit import distributed, generate, runner, runs, training
from alignkit.config import DPOStageConfig
from alignkit.data import preferences
from alignkit.data.validate import BadRows
from alignkit.errors import AlignkitError, option
from alignkit.judges import Prompt
from alignkit.paths import file_sha256

logger = logging.getLogger("alignkit")


@dataclass(frozen=True)
class Method:
    """A TRL trainer and its config class, and what data it takes."""

    module: str
    trainer: str
    config: str
    unpaired: bool = False  # KTO: {prompt, completion, label} rows
    reference: bool = True  # SimPO and ORPO are reference-free
    defaults: dict[str, Any] = field(default_factory=dict)  # trainer keys the user did not set

    def classes(self) -> tuple[type[Any], type[Any]]:
        module = importlib.import_module(self.module)
        return getattr(module, self.trainer), getattr(module, self.config)


METHODS = {
    "dpo": Method("trl", "DPOTrainer", "DPOConfig"),
    "kto": Method("trl", "KTOTrainer", "KTOConfig", unpaired=True),
    # TRL 1.16 keeps SimPO (a CPO loss) and ORPO in trl.experimental.
    "simpo": Method(
        "trl.experimental.cpo",
        "CPOTrainer",
        "CPOConfig",
        reference=False,
        defaults={"loss_type": "simpo", "cpo_alpha": 0.0},
    ),
    "orpo": Method("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", reference=False),
}
SIMPO_LOSSES = {"simpo", "alphapo"}  # CPOTrainer's SimPO and its AlphaPO generalisation
OTHER_TRAINER_LOSSES = {"simpo": "simpo", "alphapo": "simpo", "orpo": "orpo", "kto": "kto"}


def pick_method(name: str) -> Method:
    if name not in METHODS:
        raise AlignkitError(f"config: unknown dpo method `{name}`", f"one of: {', '.join(METHODS)}")
    return METHODS[name]


def known_method(cfg: DPOStageConfig) -> DPOStageConfig:
    """`cfg`, once its method is known and its checked prompts load: a bad one fails before any data loads."""
    pick_method(cfg.method)
    if cfg.checked_prompts:
        load_checked_prompts(cfg.checked_prompts)
    return cfg


def load_checked_prompts(path: str) -> list[Prompt]:
    """`checked_prompts`: a prompt file of which at least one row can be checked (a reference, terms or decline)."""
    prompts = generate.load_prompt_items(path, "checked_prompts")
    if not any(p.spec.checkable for p in prompts):
        raise AlignkitError(
            f"{path}: checked_prompts has no row with `reference`, `must_contain` or `decline` (or skill greeting or "
            "rewrite), so nothing to check",
            "add those fields (datasets/README.md) or drop checked_prompts",
        )
    return prompts


def load_rows(cfg: DPOStageConfig, paths: list[str], bad_rows: BadRows | None = None) -> list[dict[str, Any]]:
    """Preference pairs, or KTO's unpaired rows (pairs are split in two)."""
    unpaired = pick_method(cfg.method).unpaired
    return (preferences.load_unpaired if unpaired else preferences.load_preferences)(paths, bad_rows)


def trainer_defaults(plan: runner.Plan) -> dict[str, Any]:
    """The method's own defaults; the reference log-probs precomputed where that pays (`precompute_pays`) and always
    for full fine-tuning (then the policy before training is the reference: no second copy of the model)."""
    cfg, method = plan.cfg, pick_method(plan.cfg.method)
    defaults = dict(method.defaults)
    pays = cfg.method == "dpo" and precompute_pays(cfg.trainer, plan.config_cls, len(plan.train_rows))
    if method.reference and (plan.full or pays):
        defaults["precompute_ref_log_probs"] = True
    if cfg.checked_prompts:  # the checked prompts choose the step to save, not the validation loss
        defaults["load_best_model_at_end"] = False
    return defaults


def build(plan: runner.Plan) -> Any:
    """The method's TRL trainer on the policy; without `peft_config` when it continues the parent's adapter."""
    if pick_method(plan.cfg.method).unpaired:  # KTO pairs each completion with its neighbour's prompt (KL term)
        random.Random(plan.cfg.seed).shuffle(plan.train_rows)
    trainer = runner.trl_trainer(plan, to_dataset)
    if plan.cfg.checked_prompts:
        prompts = load_checked_prompts(plan.cfg.checked_prompts)
        generate.check_prompt_tools(plan.tokenizer, prompts, plan.cfg.checked_prompts)
        trainer.add_callback(training.CheckedPromptsCallback(prompts, plan.tokenizer, plan.cfg.checked_max_new_tokens))
    return trainer


def manifest(plan: runner.Plan) -> dict[str, Any]:
    checked = plan.cfg.checked_prompts
    return (
        {"method": plan.cfg.method}
        | ({"checked_prompts": {checked: file_sha256(Path(checked))}} if checked else {})
        | runner.pairs_origin(plan)
    )


def final_metrics(trainer: Any, plan: runner.Plan) -> dict[str, Any]:
    """The method's last training figures, and what the checked prompts scored at each step and which was kept."""
    checked = [c for c in trainer.callback_handler.callbacks if isinstance(c, training.CheckedPromptsCallback)]
    return last_training_figures(trainer) | (checked[0].summary() if checked else {})


def check(plan: runner.Plan, args: Any) -> None:
    """Before the run directory exists: settings TRL would refuse once training starts, and KTO's label balance."""
    check_args(plan.cfg, args)
    check_kto_balance(plan, args)


RECIPE = runner.Recipe(
    "dpo",
    classes=lambda cfg: pick_method(cfg.method).classes(),
    load_rows=load_rows,
    build=build,
    needs_policy=True,
    prepare=known_method,
    trainer_defaults=trainer_defaults,
    check=check,
    manifest=manifest,
    counts=lambda plan: runner.row_counts(plan) | {"method": plan.cfg.method},
    final_metrics=final_metrics,
)


def run(cfg: DPOStageConfig) -> runs.Run:
    """Train the parent run's policy on preference pairs (or KTO on unpaired rows) and return the finished run."""
    return runner.run(RECIPE, cfg)


def precompute_pays(trainer: dict[str, Any], config_cls: type[Any], train_rows: int) -> bool:
    """Whether to score the training rows with the reference once, before training, instead of in every step.

    Precomputing costs one reference forward pass per training row; scoring in each step costs one per row per
    epoch (and on a CPU or a small GPU the step's reference pass is a third of its time). So it pays whenever
    training sees every row at least once: an epoch count of 1 or more, or `max_steps` x the global batch covering
    the rows. Below one epoch it would score rows that are never trained on."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls) if f.init}
    options = defaults | trainer
    if not isinstance(options.get("max_steps"), int) or options["max_steps"] <= 0:
        return float(options.get("num_train_epochs") or 0) >= 1
    batch = options["per_device_train_batch_size"] * options["gradient_accumulation_steps"] * distributed.world_size()
    return options["max_steps"] * batch >= train_rows


def check_args(cfg: DPOStageConfig, args: Any) -> None:
    """Problems TRL would only report once training starts, reported before the run directory exists."""
    method = cfg.method
    if cfg.checked_prompts and args.load_best_model_at_end:
        raise AlignkitError(
            "config: checked_prompts chooses the step to save; trainer.load_best_model_at_end would pick by eval_loss",
            "drop trainer.load_best_model_at_end or checked_prompts",
        )
    loss_type = getattr(args, "loss_type", [])  # ORPO has a single loss
    loss_types = loss_type if isinstance(loss_type, list) else [loss_type]
    valid = known_loss_types(type(args))
    for loss_type in loss_types:
        if loss_type in OTHER_TRAINER_LOSSES and loss_type not in valid:
            raise AlignkitError(
                f"config: trainer.loss_type={loss_type!r} is not a {type(args).__name__} loss",
                f"set `method: {OTHER_TRAINER_LOSSES[loss_type]}` instead",
            )
        if valid and loss_type not in valid:
            raise AlignkitError(
                f"config: unknown trainer.loss_type {loss_type!r} for method {method}", f"one of: {', '.join(valid)}"
            )
    if method == "simpo" and not set(loss_types) <= SIMPO_LOSSES:  # CPO's other losses are not SimPO
        raise AlignkitError(
            f"config: method simpo with trainer.loss_type={loss_types[0]!r} would train CPO's {loss_types[0]} loss, "
            "not SimPO",
            f"drop trainer.loss_type (simpo), or use method: dpo with trainer.loss_type={loss_types[0]}",
        )
    if method == "kto" and "apo_zero_unpaired" not in loss_types and args.per_device_train_batch_size < 2:
        raise AlignkitError(
            "config: KTO needs trainer.per_device_train_batch_size >= 2 (its KL term pairs rows within a batch)",
            f"e.g. {option('trainer.per_device_train_batch_size', 4)}",
        )


def check_kto_balance(plan: runner.Plan, args: Any) -> None:
    """Say on the console what TRL's KTO trainer only logs (to the run's log.txt): rows all of one label, or
    desirable and undesirable rows out of the balance its paper recommends (desirable_weight x desirable rows /
    undesirable_weight x undesirable rows in [1, 4/3], Eq. 8 of arXiv:2402.01306, as `KTOTrainer` checks it)."""
    if plan.cfg.method != "kto" or not plan.train_rows:
        return
    desirable = sum(bool(row["label"]) for row in plan.train_rows)
    undesirable = len(plan.train_rows) - desirable
    if not desirable or not undesirable:
        kind = "desirable (label true)" if desirable else "undesirable (label false)"
        logger.warning(
            f"all {len(plan.train_rows)} KTO training rows are {kind}: KTO learns from answers rated both ways; "
            "without the other kind it only moves the policy against its KL baseline"
        )
        return
    ratio = args.desirable_weight * desirable / (args.undesirable_weight * undesirable)
    if not 1 <= ratio <= 4 / 3:
        balanced = undesirable * args.undesirable_weight / desirable * 7 / 6  # the middle of the range
        logger.warning(
            f"KTO rows are {desirable} desirable to {undesirable} undesirable: with these weights the desirable side "
            f"weighs {ratio:.2f}x the other, outside the KTO paper's [1, 1.33]; e.g. "
            f"{option('trainer.desirable_weight', round(balanced, 2))}"
        )


def known_loss_types(config_cls: type[Any]) -> list[str]:
    """The loss types a TRL config documents (its field's `choices`, else the quoted names in its help)."""
    loss_field = next((f for f in dataclasses.fields(config_cls) if f.name == "loss_type"), None)
    if loss_field is None:
        return []
    if "choices" in loss_field.metadata:
        return list(loss_field.metadata["choices"])
    return re.findall(r"`'(\w+)'`", loss_field.metadata.get("help", ""))


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """TRL's conversational preference (or unpaired) rows; annotation columns stay in the data files."""
    from datasets import Dataset

    keep = ("prompt", "chosen", "rejected", "completion", "label")
    return Dataset.from_list([{k: row[k] for k in keep if k in row} for row in rows])


# Prefixes of the figures TRL's preference trainers log beside the loss (dpo_trainer.py, kto_trainer.py, and
# trl.experimental's cpo_trainer.py and orpo_trainer.py)
METHOD_FIGURES = ("rewards/", "logps/", "kl", "nll_loss", "log_odds_")


def last_training_figures(trainer: Any) -> dict[str, Any]:
    """The method's own figures at the last logged training step (rewards/accuracies, rewards/margins, KTO's kl, the
    NLL term of SimPO/CPO and ORPO, ORPO's log odds ratio, ...)."""
    logged = [row for row in trainer.state.log_history if "loss" in row]
    last = logged[-1] if logged else {}
    figures = {f"train_{key}": value for key, value in last.items() if key.startswith(METHOD_FIGURES)}
    if not trainer.state.num_input_tokens_seen:  # SimPO/ORPO batches carry no `input_ids` for transformers to count
        figures["train_tokens"] = None
    return figures
