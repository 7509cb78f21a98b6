"""Runs describe themselves: config.yaml's `trainer:` holds every option passed to the TRL config (the method's
defaults and alignkit's additions included), so `--config <run>/config.yaml` builds the same trainer arguments; the
manifest records all of them and the peft config of the trained adapter."""

from __future__ import annotations

import pytest
import yaml

from alignkit import runs
from tests.conftest import CHAT_ROWS, run_cli, write_jsonl

PER_RUN = {"output_dir", "run_name"}  # derived from the run directory


def trained(*argv: str) -> runs.Run:
    done = run_cli(*argv)
    assert done.returncode == 0, f"alignkit {' '.join(argv)}: {done.stderr[-1500:]}"
    return runs.open_run(argv[argv.index("--out") + 1])


def trainer_section(run: runs.Run) -> dict:
    return yaml.safe_load((run.path / "config.yaml").read_text())["trainer"]


def same_arguments(first: runs.Run, second: runs.Run) -> None:
    one, two = first.manifest["trainer_args"], second.manifest["trainer_args"]
    assert {k: v for k, v in one.items() if k not in PER_RUN} == {k: v for k, v in two.items() if k not in PER_RUN}
    assert trainer_section(first) == trainer_section(second)
    assert first.manifest["peft_config"] == second.manifest["peft_config"]


def test_a_runs_config_yaml_reproduces_its_trainer_arguments(tiny_model, tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", pairs[:5])  # 4 to train on, 1 held out: one step sees all
    tiny = ["--max-steps", "1", "--set", "trainer.per_device_train_batch_size=4", "--set", "peft.r=4"]

    sft = trained("sft", "--data", str(chat), "--model", tiny_model, "--out", str(tmp_path / "sft"), *tiny)
    recorded = trainer_section(sft)
    # alignkit's own additions and the user's keys are in the file, not only the user's
    assert recorded["prediction_loss_only"] is True and recorded["max_steps"] == 1
    assert recorded["include_num_input_tokens_seen"] == "non_padding" and "output_dir" not in recorded
    assert sft.manifest["trainer_args"]["output_dir"] == "checkpoints"  # relative to the run dir
    assert sft.manifest["peft_config"]["r"] == 4 and sft.manifest["peft_config"]["peft_type"] == "LORA"
    again = trained("sft", "--config", str(sft.path / "config.yaml"), "--out", str(tmp_path / "sft-again"))
    same_arguments(sft, again)

    dpo = trained("dpo", "--from", str(sft.path), "--data", str(pairs_file), "--out", str(tmp_path / "dpo"),
                  "--max-steps", "1", "--set", "trainer.per_device_train_batch_size=4")  # fmt: skip
    assert trainer_section(dpo)["precompute_ref_log_probs"] is True  # the stage's default, chosen by its rule
    assert dpo.manifest["peft_config"] is None  # it continues the SFT adapter
    dpo_again = trained("dpo", "--config", str(dpo.path / "config.yaml"), "--out", str(tmp_path / "dpo-again"))
    same_arguments(dpo, dpo_again)


def test_a_runs_config_yaml_records_the_resolved_peft_section(tiny_model, tmp_path, monkeypatch):
    """config.yaml's `peft:` was only `method: lora`: rerun after the defaults changed, it trained another adapter."""
    import alignkit
    from alignkit import models

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    tiny = {"max_steps": 1, "per_device_train_batch_size": 4}
    first = alignkit.sft(data={"paths": [str(chat)]}, model={"name": tiny_model}, out=str(tmp_path / "a"), trainer=tiny)
    recorded = yaml.safe_load((first.path / "config.yaml").read_text())["peft"]
    assert recorded == {"method": "lora", **models.PEFT_DEFAULTS["lora"]}

    other_defaults = {"r": 2, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["q_proj"]}
    monkeypatch.setitem(models.PEFT_DEFAULTS, "lora", other_defaults)  # as a later alignkit might have them
    again = alignkit.sft(str(first.path / "config.yaml"), out=str(tmp_path / "b"))
    assert again.manifest["peft_config"] == first.manifest["peft_config"]
    assert again.manifest["peft_config"]["r"] == 16


def test_local_paths_in_a_config_are_recorded_absolute(tmp_path, monkeypatch):
    """The base model, data files and DPO's checked prompts, given relative to the working directory, are recorded
    absolute (a run's config.yaml then works from anywhere); names that are not local paths stay as given."""
    from alignkit.config import DPOStageConfig, load_config

    monkeypatch.chdir(tmp_path)
    for name in ("base", "pairs.jsonl", "checked.jsonl"):
        (tmp_path / name).mkdir() if name == "base" else (tmp_path / name).write_text("{}\n")
    cfg = load_config(
        DPOStageConfig,
        None,
        {
            "model": {"name": "base"},
            "data": {"paths": ["pairs.jsonl", "missing.jsonl"]},
            "checked_prompts": "checked.jsonl",
        },
        None,
    )
    assert cfg.model.name == str(tmp_path / "base")
    assert cfg.data.paths == [str(tmp_path / "pairs.jsonl"), "missing.jsonl"]
    assert cfg.checked_prompts == str(tmp_path / "checked.jsonl")
    assert load_config(DPOStageConfig, None, {"model": {"name": "org/hub-model"}}, None).model.name == "org/hub-model"


def test_a_seed_set_over_a_runs_config_yaml_seeds_the_trainer(tiny_model, tmp_path):
    """config.yaml recorded the trainer's seed beside the top-level `seed`: `--config RUN/config.yaml --set seed=7`
    recorded seed 7 in the manifest and trained with the old one."""
    import alignkit

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    tiny = {"max_steps": 1, "per_device_train_batch_size": 4}
    first = alignkit.sft(data={"paths": [str(chat)]}, model={"name": tiny_model}, out=str(tmp_path / "a"), trainer=tiny)
    again = alignkit.sft(str(first.path / "config.yaml"), ["seed=7"], out=str(tmp_path / "b"))
    assert again.manifest["seed"] == 7 and again.manifest["trainer_args"]["seed"] == 7
    pinned = alignkit.sft(str(first.path / "config.yaml"), ["trainer.seed=3"], out=str(tmp_path / "c"))
    assert pinned.manifest["trainer_args"]["seed"] == 3 and trainer_section(pinned)["seed"] == 3


def test_a_yaml_config_reads_1e_minus_4_as_the_float_it_is(tmp_path):
    """PyYAML reads `1e-4` (no dot) as a string, which failed as "must be float"; users write it that way."""
    from alignkit.config import SFTStageConfig, load_config

    config = tmp_path / "sft.yaml"
    config.write_text("data:\n  validation_split: 5e-2\ntrainer:\n  learning_rate: 1e-4\n")
    cfg = load_config(SFTStageConfig, config)
    assert cfg.trainer["learning_rate"] == 1e-4 and cfg.data.validation_split == 0.05
    assert load_config(SFTStageConfig, None, None, ["trainer.learning_rate=1e-4"]).trainer["learning_rate"] == 1e-4


def test_no_in_a_yaml_config_or_a_set_value_is_the_string_no_not_false(tmp_path):
    """YAML 1.1 reads `no` (and yes/on/off) as a boolean: `eval_strategy: no` of a TRL recipe, or `--set
    trainer.eval_strategy=no`, reached the Trainer as False ("False is not a valid IntervalStrategy")."""
    from alignkit.config import SFTStageConfig, load_config

    config = tmp_path / "sft.yaml"
    config.write_text("trainer:\n  eval_strategy: no\n  packing: true\n  push_to_hub: False\n")
    cfg = load_config(SFTStageConfig, config)
    assert cfg.trainer == {**SFTStageConfig().trainer, "eval_strategy": "no", "packing": True, "push_to_hub": False}
    flags = load_config(SFTStageConfig, None, None, ["trainer.eval_strategy=no", "trainer.packing=true"])
    assert flags.trainer["eval_strategy"] == "no" and flags.trainer["packing"] is True


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("no", {"eval_strategy": "no", "load_best_model_at_end": False, "eval_on_start": False}),
        ("epoch", {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True}),
    ],
)
def test_an_eval_strategy_set_alone_trains_with_the_keys_that_must_agree_with_it(
    strategy, expected, tmp_path, tiny_model
):
    """`trainer.eval_strategy: no` (TRL's recipes) or `epoch` was refused by the Trainer as not matching alignkit's
    save strategy ("--load_best_model_at_end requires the save and eval strategy to match"), keys the user never set."""
    import alignkit

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    tiny = {"max_steps": 2, "per_device_train_batch_size": 4, "eval_strategy": strategy}
    run = alignkit.sft(data={"paths": [str(chat)]}, model={"name": tiny_model}, out=str(tmp_path / "r"), trainer=tiny)
    args = run.manifest["trainer_args"]
    assert {key: args[key] for key in expected} == expected
    assert (run.path / "checkpoints" / "checkpoint-2").is_dir()  # saved, so the run can be resumed


def test_a_save_steps_set_alone_evaluates_at_each_save(tmp_path, tiny_model):
    """`--set trainer.save_steps=N` with the default eval_steps (50) not dividing it was refused by the Trainer
    ("--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation steps")."""
    import alignkit

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    tiny = {"max_steps": 3, "per_device_train_batch_size": 4, "save_steps": 2}
    run = alignkit.sft(data={"paths": [str(chat)]}, model={"name": tiny_model}, out=str(tmp_path / "r"), trainer=tiny)
    args = run.manifest["trainer_args"]
    assert (args["save_steps"], args["eval_steps"]) == (2, 2)
    assert (run.path / "checkpoints" / "checkpoint-2").is_dir()
