"""Stage configs: dataclasses, filled from defaults <- YAML file <- CLI flags <- `--set key=value`.

alignkit's own sections (`model`, `data`, top-level stage options) are dataclasses checked here. The `trainer` and
`peft` sections are passed straight to TRL's `*Config` and peft's `*Config`; their keys are checked against those
dataclasses' own fields when a stage starts (`check_keys`), so every option TRL or peft adds works without a release
of alignkit.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import operator
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from alignkit.errors import AlignkitError, Placeholder, from_python, option, shown, table_hint
from alignkit.paths import saved_split

EMBEDDED_MODEL = "embedded"


@dataclass
class ModelConfig:
    """Which base model to load, and how."""

    name: str = EMBEDDED_MODEL  # "embedded" | local HF dir | .gguf file | hub id
    revision: str | None = None
    trust_remote_code: bool = False  # never on unless asked: it runs code shipped with the model
    allow_pickle: bool = False  # load `.bin` (pickle) weights; safetensors only by default
    # None: transformers' choice for the architecture, SDPA where it supports it, else eager (Gemma2, whose
    # attention-logit softcapping SDPA cannot do, refuses to load under "sdpa")
    attn_implementation: str | None = None
    precision: str = "auto"  # auto | fp32 | bf16 | fp16; auto picks from the hardware
    quantization: str | None = None  # 4bit | 8bit: a bitsandbytes-quantized base for QLoRA (CUDA only)

    def __post_init__(self) -> None:
        if self.name != EMBEDDED_MODEL:
            self.name = local_path(self.name)


@dataclass
class DataConfig:
    """Training data files and how to split them."""

    paths: list[str] = field(default_factory=list)
    # held out for validation where no validation files and no save dir's validation/test split: a fraction of the
    # rows (0 = none) or, from 1 up, a number of rows
    validation_split: float = 0.1
    max_validation_rows: int | None = 256  # a fraction's cap: every evaluation (each eval_steps) scores each row
    validation_paths: list[str] = field(default_factory=list)  # explicit validation files instead of a split
    # a save dir's validation/test split beside its training split is the validation rows (false: `validation_split`
    # of the training rows, as runs started before alignkit read those splits; `--resume` keeps what a run started with)
    saved_validation: bool = True
    max_rows: int | None = None  # use the first N rows (after validation of the whole file)
    seed: int = 42
    # pretrain: read the text as training goes (datasets' IterableDataset), not into memory; needs trainer.max_steps
    streaming: bool = False
    # leave out the rows that fail the checks (counted per file in the manifest) instead of refusing their file
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        self.paths, self.validation_paths = ([local_path(p) for p in ps] for ps in (self.paths, self.validation_paths))


def local_path(name: str) -> str:
    """An existing local file or dir (or `DIR:SPLIT` of a save dir) as an absolute path, so that a run's recorded
    config (its base model, its data) works from any directory, `--resume` included; anything else (`embedded`, a hub
    id, a missing file) as given."""
    if not isinstance(name, str) or not name:
        return name
    path, split = saved_split(name)
    if not path.exists():
        return name
    return f"{path.resolve()}:{split}" if split else str(path.resolve())


def trainer_defaults(**overrides: Any) -> dict[str, Any]:
    """The `trainer:` keys every stage starts from (small batches, cosine schedule, evaluation every 50 steps)."""
    return {
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "max_length": 512,
        "logging_steps": 5,
        "eval_steps": 50,
        "save_total_limit": 2,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        **overrides,
    }


def default_peft() -> dict[str, Any]:
    return {"method": "lora"}  # per-method defaults live in models.PEFT_DEFAULTS


@dataclass
class TrainStageConfig:
    """Options every training stage shares; each stage's config extends it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    peft: dict[str, Any] = field(default_factory=default_peft)  # `method: full` trains every weight
    trainer: dict[str, Any] = field(default_factory=dict)  # keys of the stage's TRL config (e.g. trl.SFTConfig)
    from_run: str | None = None  # parent run directory: start from its adapter/model
    out: str | None = None  # run directory (default: runs/<stage>-<time>-<id>)
    runs_dir: str = "runs"
    resume: bool = False
    overwrite: bool = False
    seed: int = 42
    early_stopping_patience: int | None = 3  # evaluations without validation-loss improvement before stopping


@dataclass
class SFTStageConfig(TrainStageConfig):
    """`alignkit sft`: supervised fine-tuning on chat data; loss on assistant turns only."""

    TRAINER_CONFIGS: ClassVar[tuple[str, ...]] = ("trl:SFTConfig",)  # `module:Class` whose fields `trainer:` takes

    trainer: dict[str, Any] = field(default_factory=lambda: trainer_defaults(learning_rate=1e-4))


@dataclass
class PretrainStageConfig(TrainStageConfig):
    """`alignkit pretrain`: continued next-token pretraining on raw domain text."""

    TRAINER_CONFIGS: ClassVar[tuple[str, ...]] = ("trl:SFTConfig",)

    # `bfd_split`: a text longer than max_length is split over packed rows (TRL's default `bfd` cuts it there)
    trainer: dict[str, Any] = field(
        default_factory=lambda: trainer_defaults(
            learning_rate=1e-4, max_length=256, packing=True, packing_strategy="bfd_split"
        )
    )


def load_config(
    cls: type[Any],
    config_file: str | Path | None = None,
    values: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    values_from: str = "command line",
) -> Any:
    """Build `cls` from its defaults, a YAML file, explicit values (CLI flags, or a Python call's keyword arguments:
    `values_from`, as errors name them) and `key=value` overrides, in that order.

    Unknown keys are an error naming the key and the nearest valid one.
    """
    tree = dataclass_to_dict(cls())
    if config_file is not None:
        merge(tree, read_config_file(Path(config_file)), cls, where=str(config_file))
    if values:
        merge(tree, values, cls, where=values_from)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise AlignkitError(
                f"{option('overrides')} {item!r}: expected key=value",
                f"e.g. {option('overrides', ['trainer.learning_rate=2e-5'])}",
            )
        nested: dict[str, Any] = {}
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(raw)
        merge(tree, nested, cls, where=f"{option('overrides')} {key}")
    return build(cls, tree)


# Keys naming another run dir. A run's config.yaml stores them relative to its own dir, like the manifest's parent,
# so a moved runs/ still resumes and reruns; `out` is left out there (it is the dir the file is in).
RUN_KEYS = ("from_run", "reward_run")


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML config file; in a run's own config.yaml (a manifest.json beside it) the `RUN_KEYS` are read against the
    run's dir (a path recorded by an older alignkit relative to the working directory is kept while it exists)."""
    loaded = read_yaml(path)
    if (path.parent / "manifest.json").is_file():
        for key in RUN_KEYS:
            recorded = loaded.get(key)
            if isinstance(recorded, str) and recorded and not Path(recorded).is_absolute():
                resolved = path.parent / recorded
                loaded[key] = str(resolved.resolve()) if resolved.exists() or not Path(recorded).exists() else recorded
    return loaded


class ConfigLoader(yaml.SafeLoader):
    """YAML as configs are written, as in YAML 1.2 (and for `--set` values): PyYAML's YAML 1.1 reads `1e-4` (no dot)
    as a string, here a float; and `no`/`yes`/`on`/`off` as booleans, here strings (`eval_strategy: no` is TRL's
    strategy `no`, not False). Booleans are `true` and `false`."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


# Files that are data, never a config: `alignkit.sft("chats.jsonl")` passes one as the config (the first argument).
DATA_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".txt")


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AlignkitError(f"{path}: config file not found", f"pass an existing YAML file to {option('config')}")
    if path.suffix.lower() in DATA_SUFFIXES:
        raise AlignkitError(
            f"{path}: a data file given as the config",
            f"pass it as data: {option('data.paths', [str(path)])}; the config is a YAML file",
        )
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f":{line + 1}" if line is not None else ""
        raise AlignkitError(f"{path}{at}: not valid YAML ({str(exc).splitlines()[0]})", "fix the YAML syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise AlignkitError(f"{path}: expected a mapping of config keys at the top level", "see configs/*.yaml")
    return loaded


def parse_value(raw: str) -> Any:
    """A `--set` value read as config files are (`ConfigLoader`); text that is a number (`.5e-3`) as a float."""
    value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def merge(tree: dict[str, Any], update: dict[str, Any], cls: type[Any], where: str) -> None:
    """Merge `update` into `tree` in place, rejecting keys `cls` does not have (all of them at once: a config
    brought from another tool has several)."""
    unknown = merge_known(tree, update, cls, where)
    if unknown:
        raise unknown_keys(unknown, where)


def merge_known(
    tree: dict[str, Any], update: dict[str, Any], cls: type[Any], where: str, prefix: str = ""
) -> list[AlignkitError]:
    """`merge` of the keys `cls` has; an error for each other key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = []
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            sections = section_keys(tree, hints, cls) if not prefix else {}
            unknown.append(unknown_key(dotted, names, where, prefix, sections))
            continue
        sub = dataclass_type(hints[key])
        if sub is not None:
            if not isinstance(value, dict):
                raise AlignkitError(
                    f"{where}: `{dotted}` must be a mapping, got {shown(value)}",
                    table_hint(value, section_fix(dotted, value)),
                )
            unknown += merge_known(tree[key], value, sub, where, prefix=f"{dotted}.")
        elif isinstance(tree.get(key), dict) and isinstance(value, dict):
            tree[key] = {**tree[key], **value}  # free-form sections (trainer, peft): checked later by check_keys
        else:
            tree[key] = value
    return unknown


# A section's main key: a path or name given for the whole section (`data="chats.jsonl"`) is this key's value.
MAIN_KEYS = {"data": "data.paths", "model": "model.name"}


def section_fix(dotted: str, value: Any) -> str:
    """How to write a section given as one value: `data={'paths': ['chats.jsonl']}` for a path, else its keys."""
    main = MAIN_KEYS.get(dotted)
    if main and isinstance(value, str | os.PathLike):
        given = os.fspath(value)
        return f"pass it as {option(main, [given] if main.endswith('paths') else given)}"
    return f"see `{dotted}.*` keys"


def spelled(dotted: str) -> str:
    """Config key `dotted` as the caller sets it: `trainer.max_steps`, or in Python trainer={'max_steps': ...}."""
    return option(dotted, Placeholder("...")) if from_python() else f"`{dotted}`"


def unknown_keys(errors: list[AlignkitError], where: str) -> AlignkitError:
    """One error for one or more `unknown_key` errors of one config: each key with its hint, on one line."""
    if len(errors) == 1:
        return errors[0]
    keys = [error.message.rsplit(": unknown config key ", 1)[-1] for error in errors]
    listed = [f"{key} ({error.hint})" if error.hint and not error.hint.startswith("valid keys") else key
              for key, error in zip(keys, errors, strict=True)]  # fmt: skip
    return AlignkitError(f"{where}: {len(errors)} unknown config keys: {'; '.join(listed)}", "fix or drop each")


def section_keys(tree: dict[str, Any], hints: dict[str, Any], cls: type[Any]) -> dict[str, list[str]]:
    """The keys of each section of a config `tree` (dataclass fields; for `trainer:`, the fields of the stage's TRL
    configs and its defaults too): a misplaced top-level key is suggested under its section (`trainer.beta`)."""
    from transformers import TrainingArguments

    trainer_configs = [TrainingArguments, *map(config_class, getattr(cls, "TRAINER_CONFIGS", ()))]
    keys = {name: list(value) for name, value in tree.items() if isinstance(value, dict)}
    keys["trainer"] = [
        *keys.get("trainer", []),
        *dict.fromkeys(f.name for config in trainer_configs for f in dataclasses.fields(config) if f.init),
    ]
    return keys | {
        name: [f.name for f in dataclasses.fields(hint)] for name, hint in hints.items() if dataclass_type(hint)
    }


def config_class(dotted: str) -> type[Any]:
    """`module:Class` imported."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


# Keys of the configs people bring from TRL's scripts (`ScriptArguments`, `ModelConfig`), axolotl and LLaMA-Factory,
# with their alignkit home (none: the note says why) and what to write there: difflib's nearest key for them is another
# knob (`lora_rank` -> trainer.local_rank, `max_samples` -> trainer.max_steps, `overwrite_cache` -> overwrite).
FOREIGN_KEYS: dict[str, tuple[str, str]] = {
    "stage": ("", "the stage is the command: alignkit pretrain | sft | reward | dpo | rl"),
    "rl": ("", "the stage is the command: alignkit dpo (method: dpo | kto | simpo | orpo) or alignkit rl"),
    # axolotl keys whose nearest alignkit key is another knob (`strict` -> data.streaming, `model_type` -> model)
    "strict": ("", "alignkit refuses unknown keys always: drop it"),
    "model_type": ("", "alignkit reads the architecture from the model's config: drop it"),
    "tokenizer_type": ("", "alignkit loads the model's own tokenizer: drop it"),
    "lora_model_dir": ("from_run", "the run whose adapter to go on from"),
    "pad_to_sequence_len": ("", "alignkit pads each batch to its longest row: drop it"),
    "lora_fan_in_fan_out": ("peft.fan_in_fan_out", ""),
    "group_by_length": ("trainer.train_sampling_strategy", "group_by_length"),
    "evals_per_epoch": ("trainer.eval_steps", "a number of steps, or below 1 a fraction of all steps"),
    "saves_per_epoch": ("trainer.save_steps", "a number of steps, or below 1 a fraction of all steps"),
    "overwrite_cache": ("", "alignkit keeps no prepared-dataset cache: drop it"),
    "dataset_prepared_path": ("", "alignkit keeps no prepared-dataset cache: drop it"),
    "dataset_dir": ("data.paths", "the files themselves"),
    "preprocessing_num_workers": ("trainer.dataset_num_proc", ""),
    "model_name_or_path": ("model.name", ""),
    "base_model": ("model.name", ""),
    "model_revision": ("model.revision", ""),
    "torch_dtype": ("model.precision", "auto | fp32 | bf16 | fp16"),
    "dtype": ("model.precision", "auto | fp32 | bf16 | fp16"),
    "bf16": ("model.precision", "bf16; `auto` picks it where the hardware runs it"),
    "fp16": ("model.precision", "fp16"),
    "flash_attention": ("model.attn_implementation", "flash_attention_2"),
    "flash_attn": ("model.attn_implementation", "flash_attention_2"),
    "load_in_4bit": ("model.quantization", "4bit"),
    "load_in_8bit": ("model.quantization", "8bit"),
    "quantization_bit": ("model.quantization", "4bit | 8bit"),
    "dataset_name": ("data.paths", ""),
    # TRL's ScriptArguments: a split of a save dir or hub set is named in its path (difflib: `data.validation_split`,
    # a share of rows, and `trainer.dataset_text_field`)
    "dataset_train_split": ("data.paths", "a split as DIR:SPLIT or NAME:SPLIT, e.g. ultrafeedback:train_prefs"),
    "dataset_test_split": ("data.validation_paths", "a split as DIR:SPLIT or NAME:SPLIT"),
    "datasets": ("data.paths", "a list of files or dirs"),
    "dataset": ("data.paths", "a list of files or dirs"),
    "val_set_size": ("data.validation_split", "a fraction or a number of rows"),
    "val_size": ("data.validation_split", "a fraction or a number of rows"),
    "max_samples": ("data.max_rows", ""),
    "output_dir": ("out", "the run directory"),
    "overwrite_output_dir": ("overwrite", ""),
    "use_peft": ("peft.method", "lora (the default) | full | dora | any peft type"),
    "adapter": ("peft.method", "lora; for qlora also model.quantization: 4bit"),
    "finetuning_type": ("peft.method", "lora | full | ..."),
    "lora_r": ("peft.r", ""),
    "lora_rank": ("peft.r", ""),
    "lora_alpha": ("peft.lora_alpha", ""),
    "lora_dropout": ("peft.lora_dropout", ""),
    "lora_target_modules": ("peft.target_modules", ""),
    "lora_target": ("peft.target_modules", "all-linear for every linear layer"),
    "lora_target_linear": ("peft.target_modules", "all-linear"),
    "lora_modules_to_save": ("peft.modules_to_save", ""),
    "use_dora": ("peft.method", "dora"),
    "use_rslora": ("peft.use_rslora", ""),
    "max_seq_length": ("trainer.max_length", ""),
    "sequence_len": ("trainer.max_length", ""),
    "cutoff_len": ("trainer.max_length", ""),
    "sample_packing": ("trainer.packing", ""),
    "micro_batch_size": ("trainer.per_device_train_batch_size", ""),
    "num_epochs": ("trainer.num_train_epochs", ""),
    "warmup_ratio": ("trainer.warmup_steps", "a value below 1 is a fraction of the steps"),
    "lr_scheduler": ("trainer.lr_scheduler_type", ""),
    "optimizer": ("trainer.optim", ""),
    "train_on_inputs": ("trainer.completion_only_loss", "false trains on the prompts too"),
    "train_on_prompt": ("trainer.completion_only_loss", "false trains on the prompts too"),
    "pref_beta": ("trainer.beta", "of `alignkit dpo`"),
    "beta": ("trainer.beta", "the KL weight of `alignkit dpo` and `alignkit rl`"),
    "template": (
        "",
        "alignkit renders with the model's own chat template; another as a Jinja file: trainer.chat_template_path",
    ),
    "chat_template": (
        "",
        "alignkit renders with the model's own chat template; another as a Jinja file: trainer.chat_template_path",
    ),
    "pref_loss": ("trainer.loss_type", "of `alignkit dpo`"),
    # shorthand people type for the common knobs (difflib's nearest: `epochs` -> data.paths, `rank` -> rank_pattern)
    "lr": ("trainer.learning_rate", ""),
    "epochs": ("trainer.num_train_epochs", ""),
    "batch_size": ("trainer.per_device_train_batch_size", ""),
    "steps": ("trainer.max_steps", ""),
    "rank": ("peft.r", ""),
    "alpha": ("peft.lora_alpha", ""),
    "wandb_project": ("trainer.report_to", "local trackers: tensorboard | trackio"),
}
STAGE_SECTIONS = ("model", "data", "peft", "trainer")


def flag_key(cls: type[Any], flag: str) -> tuple[str, str] | None:
    """The config key of stage config `cls` (and a note on its values) that another tool's command-line flag names:
    `--learning_rate` (TRL's) is `trainer.learning_rate`, `--lora_r` is `peft.r`, `--output_dir` is `out`; a key
    without a home has a note only. None where the flag names no key."""
    name = flag.lstrip("-").replace("-", "_")
    if name in FOREIGN_KEYS:
        return FOREIGN_KEYS[name]
    if name in {f.name for f in dataclasses.fields(cls)}:
        return name, ""
    sections = section_keys(dataclass_to_dict(cls()), typing.get_type_hints(cls), cls)
    return next(((f"{section}.{name}", "") for section, keys in sections.items() if name in keys), None)


def is_switch(cls: type[Any], key: str) -> bool:
    """Whether config key `key` of stage config `cls` (`trainer.gradient_checkpointing`, `data.streaming`) holds a
    boolean, so that another tool's bare flag for it (`--gradient_checkpointing`) means true."""
    section, _, name = key.rpartition(".")
    if section == "trainer":
        from transformers import TrainingArguments

        classes = [TrainingArguments, *map(config_class, getattr(cls, "TRAINER_CONFIGS", ()))]
    elif section == "peft":
        from peft import LoraConfig

        classes = [LoraConfig]  # the method flags from other tools name: LoRA's keys
    else:
        hint = typing.get_type_hints(cls).get(section) if section else cls
        classes = [hint] if dataclass_type(hint) else []
    for config in classes:
        try:
            hint = typing.get_type_hints(config).get(name)
        except Exception:  # a library's forward references that do not resolve here
            continue
        if hint is not None:
            return hint is bool or set(typing.get_args(hint)) == {bool, type(None)}
    return False


def unknown_key(
    dotted: str, names: list[str], where: str, prefix: str = "", sections: dict[str, list[str]] | None = None
) -> AlignkitError:
    """An unknown key, with the nearest valid one: a known key of another tool's config at its alignkit home
    (`FOREIGN_KEYS`), else the same key in one of `sections` (`section.key`), else the closest among `names` and the
    sections' keys."""
    leaf = dotted.rsplit(".", 1)[-1]
    candidates = [(prefix + name, name) for name in names]
    candidates += [(f"{section}.{key}", key) for section, keys in (sections or {}).items() for key in keys]
    close = difflib.get_close_matches(leaf, [key for _, key in candidates], n=1, cutoff=0.5)
    nearest = next((full for full, key in candidates if close and key == close[0]), None)
    hint = f"did you mean {spelled(nearest)}?" if nearest else f"valid keys: {', '.join(prefix + n for n in names)}"
    # at the top level of a stage's config or in one of its sections (not in the demo's config)
    in_stage = prefix.rstrip(".") in STAGE_SECTIONS if prefix else set(STAGE_SECTIONS) <= set(names)
    if leaf in FOREIGN_KEYS and in_stage:
        home, note = FOREIGN_KEYS[leaf]
        hint = f"did you mean {spelled(home)}?{f' ({note})' if note else ''}" if home else note
    return AlignkitError(f"{where}: unknown config key `{dotted}`", hint)


def check_keys(
    section: str,
    given: dict[str, Any],
    valid: list[str] | set[str],
    top_level: list[str] | None = None,
    config_cls: type[Any] | None = None,
) -> None:
    """Reject keys of a free-form section (`trainer`, `peft`) that the library's config class (`config_cls`) does not
    have; one of the stage's `top_level` keys (`trainer.method`) is named as that."""
    unknown = []
    for key in given:
        if key not in valid and key in (top_level or []):
            unknown.append(
                AlignkitError(
                    f"config: unknown config key `{section}.{key}`",
                    f"`{key}` is a top-level key: {option(key, Placeholder('...'))}",
                )
            )
        elif key not in valid:
            error = unknown_key(f"{section}.{key}", sorted(valid), "config", prefix=f"{section}.")
            if config_cls is not None and (error.hint or "").startswith("valid keys"):  # not a hundred and fifty keys
                library = config_cls.__module__.split(".")[0]
                error.hint = f"`{section}` takes the fields of {library}.{config_cls.__name__}"
            unknown.append(error)
    if unknown:
        raise unknown_keys(unknown, "config")


SIMPLE_TYPES = (int, float, bool, str, type(None))


def check_section(
    section: str, given: dict[str, Any], config_cls: type[Any], top_level: list[str] | None = None
) -> set[str]:
    """A free-form section (`trainer:`) checked against the library config class it is passed to: its keys against
    the class's init fields (`check_keys`), its values against their types (`check_types`). Returns those fields."""
    valid = {f.name for f in dataclasses.fields(config_cls) if f.init}
    check_keys(section, given, valid, top_level, config_cls)
    check_types(section, given, config_cls)
    return valid


def check_types(section: str, given: dict[str, Any], config_cls: type[Any]) -> None:
    """Check the values of a free-form section against the library dataclass's simple field types (int, float, bool,
    str, optional): `trainer.max_steps: ten` is an error here, not a crash mid-training."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # a library's forward references that do not resolve here: its own checks remain
        return
    for key, value in given.items():
        hint = hints.get(key)
        origin = typing.get_origin(hint)
        allowed = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
        if hint is not None and all(t in SIMPLE_TYPES for t in allowed):
            coerce(value, functools.reduce(operator.or_, allowed), f"{section}.{key}")


def build(cls: type[Any], tree: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a dict, checking value types; a wrong one is named by its dotted key."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        sub = dataclass_type(hints[f.name])
        value, dotted = tree[f.name], f"{prefix}{f.name}"
        kwargs[f.name] = build(sub, value, f"{dotted}.") if sub else coerce(value, hints[f.name], dotted)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, name: str) -> Any:
    """Check `value` against a simple type hint (int, float, bool, str, list, dict, optional). A `pathlib.Path` (the
    Python API) counts as the str it names, also in a list of paths: the config records paths as text."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    for typ in allowed:
        origin = typing.get_origin(typ) or typ
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is list and isinstance(value, str | list | tuple):
            items = [value] if isinstance(value, str) else list(value)
            if typing.get_args(typ) == (str,):
                return [coerce(item, str, f"{name}[{i}]") for i, item in enumerate(items)]
            return items
        if origin in (bool, str, dict) and isinstance(value, origin):
            return value
    expected = " or ".join("None" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
    raise AlignkitError(
        f"config: `{name}` must be {expected}, got {shown(value)}", table_hint(value, fixed(name, value))
    )


def fixed(name: str, value: Any) -> str:
    """The fix for a value of the wrong type at config key `name` (`data.paths[0]`): in a Python call the keyword to
    pass (a number given as text, as the number), else the config key or flag."""
    if not from_python():
        return f"fix `{name}` in the config or flags"
    key, _, index = name.partition("[")
    parsed = parse_value(value) if isinstance(value, str) else None
    example = parsed if isinstance(parsed, int | float) and not isinstance(parsed, bool) else Placeholder("...")
    return f"pass {option(key, [example] if index else example)}"


def dataclass_type(hint: Any) -> type[Any] | None:
    return hint if dataclasses.is_dataclass(hint) else None


def dataclass_to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(dataclass_to_dict(cfg), sort_keys=False)


@dataclass
class RewardStageConfig(TrainStageConfig):
    """`alignkit reward`: a reward model (sequence-classification head, own LoRA adapter) from preference pairs."""

    TRAINER_CONFIGS: ClassVar[tuple[str, ...]] = ("trl:RewardConfig",)

    use_margin: bool = True  # pass the data's `margin` column (annotator strength) to TRL's loss when present
    calibration_bins: int = 5  # bins of the held-out reliability table in metrics.json
    trainer: dict[str, Any] = field(default_factory=lambda: trainer_defaults(learning_rate=1e-4))


@dataclass
class DPOStageConfig(TrainStageConfig):
    """`alignkit dpo`: preference optimisation of an SFT policy: DPO (any `trainer.loss_type`), KTO, SimPO, ORPO."""

    TRAINER_CONFIGS: ClassVar[tuple[str, ...]] = (
        "trl:DPOConfig",
        "trl:KTOConfig",
        "trl.experimental.cpo:CPOConfig",
        "trl.experimental.orpo:ORPOConfig",
    )

    method: str = "dpo"  # dpo (pairs) | kto (unpaired rows, or pairs split in two) | simpo | orpo
    # Empty: keep training the parent run's adapter (reference = a frozen copy of it). A `peft:` section instead trains
    # a new adapter on the parent model merged in memory (reference = that model with the adapter disabled).
    peft: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=lambda: trainer_defaults(learning_rate=5e-5))
    # A prompt file with specs (`reference`, `must_contain`, `decline`; datasets/README.md), none of them trained on:
    # the policy's greedy answers to it are checked at the start, at each evaluation and at the end; the last step is
    # saved unless an earlier one, the parent included, passed more of them beyond chance (`CheckedPromptsCallback`).
    checked_prompts: str | None = None
    checked_max_new_tokens: int = 128

    def __post_init__(self) -> None:
        self.checked_prompts = local_path(self.checked_prompts) if self.checked_prompts else self.checked_prompts


@dataclass
class RLStageConfig(TrainStageConfig):
    """`alignkit rl`: online RL (GRPO, RLOO) of a policy run against a reward model and/or rule-based rewards."""

    TRAINER_CONFIGS: ClassVar[tuple[str, ...]] = ("trl:GRPOConfig", "trl:RLOOConfig")

    method: str = "grpo"  # grpo (trl.GRPOTrainer) | rloo (trl.RLOOTrainer)
    backend: str = "transformers"  # generation of completions: transformers | vllm (TRL's vLLM, colocated; CUDA)
    reward_run: str | None = None  # `--reward`: a finished `alignkit reward` run, the `reward_model` reward
    # Rewards, summed: `reward_model` and/or rules of judges.RULES (concise, verbose, ...). A mapping gives
    # weights, e.g. {reward_model: 1.0, concise: 0.1}. Empty: [reward_model].
    rewards: list[str] | dict[str, float] = field(default_factory=list)
    # Prompts files (rows with `prompt`, `instruction` or `messages`); empty: the bundled datasets/prompts.jsonl.
    data: DataConfig = field(default_factory=lambda: DataConfig(validation_split=0.0))
    # Empty: keep training the parent run's adapter (reference = a frozen copy of it, TRL's `ref` adapter). A `peft:`
    # section trains a new adapter on the parent merged in memory (reference = that model with the adapter disabled).
    peft: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(
        default_factory=lambda: {
            "learning_rate": 2e-5,
            "num_train_epochs": 1,
            "per_device_train_batch_size": 4,  # completions per step; a multiple of num_generations
            "num_generations": 4,
            "max_completion_length": 48,
            "beta": 0.04,  # KL penalty to the reference (the parent policy); > 0 also makes TRL log `kl`
            "disable_dropout": True,  # on-policy log-probs match the sampling policy; KL is 0 before the first update
            "logging_steps": 1,
            "eval_steps": 50,  # with held-out prompts (data.validation_split); checkpoints are saved as often
            "save_total_limit": 2,
        }
    )


# The config of each training command (`alignkit sft` ...), for what the command line checks before the stage runs.
STAGE_CONFIGS: dict[str, type[Any]] = {
    "pretrain": PretrainStageConfig,
    "sft": SFTStageConfig,
    "reward": RewardStageConfig,
    "dpo": DPOStageConfig,
    "rl": RLStageConfig,
}
