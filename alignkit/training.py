"""Glue every TRL-trainer stage shares (`runner.run` calls it): trainer arguments from config, the model to train,
metrics, saving; and the SFTTrainer of the `sft` and `pretrain` recipes (`build_sft`)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import ProgressCallback, TrainerCallback
from transformers.trainer_utils import has_length

from alignkit import distributed, hardware, lineage, logs, models, runs
from alignkit.config import EMBEDDED_MODEL, RUN_KEYS, ModelConfig, TrainStageConfig, check_section, load_config
from alignkit.errors import FLAGS, AlignkitError, Placeholder, from_python, option, options
from alignkit.paths import known_sha256, saved_split

logger = logging.getLogger("alignkit")

Rows = list[dict[str, Any]]


@dataclasses.dataclass
class ResumeChanges:
    """What a resume changes in its run's config.yaml and manifest: a new length, and the new places of its data and
    base. Written by `record` once every check has passed, so that a refused resume leaves the run as it was."""

    run: runs.Run | None = None
    trainer: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: dict[str, str] = dataclasses.field(default_factory=dict)  # old path -> new path
    base: str | None = None
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # `data:` keys its config.yaml lacked

    def record(self) -> None:
        if self.run is None or not distributed.is_main():
            return
        if self.data:
            self.run.update_data_paths(self.data)
        if self.data_options:
            self.run.update_config("data", self.data_options)
        if self.base:
            self.run.update_base_path(self.base)
        if self.trainer:  # so that `--config RUN/config.yaml` trains what this run trains
            self.run.update_trainer_options(self.trainer)


def resolve_resume(stage: str, cfg: Any) -> tuple[Any, ResumeChanges]:
    """With `--resume`, continue with the run's own saved config (the data and settings it started with), and what
    the resume changes in it (`ResumeChanges`, to record once the resume is known to go ahead)."""
    if not cfg.resume:
        return cfg, ResumeChanges()
    run = runs.find_resumable(stage, cfg)
    resumed = load_config(type(cfg), run.path / "config.yaml", values={"resume": True, "out": str(run.path)})
    changes = ResumeChanges(run)
    resumed = relocated_base(cfg, relocated_data(cfg, resumed, run, changes), run, changes)
    resumed = validation_as_started(resumed, run, changes)
    check_resume_settings(cfg, resumed)
    defaults = type(cfg)().trainer
    for key in RESUME_LENGTH_KEYS:  # a resumed run may be given a new length; the stage's default is none given
        given = cfg.trainer.get(key, defaults.get(key))
        if given != defaults.get(key) and given != resumed.trainer.get(key):
            resumed.trainer[key] = changes.trainer[key] = given
    check_not_past(run, changes.trainer.get("max_steps"))
    return resumed, changes


def validation_as_started(resumed: Any, run: runs.Run, changes: ResumeChanges) -> Any:
    """`resumed` with the validation rows its run started with, where its config.yaml predates a `data:` key whose
    default now picks others: a save dir's held-out split (`data.saved_validation`: taken only where the manifest's
    `validation` records one) and the cap on a fractional split (`data.max_validation_rows`: none then). Recorded in
    config.yaml (`changes`), so `--config RUN/config.yaml` splits as the run did."""
    recorded = (yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8")) or {}).get("data") or {}
    started: dict[str, Any] = {}
    if "saved_validation" not in recorded:
        started["saved_validation"] = str(run.manifest.get("validation", "")).startswith("saved split")
    if "max_validation_rows" not in recorded:
        started["max_validation_rows"] = None
    changes.data_options = started
    return dataclasses.replace(resumed, data=dataclasses.replace(resumed.data, **started)) if started else resumed


def check_rows_as_started(run: runs.Run | None, rows: dict[str, dict[str, Any]], validation: str) -> None:
    """Refuse a resume of `run` (None: a new run) whose rows (`rows`: `data.rows_digest` of the train and validation
    rows now) differ from those its manifest recorded when it started: a data file edited in a way its sha256 check
    did not see (`relocated_data`), another `data:` setting in its config.yaml, or a change to how alignkit reads or
    splits rows would resume it on other train or validation rows without a word. Runs whose manifest predates the
    record resume as they are (nothing to compare)."""
    recorded = run.manifest.get("rows") if run is not None else None
    if run is None or not isinstance(recorded, dict):
        return
    changed = []
    for split, now in rows.items():
        then = recorded.get(split) or {}
        digests = then.get("sha256"), now["sha256"]
        other = None not in digests and digests[0] != digests[1]
        if then.get("count") != now["count"] or other:
            content = ", other rows" if then.get("count") == now["count"] else ""
            changed.append(f"{split} rows ({then.get('count')} then, {now['count']} now{content})")
    if not changed:
        return
    manifest, why = run.manifest, []
    if manifest.get("validation", validation) != validation:
        why.append(f"validation {manifest.get('validation')!r} then, {validation!r} now")
    version_then = (manifest.get("versions") or {}).get("alignkit")
    version_now = runs.package_versions().get("alignkit")
    if version_then != version_now:
        why.append(f"alignkit {version_then} then, {version_now} now")
    raise AlignkitError(
        f"{run.path}: {' and '.join(changed)} differ from those it started with"
        f"{' (' + '; '.join(why) + ')' if why else ''}: its data, the `data:` settings of its config.yaml or how "
        "alignkit reads them changed since, and the resumed steps would train or validate on other rows",
        f"put back the data and `data:` settings it started with (or resume with the alignkit it started with), or "
        f"start a new run with another {option('out')}",
    )


def check_not_past(run: runs.Run, max_steps: int | None) -> None:
    """A resume given a `max_steps` its run has already trained past is refused: the trainer would stop at once and
    record the run `complete` at its checkpoint's step, more steps than it was told."""
    last = run.last_checkpoint()
    done = runs.checkpoint_step(Path(last)) if last else 0
    if isinstance(max_steps, int) and 0 < max_steps < done:
        raise AlignkitError(
            f"{run.path}: its last checkpoint is at step {done}, past {option('trainer.max_steps', max_steps)}",
            f"resume with {option('trainer.max_steps', done)} or more (or without it, to its own length), or start "
            f"over: {option('overwrite', True)} without {option('resume', True)}",
        )


def relocated_data(given: Any, resumed: Any, run: runs.Run, changes: ResumeChanges) -> Any:
    """`resumed` with its data files where `--resume --data` (or `data.validation_paths`) now gives them, when each
    given file is the one the run recorded (the sha256 in its manifest): a run moved with its data to another
    path or machine resumes, and its config.yaml and manifest record the new places (`changes`). A data file of the
    run that is gone and not given anew is one line saying how."""
    recorded = run.manifest.get("data", {})
    for key in ("paths", "validation_paths"):
        old, new = getattr(resumed.data, key), getattr(given.data, key)
        pairs = list(zip(old, new, strict=True)) if new and new != old and len(new) == len(old) else []
        if pairs and all(same_data(o, n, recorded) for o, n in pairs):
            changes.data |= {o: n for o, n in pairs if o != n}
            resumed = dataclasses.replace(resumed, data=dataclasses.replace(resumed.data, **{key: new}))
        given_anew = options(("resume", True), (f"data.{key}", ["NEW_PATH"]))
        for source in getattr(resumed.data, key):
            if not saved_split(source)[0].exists():
                other = f", and {', '.join(new)} holds other data (sha256 differs)" if pairs else ""
                raise AlignkitError(
                    f"{source}: data file of {run.path} not found (moved?){other}",
                    f"resume with its new place: {given_anew} (the same file: its sha256 is checked against "
                    f"{run.path}/manifest.json)",
                )
            digest = runs.data_sha256(recorded.get(source))
            if digest and known_sha256(saved_split(source)[0]) != digest:
                raise AlignkitError(
                    f"{source}: data file changed since {run.path} started (sha256 differs from its manifest): the "
                    "resumed steps would skip and train other rows",
                    f"put back the data it started with, or start a new run with another {option('out')}",
                )
    return resumed


def relocated_base(given: Any, resumed: Any, run: runs.Run, changes: ResumeChanges) -> Any:
    """`resumed` with its base model where it is now (`Run.model_config`): `--resume --model NEW_PATH` or
    `$ALIGNKIT_MODEL_PATH` with the weights the run records (sha256), whose new place its config.yaml and manifest
    then record (`changes`); another model is refused (`models.take_moved_base`)."""
    if given.model.name != EMBEDDED_MODEL:
        models.take_moved_base(
            run.recorded_model_config, run.manifest.get("base"), given.model.name, run.path, run.saved_tokenizers
        )
    now = run.model_config.name
    if now == resumed.model.name:
        return resumed
    changes.base = now
    return dataclasses.replace(resumed, model=dataclasses.replace(resumed.model, name=now))


def same_data(recorded_source: str, given_source: str, recorded: dict[str, Any]) -> bool:
    """Whether `given_source` holds the data the run recorded for `recorded_source` (same sha256)."""
    digest, given = runs.data_sha256(recorded.get(recorded_source)), saved_split(given_source)
    return (
        bool(digest)
        and given[0].exists()
        and given[1] == saved_split(recorded_source)[1]
        and known_sha256(given[0]) == digest
    )


RESUME_LENGTH_KEYS = ("max_steps", "num_train_epochs")


def check_resume_settings(given: Any, resumed: Any) -> None:
    """Refuse settings given with `--resume` (those that differ from the stage's defaults) that differ from the run's
    own config.yaml, which the resumed run continues with: they would be dropped without a word (a `--from` another
    run, other data, another learning rate). Only the run's length (`RESUME_LENGTH_KEYS`) may change."""
    defaults, saved, wanted = (flat_settings(c) for c in (type(given)(), resumed, given))
    skipped = {"resume", "out", "overwrite", "runs_dir", *(f"trainer.{key}" for key in RESUME_LENGTH_KEYS)}
    for key, value in wanted.items():
        if key in skipped or value == defaults.get(key, object()) or value == saved.get(key):
            continue
        named = f"{key} ({FLAGS[key]})" if key in FLAGS and not from_python() else key
        raise AlignkitError(
            f"{option('resume', True)} continues {resumed.out} with its own config.yaml: {named}={value!r} differs "
            f"from the run's {saved.get(key)!r}",
            f"drop {key} to resume (only the length, trainer.max_steps or num_train_epochs, may change), or start a "
            f"new run with another {option('out')}",
        )


def flat_settings(cfg: Any) -> dict[str, Any]:
    """A stage config as dotted keys (`trainer.learning_rate`, `data.paths`); run directories resolved."""
    flat: dict[str, Any] = {}
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, dict) and key != "rewards":
            flat |= {f"{key}.{sub}": sub_value for sub, sub_value in value.items()}
        elif key in RUN_KEYS and value:
            flat[key] = str(Path(value).resolve())
        else:
            flat[key] = value
    return flat


def trainer_args(
    config_cls: type[Any], cfg: TrainStageConfig, output_dir: str, has_eval: bool, precision: hardware.Precision
) -> Any:
    """A TRL `*Config` from the `trainer:` section, with alignkit's defaults for what the user did not set.

    Keys are checked against the TRL dataclass's own fields, so every TRL option is available as `trainer.<name>`.
    The returned config carries the options it was built from as `alignkit_options`: `create_run` records them.
    """
    options = trainer_options(config_cls, cfg, output_dir, has_eval, precision)
    try:
        args = config_cls(**options)
    except (ValueError, TypeError) as exc:
        raise AlignkitError(
            f"config: invalid trainer settings ({' '.join(str(exc).split())})", "fix the `trainer:` keys"
        ) from None
    args.alignkit_options = options  # not a dataclass field: TRL's to_dict / to_json leave it out
    return args


# Trainer options alignkit derives from the machine, the run directory or the config's top-level `seed`: recorded in
# the manifest, left out of the config.yaml that reproduces a run, so the same file also works on another machine, for
# another --out, and with `--set seed=N`.
DERIVED_OPTIONS = frozenset(
    {"output_dir", "run_name", "seed", "bf16", "fp16", "use_cpu", "gradient_checkpointing",
     "activation_checkpointing", "ddp_find_unused_parameters", "dataloader_pin_memory"}
)  # fmt: skip


def recorded_trainer(args: Any, user_trainer: dict[str, Any]) -> dict[str, Any]:
    """The `trainer:` section that reproduces `args`: every option passed to the TRL config (method defaults and
    alignkit's additions included), less those derived from the machine and run directory the user did not set."""
    options = args.alignkit_options
    return {k: v for k, v in options.items() if k not in DERIVED_OPTIONS or k in user_trainer}


def trainer_options(
    config_cls: type[Any], cfg: TrainStageConfig, output_dir: str, has_eval: bool, precision: hardware.Precision
) -> dict[str, Any]:
    """The keyword arguments of the TRL config: alignkit's defaults, then the user's `trainer:` keys, checked."""
    valid = check_section("trainer", cfg.trainer, config_cls, top_level=[f.name for f in dataclasses.fields(cfg)])
    for flag, on in precision.trainer_flags.items():  # TRL recipes set `bf16: true`: fine where the model is bf16
        if flag in cfg.trainer and bool(cfg.trainer[flag]) != on:
            raise AlignkitError(
                f"config: trainer.{flag}={cfg.trainer[flag]}, but the model loads in {precision.dtype} "
                f"({precision.reason}): the run would train in another precision than it records",
                "set model.precision (fp32 | bf16 | fp16) instead: trainer.bf16/fp16 follow it",
            )
    check_model_loading_keys(cfg.trainer)
    options: dict[str, Any] = {
        "output_dir": output_dir,
        "seed": cfg.seed,
        "report_to": "none",
        # TRL defaults to activation checkpointing; on a small model or a CPU it only costs a second forward pass.
        checkpointing_key(valid): precision.device == "cuda",
        "include_num_input_tokens_seen": "non_padding",
        "save_strategy": "steps",
        "logging_first_step": True,
        # Evaluation needs only the loss; otherwise the Trainer gathers full-vocabulary logits of every eval batch.
        "prediction_loss_only": True,
        # Pinned host memory speeds up copies to a GPU; without one torch warns for every dataloader built.
        "dataloader_pin_memory": precision.device == "cuda",
        **precision.trainer_flags,
    }
    hardware.check_model(cfg.model, precision.device, precision.dtype)
    if precision.device == "cpu" and precision.dtype == "bfloat16":
        options["use_cpu"] = True  # transformers refuses bf16 without a GPU unless told to train on the CPU
    if distributed.world_size() > 1:
        options["ddp_find_unused_parameters"] = False  # every adapter weight is used; True costs a graph traversal
        if precision.device == "cpu":
            options["use_cpu"] = True  # else transformers sees no GPU backend and each process trains alone
    if has_eval:
        options |= {
            "eval_strategy": "steps",
            "eval_on_start": True,  # validation loss before training: the baseline for every later figure
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_loss",
        }
    if has_eval:
        options |= evaluation_follows(cfg.trainer)
    options |= cfg.trainer
    if has_eval:
        options |= evaluation_at_saves(options, type(cfg)().trainer)
    options |= tracking_defaults(options, valid, run_name=Path(output_dir).parent.name)
    hardware.check_trainer(options)
    if "eval_steps" in options:
        options.setdefault("save_steps", options["eval_steps"])  # best-checkpoint tracking needs them aligned
    if not has_eval:  # also when a recorded config.yaml that had validation is reused on data without it
        options |= {"eval_strategy": "no", "load_best_model_at_end": False, "eval_on_start": False}
    for key in ("max_steps", "num_train_epochs", "learning_rate", "per_device_train_batch_size"):
        value = options.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0 and key != "max_steps":
            raise AlignkitError(f"config: trainer.{key} must be positive, got {value}", f"set trainer.{key} above 0")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if isinstance(options.get(key), int) and options[key] < 1:
            raise AlignkitError(
                f"config: trainer.{key} must be at least 1, got {options[key]}", f"set trainer.{key} to 1 or more"
            )
    if isinstance(options.get("max_steps"), int) and (options["max_steps"] == 0 or options["max_steps"] < -1):
        raise AlignkitError(
            "config: trainer.max_steps must be positive or -1 (use epochs)", f"e.g. {option('trainer.max_steps', 10)}"
        )
    return options


# TRL config fields read only where TRL loads the model from a name: alignkit loads it (`model:`) and hands TRL the
# model, so TRL ignores these with a warning in the log while config.yaml records them as if they applied.
MODEL_LOADING_KEYS = {
    "model_init_kwargs": "model.precision, model.attn_implementation, model.quantization or model.revision",
    "trust_remote_code": "model.trust_remote_code",
}


def check_model_loading_keys(trainer: dict[str, Any]) -> None:
    """Refuse `trainer:` keys that configure how TRL would load the model (`MODEL_LOADING_KEYS`): they have no
    effect here. Their defaults (None, {}, false) pass, as a TRL recipe may spell them out."""
    for key, home in MODEL_LOADING_KEYS.items():
        if trainer.get(key):
            raise AlignkitError(
                f"config: trainer.{key} is not used: alignkit loads the model itself (`model:`), TRL would ignore it",
                f"drop trainer.{key}; set {home} instead",
            )


def evaluation_follows(trainer: dict[str, Any]) -> dict[str, Any]:
    """alignkit's evaluation defaults made to fit a `trainer.eval_strategy` the user set (TRL recipes' `no`, `epoch`)
    without setting the keys that must agree with it: the Trainer refuses keeping the best checkpoint unless
    checkpoints are saved on the same schedule, and keeps none without evaluation."""
    strategy = trainer.get("eval_strategy")
    if strategy is None or "load_best_model_at_end" in trainer:
        return {}
    if strategy == "no":  # no evaluation during training: the validation rows are scored at the start and the end
        return {"load_best_model_at_end": False, "eval_on_start": False}
    return {"save_strategy": strategy}


def evaluation_at_saves(options: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A `trainer.save_steps` set alone (`--set trainer.save_steps=20`) with the default `eval_steps` (50) it is not
    a multiple of: evaluate at each save. Keeping the best checkpoint needs an evaluation at every save, and the
    Trainer refused the pair with a message naming `eval_steps`, a key the user never set."""
    save, every = options.get("save_steps"), options.get("eval_steps")
    if (
        not options.get("load_best_model_at_end")
        or options.get("save_strategy", "steps") != "steps"
        or every != defaults.get("eval_steps")
        or not (isinstance(save, int) and isinstance(every, int) and save > 0 and every > 0)
        or save % every == 0
    ):
        return {}
    logger.info("trainer.eval_steps %d -> %d: the best checkpoint is picked at each save", every, save)
    return {"eval_steps": save}


# `trainer.report_to` names that write locally, and the package each needs (pip install 'alignkit[track]').
LOCAL_TRACKERS = {"tensorboard": "tensorboard", "trackio": "trackio"}


def tracking_defaults(options: dict[str, Any], valid: set[str], run_name: str) -> dict[str, Any]:
    """Local-first experiment tracking for `trainer.report_to`: each tracker checked to be installed (one clear error,
    not the Trainer's traceback), runs named after their directory, trackio kept local (project `alignkit`, no Space).

    TensorBoard writes to the run's `tensorboard/` (set in `add_callbacks`); trackio to its store (`$TRACKIO_DIR`).
    """
    report_to = options.get("report_to") or []
    wanted = [report_to] if isinstance(report_to, str) else list(report_to)
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for name in wanted:
        if name not in (*INTEGRATION_TO_CALLBACK, "all", "none"):
            raise AlignkitError(
                f"config: unknown tracker trainer.report_to={name}", f"one of: {', '.join(INTEGRATION_TO_CALLBACK)}"
            )
        package = LOCAL_TRACKERS.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise AlignkitError(
                f"config: trainer.report_to={name} but {package} is not installed",
                f"pip install 'alignkit[track]' (or {package}), or drop {name} from trainer.report_to",
            )
    defaults: dict[str, Any] = {"run_name": run_name}
    if "trackio" in wanted:
        defaults |= {"project": "alignkit", "trackio_static_space_id": False}
    return {key: value for key, value in defaults.items() if key in valid and key not in options}


def checkpointing_key(valid: set[str]) -> str:
    """transformers renamed `gradient_checkpointing` to `activation_checkpointing`; use the current name."""
    return "activation_checkpointing" if "activation_checkpointing" in valid else "gradient_checkpointing"


def create_run(
    stage: str,
    cfg: TrainStageConfig,
    path: Path,
    files: list[str],
    parent: runs.Run | None,
    args: Any,
    peft_config: Any,
    skipped_rows: dict[str, int] | None = None,
    **manifest: Any,
) -> runs.Run:
    """`runs.create`, once the model is known to load (`models.check_loadable`) and the lineage's tokenizer is settled:
    a base model without a chat template gets ChatML here (`models.add_chatml`), recorded in the manifest
    (`chat_template`) and saved as the run's `tokenizer/`, which every later run of the lineage loads.

    The run describes itself: config.yaml's `trainer:` holds every option passed to the TRL config `args`
    (`recorded_trainer`: `--config <run>/config.yaml` builds the same arguments) and its `peft:` the new adapter's
    method with its defaults (`models.resolved_peft`), the manifest all trainer options (`trainer_args`) and the peft
    config of the adapter it trains (`peft_config`, None when it continues its parent's adapter or trains every
    weight). `skipped_rows`: with `data.skip_bad_rows`, the rows left out of each data file (`runs.create`)."""
    if not cfg.resume:
        models.check_loadable(cfg.model)  # a model that cannot load fails here, before the run dir exists
        output_dir = runs.relative_to_run(Path(args.output_dir), path)  # where checkpoints go, wherever the run moves
        manifest["trainer_args"] = runs.jsonable(args.alignkit_options | {"output_dir": output_dir})
        manifest["peft_config"] = runs.jsonable(peft_config.to_dict()) if peft_config is not None else None
        peft = models.resolved_peft(cfg.peft) if peft_config is not None else cfg.peft  # a new adapter's, in full
        cfg = dataclasses.replace(cfg, trainer=recorded_trainer(args, cfg.trainer), peft=peft)
    tokenizer, added = lineage.lineage_tokenizer(cfg.model, parent.lineage if parent else [])
    if added:
        peft_cfg = models.peft_config(cfg.peft)
        if peft_cfg is not None and not hasattr(peft_cfg, "trainable_token_indices"):
            raise AlignkitError(
                f"model {cfg.model.name} has no chat template, and peft.method={cfg.peft.get('method')} cannot train "
                f"the tokens of the one alignkit adds ({', '.join(added['added_tokens'])})",
                "use peft.method lora or dora, peft.method=full, or a model with a chat template",
            )
        manifest["chat_template"] = added
    if not cfg.resume:
        manifest["base"] = models.base_identity(cfg.model)
    tokenizer = tokenizer if added else None
    return runs.create(stage, cfg, path, files, parent, tokenizer=tokenizer, skipped_rows=skipped_rows, **manifest)


def load_trainable(
    cfg: TrainStageConfig, run: runs.Run, precision: hardware.Precision, head: str = "causal-lm"
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config) for `run`: the base with its parent's lineage merged in memory, the lineage's
    tokenizer; peft adds a fresh adapter, which also trains the tokens of a chat template this run added."""
    tokenizer, _ = lineage.lineage_tokenizer(cfg.model, run.lineage)
    model = lineage.load_merged(lineage.adapter_runs(run.lineage[:-1]), cfg.model, precision, tokenizer, head=head)
    peft_cfg = models.peft_config(cfg.peft, task_type="CAUSAL_LM" if head == "causal-lm" else "SEQ_CLS")
    added = run.manifest.get("chat_template")
    if peft_cfg is None:  # full fine-tuning: merging the ancestors' adapters left the weights frozen
        model.requires_grad_(True)
    elif added:
        models.train_tokens(peft_cfg, model, added["token_ids"])
    return model, tokenizer, peft_cfg


def trainable_tokens_for_trl(model: Any) -> None:
    """Close two gaps between TRL's trainers and peft's trainable token rows (`models.train_tokens`).

    - TRL's fused LM head reads `lm_head.weight` and `lm_head.bias` (`trl/trainer/utils.py:add_fused_lm_head`); peft's
      wrapper of a head gives `weight` (with the trained rows) but no `bias`: give it the head's own (none).
    - TRL copies a continued adapter into its frozen `ref` adapter by the parameter names that contain `.default.`
      (`dpo_trainer.py`, `grpo_trainer.py`, ...); trainable rows are named `...trainable_tokens_delta.default`, so the
      reference would see the chat-template tokens as they were before SFT trained them: copy those too.
    """
    import torch
    from peft.utils.other import TrainableTokensWrapper

    for module in model.modules():
        if isinstance(module, TrainableTokensWrapper) and not hasattr(module, "bias"):
            head = module.original_module
            if isinstance(head, torch.nn.Linear) and head.bias is None:
                module.bias = None
    params = dict(model.named_parameters())
    for name, param in params.items():
        ref = name.removesuffix(".default") + ".ref"
        if name.endswith("trainable_tokens_delta.default") and ref in params:
            params[ref].data.copy_(param.data)


def add_callbacks(trainer: Any, run: runs.Run, cfg: TrainStageConfig, has_eval: bool) -> None:
    """Every logged figure to the run's metrics.jsonl; early stopping on validation loss when there is validation and
    the best checkpoint is kept; the progress bar without per-step log dicts under it (`--verbose` keeps them)."""
    trainer.add_callback(RunMetricsCallback(run))
    if not logs.verbose() and any(type(c) is ProgressCallback for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(QuietProgressCallback)
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:  # `report_to: tensorboard`: event files in the run directory
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(run.path / "tensorboard")
    if has_eval and cfg.early_stopping_patience and trainer.args.load_best_model_at_end:
        trainer.add_callback(early_stopping(cfg.early_stopping_patience))


def early_stopping(patience: int) -> Any:
    """Stop after `patience` evaluations without a better validation loss (the best checkpoint is kept)."""
    from transformers import EarlyStoppingCallback

    return EarlyStoppingCallback(early_stopping_patience=patience)


def passes_check(check: dict[str, Any]) -> bool:
    """Whether an answer (its `judges.check`) passes model selection: accurate where its prompt is checkable, elsewhere
    neither degenerate nor a refusal (a benign prompt declined is not done)."""
    return check["accurate"] if check["accurate"] is not None else not (check["degenerate"] or check["refused"])


class CheckedPromptsCallback(TrainerCallback):
    """Model selection on prompts with references (a stage's `checked_prompts`). The policy's greedy answers to them
    (each prompt's `tools` in the chat template) are checked (`evaluate.answer_figures`) when training starts, at
    each evaluation and when it ends; an answer passes when it is accurate where checkable, elsewhere when it is
    neither degenerate nor a refusal.
    The last step is saved unless an earlier one, the start included, passed on more prompts beyond chance: the
    best-scoring earlier step (the later on a tie) is put back when a one-sided sign test over the prompts where the
    two differ gives p < `alpha`. So a run whose training clearly broke its answers saves its parent instead, and
    noise between steps never undoes training. The one snapshot of weights this needs is held in memory."""

    def __init__(self, prompts: list[Any], tokenizer: Any, max_new_tokens: int, alpha: float = 0.05) -> None:
        self.prompts, self.tokenizer, self.max_new_tokens, self.alpha = prompts, tokenizer, max_new_tokens, alpha
        self.scores: dict[int, dict[str, Any]] = {}
        self.passes: dict[int, list[bool]] = {}
        self.best_step: int | None = None
        self.best_weights: dict[str, Any] = {}
        self.kept_step: int | None = None
        self.ended = False

    def check(self, model: Any, step: int) -> None:
        import torch

        from alignkit import evaluate, generate

        training = model.training
        model.eval()
        with torch.no_grad():
            messages, tools = [p.messages for p in self.prompts], [p.tools for p in self.prompts]
            answers = generate.greedy_replies(
                model, self.tokenizer, messages, self.max_new_tokens, batch_size=40, tools=tools
            )
        model.train(training)
        figures, checks = evaluate.answer_figures(self.prompts, answers)
        self.passes[step] = [passes_check(c) for c in checks]
        score = sum(self.passes[step]) / len(checks)
        self.scores[step] = {"accuracy": figures["accuracy"], "degenerate_rate": figures["degenerate_rate"]}
        self.scores[step]["score"] = round(score, 4)
        logger.info("step %s on the checked prompts: %s", step, self.scores[step])
        best = self.scores[self.best_step]["score"] if self.best_step is not None else None
        if best is None or score >= best:  # a candidate to put back; the last step's snapshot is never needed
            self.best_step = step
            self.best_weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.check(model, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.ended and state.global_step not in self.scores:
            self.check(model, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        import torch

        from alignkit.evaluate import sign_test

        last = state.global_step
        if last not in self.scores:
            self.check(model, last)
        self.ended = True
        earlier = max((s for s in self.scores if s != last), key=lambda s: (self.scores[s]["score"], s), default=None)
        self.kept_step = last
        if earlier is not None:
            wins = sum(a and not b for a, b in zip(self.passes[earlier], self.passes[last], strict=True))
            losses = sum(b and not a for a, b in zip(self.passes[earlier], self.passes[last], strict=True))
            p_value = sign_test(wins, losses)
            self.scores[last]["p_earlier_better"] = round(p_value, 4)
            if p_value < self.alpha:
                self.kept_step = earlier
        if self.kept_step != last:
            logger.warning(
                "kept the weights of step %s: on the checked prompts it passed %s, the last step %s (sign test p=%s)",
                self.kept_step,
                self.scores[self.kept_step]["score"],
                self.scores[last]["score"],
                self.scores[last]["p_earlier_better"],
            )
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name in self.best_weights:
                        param.copy_(self.best_weights[name])
        self.best_weights = {}

    def summary(self) -> dict[str, Any]:
        """For metrics.json: each checked step's figures and the step whose weights were saved."""
        steps = {str(step): figures for step, figures in sorted(self.scores.items())}
        return {"checked_steps": steps, "checked_kept_step": self.kept_step}


class RunMetricsCallback(TrainerCallback):
    """Append every log record (loss, eval_loss, learning rate, tokens, ...) to the run's metrics.jsonl."""

    def __init__(self, run: runs.Run) -> None:
        self.run = run

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            self.run.log_metrics({"step": state.global_step, "epoch": state.epoch, **logs})


class QuietProgressCallback(ProgressCallback):
    """transformers' progress bar without the log dict it prints under it at every logging step: those go to the
    run's log.txt (and every figure to metrics.jsonl)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            logger.info("step %s: %s", state.global_step, {k: v for k, v in logs.items() if k != "total_flos"})

    def on_prediction_step(self, args: Any, state: Any, control: Any, eval_dataloader: Any = None, **kw: Any) -> None:
        """An evaluation during training counts its batches on the training bar (`evaluating 12/250`), not on a
        second bar whose lines would stay under it; without either, a long evaluation looked like a hang."""
        if self.training_bar is None or not state.is_world_process_zero or not has_length(eval_dataloader):
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kw)
            return
        self.evaluated = getattr(self, "evaluated", 0) + 1
        self.training_bar.set_postfix_str(f"evaluating {self.evaluated}/{len(eval_dataloader)}")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_evaluate(args, state, control, **kwargs)
        self.evaluated = 0
        if self.training_bar is not None and state.is_world_process_zero:
            self.training_bar.set_postfix_str("")


def score_only_loss_positions() -> None:
    """Make TRL's fused LM head score only the positions the loss falls on, on every device.

    TRL's SFT, DPO, KTO and GRPO trainers project hidden states through the LM head in tiles. On Triton devices they
    first drop the positions without a label (prompt and pad tokens); elsewhere they score every position, so that
    compilers for static shapes (Neuron) see one tile shape (`trl/trainer/utils.py:add_fused_lm_head`). In eager CPU
    training that is LM-head work, forward and backward, on tokens the loss masks out anyway (a third of the tokens of
    SFT chat data). Same loss and gradients (`tests/unit/test_sft.py`, which fails when the switch is gone); TRL is
    pinned to the minor version this was read from. Should a TRL without the switch be installed anyway, training
    goes on at TRL's own speed, with a warning.
    """
    from trl.trainer import utils as trl_utils

    uses_triton = getattr(trl_utils, "_use_triton", None)
    if uses_triton is None:
        hardware.warn_once("this TRL has no trl.trainer.utils._use_triton: the LM head scores every position")
        return
    if getattr(uses_triton, "alignkit_compact", False):
        return

    def compact_on_cpu(device: Any) -> bool:
        return device.type == "cpu" or uses_triton(device)

    compact_on_cpu.alignkit_compact = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu


class DenseLogProbsOnCPU:
    """TRL's `ChunkedLogProbFunction` with the same signature and outputs, computed on CPU from each token chunk's
    dense logits, which autograd differentiates; elsewhere TRL's own. Installed by `dense_lm_head_on_cpu`.

    TRL folds vocabulary tiles into online log-sum-exp statistics and recomputes them in a hand-written backward:
    on a GPU that avoids the `[tokens, vocab]` logits; on a CPU, where the tiles are folded with torch ops, its
    forward and backward of 560 tokens with entropy and top-1 took 1.1-1.2 s, dense logits 0.4 s, checkpointed
    0.35-0.55 s (SmolLM2's 49k vocabulary, bf16, 2 cores; TRL's took 16 of 41 s of CPU time in 6 multi-turn SFT steps;
    hand-timed 2026-12-04, benchmarks/notes.md, which has all but the checkpointed figure).
    Up to `chunk_floats` logits are kept for the backward (10-14 bytes each with their fp32 log-softmax); beyond,
    each chunk of that size is checkpointed, so only one chunk's logits live at a time, as in TRL, at the cost of one
    more matmul in the backward."""

    chunk_floats = 2**26  # 1,365 tokens of a 49k vocabulary: about 670 MB held for the backward

    @staticmethod
    def apply(
        hidden: Any,
        weight: Any,
        bias: Any,
        targets: Any,
        temperature: float,
        chunk_size: int,
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = (),
    ) -> tuple[Any, ...]:
        import torch
        from torch.utils.checkpoint import checkpoint
        from trl.kernels import ChunkedLogProbFunction

        if hidden.device.type != "cpu":
            return ChunkedLogProbFunction.apply(
                hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping, logit_scale, outputs
            )
        options = (temperature, final_logit_softcapping, logit_scale, outputs)
        step = max(1, DenseLogProbsOnCPU.chunk_floats // weight.shape[0])
        if hidden.shape[0] <= step:  # one chunk: its logits stay for the backward, no recomputation
            return dense_log_probs(hidden, weight, bias, targets, *options)
        pieces = [
            checkpoint(
                dense_log_probs,
                hidden[i : i + step],
                weight,
                bias,
                targets[i : i + step],
                *options,
                use_reentrant=False,
            )
            for i in range(0, hidden.shape[0], step)
        ]
        return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*pieces, strict=True))


def dense_log_probs(
    hidden: Any,
    weight: Any,
    bias: Any,
    targets: Any,
    temperature: float,
    softcap: float | None,
    logit_scale: float,
    outputs: tuple[str, ...],
) -> tuple[Any, ...]:
    """(log-probability of each target, entropy, log of the summed squared probabilities, mean logit, whether the
    target is the first argmax) from the logits of `hidden`, each None unless in `outputs` (log-probabilities always),
    as TRL's kernel defines them: the matmul in the autocast (else `hidden`'s) dtype, the rest in fp32."""
    import torch

    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else hidden.dtype
    with torch.autocast("cpu", enabled=False):
        z = torch.nn.functional.linear(
            hidden.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
        ).float()
        if logit_scale != 1.0:  # each is a pass over [tokens, vocab], forward and backward: only where it changes z
            z = z * logit_scale
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        if temperature != 1.0:
            z = z / temperature
        log_p = z.log_softmax(-1)
        log_probs = log_p.gather(-1, targets[:, None]).squeeze(-1)
        entropy = -(log_p.exp() * log_p).sum(-1) if "entropy" in outputs else None
        with torch.no_grad():
            log_sum_sq = (2 * log_p).logsumexp(-1) if "log_sum_sq_probs" in outputs else None
            mean_logits = z.mean(-1) if "mean_logits" in outputs else None
            is_top1 = z.argmax(-1) == targets if "is_top1" in outputs else None
    return log_probs, entropy, log_sum_sq, mean_logits, is_top1


def dense_lm_head_on_cpu() -> None:
    """Make TRL's fused LM head (every trainer's log-probabilities) use `DenseLogProbsOnCPU`. Same loss, gradients
    and metrics as TRL's kernel (`tests/unit/test_sft.py`, which fails when the switch is gone); a TRL without the
    name it replaces trains at its own speed, with a warning."""
    from trl.trainer import utils as trl_utils

    if not hasattr(trl_utils, "_ChunkedLogProbFunction"):
        hardware.warn_once("this TRL has no trl.trainer.utils._ChunkedLogProbFunction: its CPU LM head stays")
        return
    trl_utils._ChunkedLogProbFunction = DenseLogProbsOnCPU


def train_and_save(
    trainer: Any,
    run: runs.Run,
    extra_metrics: dict[str, Any] | None = None,
    final_metrics: Callable[[Any], dict[str, Any]] | None = None,
    final_evaluation: bool = True,
) -> runs.Run:
    """Train (from the last checkpoint if resuming), save the adapter or full model atomically, finish the run.

    `final_metrics(trainer)` adds figures of the trained model (e.g. reward calibration) before the run is finished;
    `final_evaluation=False` leaves out TRL's last `evaluate()` where those figures score the validation rows too.
    """
    checkpoint = run.last_checkpoint()
    resumed_step = runs.checkpoint_step(Path(checkpoint)) if checkpoint else 0
    earlier_parts = run.manifest.get("training_parts", []) if checkpoint else []
    trainer.add_callback(TrainingPartsCallback(run, earlier_parts, resumed_step))
    checkpoints_without_embeddings(trainer)
    hardware.reuse_freed_memory()
    score_only_loss_positions()
    dense_lm_head_on_cpu()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    part = {"from_step": resumed_step, "to_step": trainer.state.global_step, **result.metrics}
    kept = ("from_step", "to_step", "train_runtime", "train_loss")
    parts = [*earlier_parts, {k: part.get(k) for k in kept} | batch_layout(trainer.args)]
    metrics: dict[str, Any] = {
        "train_runtime": sum(p.get("train_runtime") or 0.0 for p in parts),
        "train_loss": whole_run_loss(trainer.state.log_history, resumed_step, part),
        "train_tokens": int(trainer.state.num_input_tokens_seen),
        "global_step": trainer.state.global_step,
        "resumed_from": run.relative(checkpoint) if checkpoint else None,
    }
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if losses:
        metrics["final_train_loss"] = losses[-1]
    if trainer.eval_dataset is not None:
        if final_evaluation:
            metrics |= {k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")}
        evals = [r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r]
        metrics["eval_loss_start"] = evals[0] if evals else None
        best = trainer.state.best_model_checkpoint
        metrics["best_checkpoint"] = run.relative(best) if best else None
    metrics |= extra_metrics or {}
    if final_metrics is not None:
        metrics |= final_metrics(trainer)
    # DeepSpeed ZeRO-3 and FSDP shard the weights: every process takes part in gathering them, the main one saves.
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if sharded else None
    if trainer.is_world_process_zero():
        save_model(trainer, run, state_dict)
        run.update_manifest(training_parts=parts)
        run.finish(metrics)
    distributed.wait_for_everyone()
    return run


def batch_layout(args: Any) -> dict[str, int]:
    """How one optimizer step took its rows (recorded with each part of a run): processes x per-device batch x
    gradient accumulation."""
    return {
        "world_size": distributed.world_size(),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }


def resumed_accumulation(run: runs.Run, args: Any) -> int | None:
    """The `gradient_accumulation_steps` that keeps a resumed run's rows per optimizer step on this launch's number of
    processes (None: `args` keep them already, or there is no checkpoint to go on from).

    transformers resumes by step: each process skips `steps x accumulation` batches of its shard of one seeded order
    of the rows (accelerate deals the batches out in turn), i.e. `steps x` the rows per step of this launch. Only
    while processes x per-device batch x accumulation stays what it was are the skipped rows the ones trained, and
    the next steps take the rows an uninterrupted run would. A change that cannot keep it is refused.
    """
    checkpoint = run.last_checkpoint()
    if checkpoint is None:  # starts again from the first row: nothing to skip
        return None
    manifest = run.manifest
    layouts = [part for part in manifest.get("training_parts") or [] if "world_size" in part]
    trained = (
        layouts[-1]
        if layouts
        else batch_layout(args) | {"world_size": manifest.get("distributed", {}).get("world_size", 1)}
    )
    processes, accumulated = trained["world_size"], trained["gradient_accumulation_steps"]
    rows_per_step = processes * trained["per_device_train_batch_size"] * accumulated
    now, per_device = distributed.world_size(), args.per_device_train_batch_size
    accumulation, left = divmod(rows_per_step, now * per_device)
    # GRPO/RLOO (`steps_per_generation`) and length-grouped sampling draw another order of rows for another layout.
    ordered_by_layout = getattr(args, "steps_per_generation", None) is not None or getattr(
        args, "train_sampling_strategy", "random"
    ) not in ("random", "sequential")
    if left or (now != processes and ordered_by_layout):
        counts = [n for n in range(1, rows_per_step // per_device + 1) if rows_per_step % (n * per_device) == 0]
        why = (
            "its trainer draws the rows in an order that depends on the number of processes"
            if ordered_by_layout
            else f"no trainer.gradient_accumulation_steps keeps its {rows_per_step} rows per step on {now}"
        )
        raise AlignkitError(
            f"{run.path} trained on {processes} process(es) ({processes} x {trained['per_device_train_batch_size']} "
            f"rows x {accumulated} accumulation per step) and resumes on {now}: {why}, so the resumed steps would "
            "skip other rows than it trained",
            f"launch it with {processes if ordered_by_layout else ' or '.join(map(str, counts))} process(es)",
        )
    if now != processes and distributed.is_main():
        logger.warning(
            "%s trained %d rows per step on %d process(es): on %d, trainer.gradient_accumulation_steps=%d keeps them",
            run.path,
            rows_per_step,
            processes,
            now,
            accumulation,
        )
    return accumulation if accumulation != args.gradient_accumulation_steps else None


def whole_run_loss(log_history: list[dict[str, Any]], resumed_step: int, part: dict[str, Any]) -> float | None:
    """The mean training loss over every step of the run. transformers' `train_loss` covers only the steps of one
    `train()` call (`part`); before `resumed_step`, each loss logged (the mean since the previous log) is weighted by
    the steps it covers, as transformers averages. Steps before the checkpoint that were never logged are left out
    (none when checkpoints fall on logging steps, as they do by default)."""
    part_loss = part.get("train_loss")
    if not resumed_step or part_loss is None:
        return part_loss
    logged_sum, covered = 0.0, 0
    for row in log_history:
        if "loss" in row and covered < row["step"] <= resumed_step:
            logged_sum += row["loss"] * (row["step"] - covered)
            covered = row["step"]
    part_steps = part["to_step"] - resumed_step
    steps = covered + part_steps
    return (logged_sum + part_loss * part_steps) / steps if steps else part_loss


class TrainingPartsCallback(TrainerCallback):
    """At each checkpoint, record in the manifest how long this `train()` call has trained (`training_parts`, after
    the parts before its resume): a killed part's time up to its last checkpoint counts in the run's `train_runtime`,
    where transformers' covers only the last call."""

    def __init__(self, run: runs.Run, earlier_parts: list[dict[str, Any]], from_step: int) -> None:
        self.run, self.earlier_parts, self.from_step = run, earlier_parts, from_step
        self.started = time.time()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.time()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            part = {
                "from_step": self.from_step,
                "to_step": state.global_step,
                "train_runtime": time.time() - self.started,
            }
            self.run.update_manifest(training_parts=[*self.earlier_parts, part | batch_layout(args)])


def checkpoints_without_embeddings(trainer: Any) -> None:
    """Checkpoints of a PEFT run hold its adapter as `save_model` writes it, without the base's embeddings.

    The Trainer saves checkpoints with peft's `save_embedding_layers="auto"`, which on a base whose embeddings were
    resized (given ChatML: `models.fit_embeddings`) adds the whole embedding and LM head matrices to every checkpoint
    (GBs on a 7B model). A resume refits them as every load does, and the new tokens' trained rows are the adapter's.
    """
    from peft import PeftModel

    model = trainer.model
    if isinstance(model, PeftModel):  # the Trainer calls it from `_save`, wrapped (DeepSpeed, FSDP) or not
        model.save_pretrained = functools.partial(model.save_pretrained, save_embedding_layers=False)


def save_model(trainer: Any, run: runs.Run, state_dict: dict[str, Any] | None = None) -> None:
    """`adapter/` for PEFT runs, `model/` for full fine-tuning; written to a temp dir, then renamed.

    `state_dict`: the full weights gathered from a sharded (ZeRO-3 / FSDP) model; None saves the model's own.
    """
    from peft import PeftModel

    target = run.adapter_dir if isinstance(trainer.model, PeftModel) else run.model_dir
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(trainer.model, PeftModel):  # the trained adapter only (DPO keeps a frozen `ref` copy beside it)
        trainer.model.save_pretrained(  # not the whole resized embeddings: every load refits them (`fit_embeddings`)
            tmp,
            safe_serialization=True,
            selected_adapters=[trainer.model.active_adapter],
            state_dict=state_dict,
            save_embedding_layers=False,
        )
    else:
        trainer.model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    trainer.processing_class.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def parent_model_config(model_cfg: ModelConfig, parent: runs.Run) -> ModelConfig:
    """The base model of a stage started from `parent`: the parent's own base (`runs.open_policy` refused another
    `--model`), at the precision asked for; found even where the parent holds a whole model: the new run records it."""
    return dataclasses.replace(parent.base_config(), precision=model_cfg.precision)


def sft_classes(cfg: Any) -> tuple[type[Any], type[Any]]:
    """TRL's SFTTrainer and SFTConfig (the `sft` and `pretrain` recipes)."""
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer, SFTConfig


def build_sft(plan: Any, to_examples: Callable[[Rows], Rows]) -> Any:
    """The SFTTrainer of a `runner.Plan` (`sft` and `pretrain`): rows made examples (a list, or a `datasets`
    IterableDataset where the rows stream), padding-free batches unless `trainer.padding_free` is set."""
    examples = to_examples(plan.train_rows), to_examples(plan.eval_rows)
    trainer = sft_trainer(plan.args, plan.model, plan.tokenizer, plan.peft_config, *examples)
    if isinstance(examples[0], list):  # a stream's examples are prepared as training reads them
        plan.left_out = rows_left_out(trainer, *map(len, examples))
        plan.cut = examples_cut(trainer, *examples)
    if "padding_free" not in plan.cfg.trainer:  # `trainer.padding_free: false` keeps padded batches
        use_padding_free(trainer, plan.peft_config)
    return trainer


def rows_left_out(trainer: Any, train_given: int, eval_given: int) -> dict[str, int]:
    """How many of the examples given to a TRL trainer it left out while preparing them: those too long for
    `max_length` (SFT: an answer starting past it; DPO: a prompt filling it; reward: a pair longer than it). TRL drops
    them without a word; here a run with none left is refused, and otherwise a warning (terminal and log) says so."""
    if getattr(trainer.args, "packing", False):  # packed rows are not the examples given
        return {}
    kept = {"train": len(trainer.train_dataset), "validation": len(trainer.eval_dataset or [])}
    given = {"train": train_given, "validation": eval_given}
    left_out = {split: given[split] - kept[split] for split in given if given[split] > kept[split]}
    if given["train"] and not kept["train"]:
        raise all_too_long(trainer.args)
    if left_out:
        counts = ", ".join(f"{left_out[split]} of {given[split]} {split}" for split in left_out)
        limit = max_length(trainer.args)
        logger.warning(
            "%s examples are too long for %s tokens and are left out (raise it: %s)",
            counts,
            limit,
            option("trainer.max_length", Placeholder("N")),
        )
    return left_out


def examples_cut(trainer: Any, train_given: Any, eval_given: Any) -> dict[str, int]:
    """How many of the examples a TRL trainer kept are cut at `max_length`, losing tokens without a word. With
    `keep_start` (the default; KTO's only mode) SFT trains an answer without its end (no EOS: the model does not learn
    to stop) or a conversation without its later replies, DPO compares the pair's starts only (nothing where they are
    the same after the cut), KTO trains a completion without its end; with `keep_end` the start is cut: the system
    prompt and first turns of an SFT conversation, the start of a DPO prompt. Said in one warning line. Lengths come
    from what is already tokenized: DPO's and KTO's untruncated ids, alignkit's own per-conversation examples; only
    prompt->completion rows exactly at the limit are rendered again."""
    args = trainer.args
    limit = getattr(args, "max_length", None)
    if limit is None or getattr(args, "packing", False):
        return {}
    keep_end = getattr(args, "truncation_mode", "keep_start") == "keep_end"
    kept_part = slice(-limit, None) if keep_end else slice(None, limit)
    cut: dict[str, int] = {}
    given = {"train": train_given, "validation": eval_given}
    sizes = {"train": len(train_given), "validation": len(eval_given or [])}
    same, longest, kind = 0, 0, "examples"
    for split, kept in (("train", trainer.train_dataset), ("validation", trainer.eval_dataset)):
        if not kept:
            continue
        columns = kept.column_names
        lengths: list[int] = []
        if "prompt_ids" in columns and "chosen_ids" in columns:  # DPO: its collator cuts prompt+chosen, prompt+rejected
            kind = "pairs"
            for prompt, chosen, rejected in zip(
                kept["prompt_ids"], kept["chosen_ids"], kept["rejected_ids"], strict=True
            ):
                if len(prompt) + max(len(chosen), len(rejected)) > limit:
                    lengths.append(len(prompt) + max(len(chosen), len(rejected)))
                    same += (prompt + chosen)[kept_part] == (prompt + rejected)[kept_part]
        elif "prompt_ids" in columns and "completion_ids" in columns:  # KTO: its collator cuts prompt+completion
            kind = "completions"
            pairs = zip(kept["prompt_ids"], kept["completion_ids"], strict=True)
            lengths = [n for n in (len(prompt) + len(completion) for prompt, completion in pairs) if n > limit]
        elif "input_ids" in columns and given[split] and "input_ids" in given[split][0]:  # `data.conversation_examples`
            lengths = [
                len(example["input_ids"])
                for example in given[split]
                if len(example["input_ids"]) > limit
                and any(example.get("assistant_masks", [1] * len(example["input_ids"]))[kept_part])
            ]
        elif "input_ids" in columns:  # TRL tokenized and cut them: only those at the limit may have been longer
            at_limit = [i for i, ids in enumerate(kept["input_ids"]) if len(ids) >= limit]
            text = getattr(args, "dataset_text_field", "text")
            lengths = [n for n in (full_length(trainer.processing_class, kept[i], text) for i in at_limit) if n > limit]
        if lengths:
            cut[split], longest = len(lengths), max(longest, *lengths)
    if cut:
        counts = ", ".join(f"{cut[split]} of {sizes[split]} {split}" for split in cut)
        lost = what_the_cut_loses(kind, keep_end)
        lost += f"; {same} of them are the same after the cut and train nothing" if same else ""
        logger.warning(
            "%s %s are cut at %s tokens: %s (the longest has %d: %s)",
            counts,
            kind,
            max_length(args),
            lost,
            longest,
            option("trainer.max_length", Placeholder("N")),
        )
    return cut


def what_the_cut_loses(kind: str, keep_end: bool) -> str:
    """What an example cut at `max_length` loses, in `examples_cut`'s warning."""
    if keep_end:  # truncation_mode: keep_end (SFT and DPO)
        if kind == "pairs":
            return "the starts of their prompts are lost (answers compared without the context they answer)"
        return "their starts are lost (the system prompt and first turns: replies trained without their context)"
    if kind == "pairs":
        return "their ends are not compared"
    if kind == "completions":
        return "the end of each completion is not trained"
    return "the end of what they train is lost (no EOS: it never learns to stop)"


def full_length(tokenizer: Any, row: dict[str, Any], text_column: str = "text") -> int:
    """The number of tokens of an SFT example (prompt->completion, or text in `text_column`) before TRL cut it."""
    if "prompt" in row and isinstance(row["prompt"], list):  # conversational, rendered as TRL renders it
        tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
        rendered = tokenizer.apply_chat_template(
            row["prompt"] + row["completion"], tools=tools, tokenize=True, return_dict=True
        )
        return len(rendered["input_ids"])
    text = row["prompt"] + row["completion"] if "prompt" in row else row[text_column]
    return len(tokenizer(text)["input_ids"])


def max_length(args: Any) -> str:
    return f"trainer.max_length={getattr(args, 'max_length', None)}"


def all_too_long(args: Any) -> AlignkitError:
    return AlignkitError(
        f"every training example is too long for {max_length(args)} tokens",
        f"raise it with {option('trainer.max_length', Placeholder('N'))}",
    )


def sft_args(cfg: TrainStageConfig, path: Any, has_eval: bool, precision: hardware.Precision) -> Any:
    """TRL's `SFTConfig` of a run at `path` (`trainer_args`)."""
    from trl import SFTConfig

    return trainer_args(SFTConfig, cfg, str(path / "checkpoints"), has_eval, precision)


def sft_trainer(
    args: Any, model: Any, tokenizer: Any, peft_config: Any, train_examples: Rows | Any, eval_examples: Rows
) -> Any:
    """TRL's SFTTrainer on prompt->completion (or text) examples; `train_examples` a list or an IterableDataset."""
    from trl import SFTTrainer

    from datasets import Dataset

    # "use_json": rows whose tool calls have different argument keys stay as they are (Arrow would otherwise merge
    # every row's keys into one struct and fill the missing ones with null, and add `tool_calls: null` to plain turns)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_examples, on_mixed_types="use_json")
        if isinstance(train_examples, list)
        else train_examples,
        eval_dataset=Dataset.from_list(eval_examples, on_mixed_types="use_json") if eval_examples else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def use_padding_free(trainer: Any, peft_config: Any) -> None:
    """Batches as one row of real tokens (TRL's padding-free collator), not rows padded to the longest one.

    On mixed-length chat data most of a padded batch is padding, computed through every layer and the LM head. TRL
    refuses `padding_free=True` with `max_length` unless packing, because the flattened row can exceed `max_length`;
    but each example is still truncated to `max_length` when the dataset is prepared, so a batch never holds more than
    batch x max_length tokens, the bound a padded batch has. Attention stays within each example: causal SDPA per
    example (`segment_attention`) on models using SDPA, flash attention within the collator's bounds. Other
    implementations (eager, flex) keep padded batches: their mask is the model's own, and some models (OPT) build it
    without the `position_ids` that mark the examples, so the examples of a row would attend to each other. Not for
    prompt learning (virtual tokens are prepended to each row) nor with packing (already padding-free).
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    args, collator = trainer.args, trainer.data_collator
    if getattr(peft_config, "is_prompt_learning", False) or args.packing or args.padding_free:
        return
    if not isinstance(collator, DataCollatorForLanguageModeling):
        return
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    attention = model.config._attn_implementation
    if attention not in ("sdpa", SEGMENT_ATTENTION) and "flash" not in attention:  # said in the log only: the
        logger.info(  # model's own choice on some (Gemma2), where a console warning would come with every run
            "padded batches: padding-free ones need sdpa or flash attention, not model.attn_implementation=%s",
            attention,
        )
        return
    collator.padding_free = True
    if args.include_num_input_tokens_seen == "non_padding" and collator.pad_to_multiple_of is None:
        # Every token of the row is real; "non_padding" would count ids != pad, dropping each EOS when pad == EOS.
        args.include_num_input_tokens_seen = "all"
    if attention == "sdpa":
        register_segment_attention()
        model.set_attn_implementation(SEGMENT_ATTENTION)


SEGMENT_ATTENTION = "alignkit_segment_sdpa"


def segment_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """SDPA within each example of a padding-free row (the collator's `cu_seq_lens_q` bounds them): causal attention
    per example. The row's block-diagonal mask gives the same result, but SDPA on CPU computes it over the whole row,
    n^2 for n tokens where the examples need the sum of their squares (a row of four ~350-token conversations: about
    2x the attention time, 15.3 s against 7.4 s hand-timed in benchmarks/notes.md, 2026-12-02). Anything else (no
    bounds, a sliding window, a cache) is transformers' SDPA."""
    import itertools

    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None or query.shape[0] != 1 or key.shape[2] != query.shape[2] or kwargs.get("sliding_window"):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    edges = bounds.tolist()
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            is_causal=True,
            scale=scaling,
            enable_gqa=key.shape[1] != query.shape[1],
        )
        for start, end in itertools.pairwise(edges)
        if end > start
    ]
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register_segment_attention() -> None:
    """`segment_attention` as an attention implementation, with SDPA's masks (used when a batch has no bounds)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENT_ATTENTION, sdpa_mask)
