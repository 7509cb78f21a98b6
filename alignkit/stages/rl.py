"""Online RL of a policy run with TRL: GRPO (`trl.GRPOTrainer`) or RLOO (`trl.RLOOTrainer`).

Each step samples `num_generations` completions per prompt from the policy, scores them with the reward functions
(a reward model run via `lineage.load_scorer`, and/or rules of `judges.RULES`), and moves the policy towards
the better ones, with a KL penalty (`trainer.beta`) to the reference. The reference is the parent policy, with no
second model copy, as in `alignkit dpo`:

- default (`peft:` empty): the parent run's adapter is loaded trainable and handed to the trainer without a
  `peft_config`; TRL copies it into a frozen `ref` adapter (trl/trainer/grpo_trainer.py and rloo_trainer.py,
  `model.add_adapter("ref", ...)`) and computes reference log-probs under it. The run's adapter replaces the
  parent's (`adapter_continues` in the manifest), so `lineage.load_run_model` applies it instead of the parent's.
- with a `peft:` section, or a fully fine-tuned parent: the parent is merged in memory and a new adapter trained on
  it; the reference is that model with the adapter disabled.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit import backends, distributed, runner, runs
from alignkit.config import RLStageConfig
from alignkit.data.validate import BadRows
from alignkit.errors import AlignkitError, first_line, option
from alignkit.generate import load_prompts_with_columns
from alignkit.judges import RULES, Prompt, PromptSpec, rule
from alignkit.lineage import Scorer, load_scorer
from alignkit.paths import bundled_data

REWARD_MODEL = "reward_model"
RewardFunction = Callable[..., list[float]]


@dataclass(frozen=True)
class Method:
    """A TRL online-RL trainer and its config class."""

    trainer: str
    config: str

    def classes(self) -> tuple[type[Any], type[Any]]:
        trl = importlib.import_module("trl")
        return getattr(trl, self.trainer), getattr(trl, self.config)


METHODS = {"grpo": Method("GRPOTrainer", "GRPOConfig"), "rloo": Method("RLOOTrainer", "RLOOConfig")}


def prepare(cfg: RLStageConfig) -> RLStageConfig:
    """`cfg` checked (method, rewards, the reward run) before any data loads; the bundled prompts by default."""
    pick_method(cfg.method)
    reward_parent(cfg.reward_run, reward_spec(cfg)[0])
    if cfg.data.paths:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, paths=[str(bundled_data("prompts.jsonl"))]))


def load_rows(cfg: RLStageConfig, paths: list[str], bad_rows: BadRows | None = None) -> list[dict[str, Any]]:
    """Prompt-only rows; the spec rides along as a column, and so does each other column of the prompt files
    (`solution`, `answer`, ...; None where a row lacks it): TRL hands extra columns to reward functions, rule rewards
    read the spec, an imported reward function what it needs."""
    items = []
    for path in paths:
        items += load_prompts_with_columns(path, "data.paths", bad_rows)
        if any(prompt.tools for prompt, _ in items):  # TRL's GRPO/RLOO render one tool list, the trainer's
            raise AlignkitError(
                f"{path}: prompt rows with `tools` are not supported by `alignkit rl` (TRL's GRPO/RLOO show every "
                "prompt the same trainer-wide tools, not a row's)",
                "drop the `tools` column, or train tool use with `alignkit sft`",
            )
    others = dict.fromkeys(key for _, columns in items for key in columns)
    return [
        {"prompt": p.messages, "prompt_spec": p.spec.to_json(), **{key: columns.get(key) for key in others}}
        for p, columns in items
    ]


def check(plan: runner.Plan, args: Any) -> None:
    if plan.full and args.beta != 0.0:
        raise AlignkitError(
            "config: rl with peft.method=full and trainer.beta > 0 would load a second full model as the reference "
            "(TRL loads it from the base's path, not the parent policy)",
            "train an adapter (drop peft.method=full), or set trainer.beta=0",
        )


def manifest(plan: runner.Plan) -> dict[str, Any]:
    names, weights = reward_spec(plan.cfg)
    reward_run = reward_parent(plan.cfg.reward_run, names)
    return {
        "method": plan.cfg.method,
        "rewards": names,
        "reward_weights": weights,
        "reward_run": runs.relative_to_run(reward_run.path, plan.path) if reward_run else None,  # as the lineage
        "reward_run_id": reward_run.manifest.get("id") if reward_run else None,  # `runs.check_reward_run`
    }


def build(plan: runner.Plan) -> Any:
    """The method's TRL trainer with the reward functions; without `peft_config` when it continues the parent's
    adapter."""
    names, _ = reward_spec(plan.cfg)
    reward_run = reward_parent(plan.cfg.reward_run, names)
    functions = reward_functions(names, reward_run, batch_size=plan.args.per_device_train_batch_size)
    return runner.trl_trainer(plan, to_dataset, reward_funcs=functions)


RECIPE = runner.Recipe(
    "rl",
    classes=lambda cfg: pick_method(cfg.method).classes(),
    load_rows=load_rows,
    build=build,
    needs_policy=True,
    prepare=prepare,
    trainer_defaults=lambda plan: trainer_defaults(
        plan.cfg, reward_spec(plan.cfg)[1], bool(plan.eval_rows), len(plan.train_rows)
    ),
    check=check,
    manifest=manifest,
    counts=lambda plan: (
        {"train_prompts": len(plan.train_rows), "eval_prompts": len(plan.eval_rows)} | {"method": plan.cfg.method}
    ),
    final_metrics=lambda trainer, plan: reward_and_kl_figures(trainer),
)


def run(cfg: RLStageConfig) -> runs.Run:
    """Train the parent run's policy online against the configured rewards and return the finished run."""
    return runner.run(RECIPE, cfg)


def pick_method(name: str) -> Method:
    if name not in METHODS:
        raise AlignkitError(f"config: unknown rl method `{name}`", f"one of: {', '.join(METHODS)}")
    return METHODS[name]


def reward_spec(cfg: RLStageConfig) -> tuple[list[str], list[float] | None]:
    """(reward function names, their weights or None): `rewards` checked against the rules, the reward run and what
    the import paths name."""
    known = [REWARD_MODEL, *RULES]
    rewards = cfg.rewards or ([REWARD_MODEL] if cfg.reward_run else [])
    if not rewards:
        raise AlignkitError(
            f"rl needs a reward: no {option('reward_run')} run and no `rewards` given",
            f"pass {option('reward_run', 'REWARD_RUN')} or {option('rewards', known)}",
        )
    names = list(rewards)
    for name in names:
        if is_import_path(name):
            imported_reward(name)  # a missing module or function fails here, before any model loads
        elif name not in known:
            raise AlignkitError(
                f"config: unknown reward `{name}` in `rewards`",
                f"one of: {', '.join(known)}, or your function's import path (my_rewards.exact_match)",
            )
    if len(set(names)) != len(names):
        raise AlignkitError(f"config: `rewards` names a reward twice: {names}", "list each reward once")
    if REWARD_MODEL in names and not cfg.reward_run:
        raise AlignkitError(
            "config: `rewards` has reward_model but no reward run is given", f"pass {option('reward_run', 'RUN_DIR')}"
        )
    if cfg.reward_run and REWARD_MODEL not in names:
        raise AlignkitError(
            f"{option('reward_run', cfg.reward_run)} is given but `rewards` ({', '.join(names)}) does not use "
            "reward_model",
            f"add reward_model to `rewards`, or drop {option('reward_run')}",
        )
    if not isinstance(rewards, dict):
        return names, None
    for name, weight in rewards.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise AlignkitError(f"config: weight of reward `{name}` must be a number, got {weight!r}")
    weights = [float(w) for w in rewards.values()]
    # a run's config.yaml records both: `rewards` and the trainer.reward_weights made from them
    if "reward_weights" in cfg.trainer and cfg.trainer["reward_weights"] != weights:
        raise AlignkitError(
            f"config: weights given both in `rewards` ({weights}) and in trainer.reward_weights "
            f"({cfg.trainer['reward_weights']}), and they differ",
            "give them in one place",
        )
    return names, weights


def reward_parent(reward_run: str | None, names: list[str]) -> runs.Run | None:
    """The reward model run (checked to be one) when `reward_model` is used."""
    if REWARD_MODEL not in names or reward_run is None:
        return None
    run = runs.open_run(reward_run)
    if run.stage != "reward":
        raise AlignkitError(
            f"{run.path}: is a {run.stage} run, not a reward model", f"pass {option('reward_run')} a reward run"
        )
    return run


def trainer_defaults(
    cfg: RLStageConfig, weights: list[float] | None, has_eval: bool, train_prompts: int
) -> dict[str, Any]:
    """Weights from `rewards` as TRL's `reward_weights`; with held-out prompts, the best checkpoint by their reward;
    completions sampled for `GENERATE_FOR_STEPS` steps at once.

    TRL counts prompt + completion tokens itself; transformers' counter finds no `input_ids` in RL batches.
    `backend: vllm` turns on TRL's vLLM generation (alignkit/backends.py).
    """
    defaults: dict[str, Any] = {"include_num_input_tokens_seen": "no", **backends.rl_options(cfg.backend)}
    if weights:
        defaults["reward_weights"] = weights
    if has_eval:
        defaults |= {"metric_for_best_model": "reward", "greater_is_better": True}
    if "generation_batch_size" not in cfg.trainer:  # TRL takes one of the two
        defaults["steps_per_generation"] = steps_per_generation(cfg.trainer, train_prompts)
    return defaults


# Sampling 4 completions is close to single-stream decoding: on a CPU each token costs nearly what 16 rows' do. TRL's
# `steps_per_generation` samples the completions of several steps in one batch and trains on them step by step (the
# later steps' importance ratios are taken against the sampling policy, as in PPO). At 4, the GRPO bench's median step
# fell from 5.51 s (benchmarks/results/2026-12-04.json) to 3.05 s: 1.83x the plain TRL script that samples every step
# (benchmarks/results/2026-12-04b.json).
GENERATE_FOR_STEPS = 4


def steps_per_generation(trainer: dict[str, Any], train_prompts: int) -> int:
    """`GENERATE_FOR_STEPS`, or fewer: a run of fewer steps samples no completions it will not train on, a prompts file
    too short for that many steps' prompts still trains (TRL's sampler drops an incomplete generation batch), and the
    generation batch (completions of every process's batches over those steps) holds whole groups of
    `num_generations`, as TRL requires. TRL counts these steps in batches, `gradient_accumulation_steps` to an
    optimizer step. 1 (TRL's check then names the batch) where no count fits."""
    batch = trainer.get("per_device_train_batch_size", 1) * distributed.world_size()
    generations = trainer.get("num_generations", 1)
    max_steps = trainer.get("max_steps", -1)
    batches = max_steps * trainer.get("gradient_accumulation_steps", 1) if max_steps > 0 else GENERATE_FOR_STEPS
    fitting = [
        steps
        for steps in range(min(GENERATE_FOR_STEPS, batches), 0, -1)
        if batch * steps % generations == 0 and batch * steps // generations <= train_prompts
    ]
    return fitting[0] if fitting else 1


def reward_functions(names: list[str], reward_run: runs.Run | None, batch_size: int) -> list[RewardFunction]:
    """TRL reward functions (conversational prompts and completions in, one float per completion out), in order."""
    functions = []
    for name in names:
        if name == REWARD_MODEL:
            assert reward_run is not None  # reward_spec demands one
            functions.append(model_reward(load_scorer(reward_run.path, batch_size=batch_size)))
        elif is_import_path(name):
            functions.append(imported_reward(name))
        else:
            functions.append(rule_reward(name))
    return functions


def is_import_path(name: str) -> bool:
    return "." in name or ":" in name


def imported_reward(path: str) -> RewardFunction:
    """A reward function of your own by its import path, as TRL's scripts take them (`my_rewards.exact_match`, or
    `my_rewards:exact_match`; the working directory is importable). TRL calls it with `prompts`, `completions`,
    `completion_ids` and each other column of the prompt rows as keyword arguments (lists, one item per
    completion); it returns one float per completion (None: no reward from this function)."""
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error while importing it
        raise AlignkitError(
            f"config: reward `{path}`: cannot import {module_name} ({type(exc).__name__}: {first_line(exc)})",
            "a module in the working directory or on PYTHONPATH",
        ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise AlignkitError(f"config: reward `{path}`: {module_name} has no function {attribute}", "check the name")

    def reward(*args: Any, **kwargs: Any) -> list[float]:
        return function(*args, **kwargs)

    reward.__name__ = path  # TRL logs each reward under its function's name: here the name in `rewards`
    return reward


def model_reward(scorer: Scorer) -> RewardFunction:
    """The reward model's score of each completion as the reply to its prompt (chat template as in its training)."""

    def reward_model(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        return scorer.score(prompts, completions)

    return reward_model


def rule_reward(name: str) -> RewardFunction:
    """A `judges` rule applied to each completion with its prompt's spec (`Rule.reward`); named after the rule in
    TRL's logs."""
    oracle = rule(name)

    def reward(
        prompts: list[Any], completions: list[Any], prompt_spec: list[str] | None = None, **_: Any
    ) -> list[float]:
        specs = prompt_spec or [None] * len(completions)
        return [
            oracle.reward(
                reply_text(completion), Prompt(prompt if isinstance(prompt, list) else [], PromptSpec.from_json(spec))
            )
            for prompt, completion, spec in zip(prompts, completions, specs, strict=True)
        ]

    reward.__name__ = name
    return reward


def reply_text(completion: str | list[dict[str, str]]) -> str:
    return completion if isinstance(completion, str) else "\n".join(turn["content"] for turn in completion)


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """TRL's conversational prompt-only rows: a `prompt` column of message lists."""
    from datasets import Dataset

    try:
        return Dataset.from_list(rows)
    except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError: a column of mixed types
        raise AlignkitError(
            f"--data: the prompt rows' columns do not fit one table ({first_line(exc)})",
            "give each extra column (answer, solution, ...) one type in every row",
        ) from None


def reward_and_kl_figures(trainer: Any) -> dict[str, Any]:
    """Reward (weighted sum) and KL at the first and last logged steps, and each reward function's mean at both ends.

    The rewards are logged on the steps that sample completions (one in `steps_per_generation`); GRPO's KL on every
    step (its loss computes it), so it is read from every logged step, not only the sampling ones."""
    logged = [row for row in trainer.state.log_history if "reward" in row]
    if not logged:
        return {}
    first, last = logged[0], logged[-1]
    figures: dict[str, Any] = {"reward_start": first["reward"], "reward_end": last["reward"]}
    kls = [row["kl"] for row in trainer.state.log_history if "kl" in row]
    if kls:
        figures |= {"kl_start": kls[0], "kl": kls[-1], "kl_mean": sum(kls) / len(kls)}
    figures["reward_functions"] = {
        key.removeprefix("rewards/").removesuffix("/mean"): {"start": first.get(key), "end": last[key]}
        for key in last
        if key.startswith("rewards/") and key.endswith("/mean")
    }
    figures["completion_length_end"] = last.get("completions/mean_length")
    evals = [row["eval_reward"] for row in trainer.state.log_history if "eval_reward" in row]
    if evals:
        figures["eval_reward_start"] = evals[0]  # before training (`eval_reward`: after it)
    return figures
