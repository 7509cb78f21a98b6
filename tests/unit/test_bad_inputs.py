"""Malformed inputs: one line naming file/row/field and the fix, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import alignkit
from alignkit import cli, runs
from alignkit.paths import file_sha256
from tests.conftest import CHAT_ROWS, TINY_TRAINER, build_tiny_model, run_cli, write_jsonl

BAD = Path(__file__).resolve().parent.parent / "data" / "bad"

# (file under tests/data/bad, extra args, substrings the one-line error must contain)
DATA_CASES = [
    ("bad_json_line.jsonl", "sft", ["bad_json_line.jsonl:line 3", "not valid JSON"]),
    ("cut_first_line.jsonl", "sft", ["cut_first_line.jsonl:line 1", "not valid JSON"]),
    ("misnamed_field.jsonl", "sft", ["misnamed_field.jsonl:line 2", "did you mean `messages`"]),
    ("unknown_role.jsonl", "sft", ["unknown_role.jsonl:line 3", "messages[1].role", "'bot'"]),
    ("no_assistant.jsonl", "sft", ["no_assistant.jsonl:line 1", "no assistant turn"]),
    ("empty.jsonl", "sft", ["empty.jsonl", "empty"]),
    ("latin1.jsonl", "sft", ["latin1.jsonl:line 2", "UTF-8"]),
    ("content_not_string.jsonl", "sft", ["line 1", "messages[1].content", "expected a string"]),
    ("alpaca_missing_output.json", "sft", ["alpaca_missing_output.json:item 1", "`output`: missing"]),
    ("extra_cells.csv", "sft", ["extra_cells.csv:line 3", "more cells"]),
    ("empty_assistant.jsonl", "sft", ["line 1", "messages[1].content", "empty"]),
    ("system_not_first.jsonl", "sft", ["line 1", "messages[1].role", "system message may only come first"]),
    ("not_an_object.jsonl", "sft", ["not_an_object.jsonl:line 2", "expected a JSON object"]),
    ("text_rows_for_sft.jsonl", "sft", ["line 1", "alignkit pretrain"]),
    ("sharegpt_bad_from.jsonl", "sft", ["line 1", "conversations[1].from", "'robot'"]),
    ("assistant_first.jsonl", "sft", ["line 1", "messages[0].role", "start with a user turn"]),
    ("truncated.parquet", "sft", ["truncated.parquet", "cannot read Parquet"]),
    ("unsupported.xml", "sft", ["unsupported.xml", "unsupported file type"]),
    ("not_a_list.json", "sft", ["not_a_list.json", "expected a JSON list"]),
    ("broken.json", "sft", ["broken.json:line 2", "not valid JSON"]),
    ("prompt_missing_completion.jsonl", "sft", ["line 2", "`completion`: missing"]),
    ("empty.jsonl", "pretrain", ["empty.jsonl", "empty"]),
    ("text_null.jsonl", "pretrain", ["text_null.jsonl:line 2", "field `text`: missing (it is null)"]),
    ("utf16.jsonl", "sft", ["utf16.jsonl:line 1", "UTF-8"]),
    ("messages_not_a_list.jsonl", "sft", ["line 1", "`messages`", "list of messages"]),
    ("message_missing_content.jsonl", "sft", ["line 1", "messages[1].content", "missing"]),
    ("missing_cell.tsv", "sft", ["missing_cell.tsv:line 3", "`output`: missing"]),
    ("pref_missing_rejected.jsonl", "reward", ["pref_missing_rejected.jsonl:line 2", "`rejected`: missing"]),
    ("pref_identical.jsonl", "reward", ["pref_identical.jsonl:line 1", "identical"]),
    ("pref_empty_chosen.jsonl", "reward", ["pref_empty_chosen.jsonl:line 2", "`chosen`: is empty"]),
    ("pref_empty_prompt.jsonl", "reward", ["line 1", "`prompt`: is empty"]),
    ("pref_chosen_not_text.jsonl", "reward", ["line 1", "`chosen`: expected a string, got int"]),
    ("pref_no_rejected_column.csv", "reward", ["pref_no_rejected_column.csv:line 2", "`rejected`: missing"]),
    ("unknown_role.jsonl", "reward", ["unknown_role.jsonl:line 1", "`chosen`: missing"]),
    ("kto_rows_for_pairs.jsonl", "reward", ["kto_rows_for_pairs.jsonl:line 1", "unpaired KTO row", "method=kto"]),
]

CONFIG_CASES = [
    ("unknown_key.yaml", ["unknown config key `trainer.learning_rat`", "did you mean `trainer.learning_rate`"]),
    ("unknown_section_key.yaml", ["unknown config key `model.nmae`", "did you mean `model.name`"]),
    ("top_level_trainer_key.yaml", ["unknown config key `learning_rat`", "did you mean `trainer.learning_rate`"]),
    ("wrong_type.yaml", ["validation_split", "must be float"]),
    ("bad_syntax.yaml", ["bad_syntax.yaml", "not valid YAML"]),
    ("unknown_peft.yaml", ["unknown peft.method `loraa`", "did you mean `lora`"]),
    ("unknown_peft_key.yaml", ["unknown config key `peft.rank`"]),
    ("negative_steps.yaml", ["trainer.max_steps must be positive or -1"]),
    ("negative_learning_rate.yaml", ["trainer.learning_rate must be positive", "-0.001"]),
    ("steps_not_a_number.yaml", ["`trainer.max_steps` must be int", "'ten'"]),
    ("section_not_a_mapping.yaml", ["`trainer` must be dict"]),
    ("config_not_a_mapping.yaml", ["config_not_a_mapping.yaml", "expected a mapping"]),
]


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the real console entry point in-process; returns (exit code, stderr)."""
    old = sys.argv
    sys.argv = ["alignkit", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        sys.argv = old
    return int(exit_info.value.code or 0), capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected: list[str]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("name", "stage", "expected"), DATA_CASES, ids=[f"{c[1]}-{c[0]}" for c in DATA_CASES])
def test_malformed_data_gives_one_line_error(name, stage, expected, tmp_path, capsys, tiny_model):
    out = tmp_path / "run"
    code, err = invoke([stage, "--data", str(BAD / name), "--model", tiny_model, "--out", str(out)], capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists(), "no run directory may be left behind by a rejected input"


@pytest.mark.parametrize(("name", "expected"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_gives_one_line_error(name, expected, tmp_path, capsys, chat_file, tiny_model):
    out = tmp_path / "run"
    argv = ["sft", "--config", str(BAD / name), "--data", str(chat_file), "--model", tiny_model, "--out", str(out)]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "model.nmae=x"], ["unknown config key `model.nmae`", "did you mean `model.name`"]),
        (["--set", "trainer.lerning_rate=1e-4"], ["`trainer.lerning_rate`", "did you mean `trainer.learning_rate`"]),
        (["--set", "learning_rate=1e-4"], ["unknown config key `learning_rate`", "`trainer.learning_rate`"]),
        (["--set", "novalue"], ["expected key=value"]),
        (["--max-steps", "0"], ["max_steps must be positive"]),
        (["--set", "trainer.learning_rate=-1"], ["learning_rate must be positive, got -1", "fix: set trainer."]),
        (["--set", "model.precision=fp64"], ["model.precision='fp64' is not one of", "fix: --set model.precision="]),
        (["--from", "does/not/exist"], ["does/not/exist: does not exist", "fix:"]),
        (["--model", "./no-such-model"], ["no-such-model", "not found"]),
        (["--model", "CHAT_FILE"], ["is a file, not a model"]),
        (["--data", "missing.jsonl"], ["missing.jsonl", "not found"]),
        (["--set", "peft.r=abc"], ["`peft.r` must be int", "'abc'"]),
        (["--set", "peft.lora_alpha=abc"], ["`peft.lora_alpha` must be int"]),
        (["--set", "peft.r=0"], ["peft.r must be at least 1"]),
        (["--set", "peft.target_modules=foo"], ["peft.target_modules matches no layer", "all-linear"]),
        (
            ["--set", "trainer.per_device_train_batch_size=0"],
            ["per_device_train_batch_size must be at least 1", "fix:"],
        ),
        (["--set", "trainer.gradient_accumulation_steps=0"], ["gradient_accumulation_steps must be at least 1"]),
        (["--set", "data.validation_split=2.5"], ["data.validation_split must be a fraction in [0, 1) or a whole"]),
        (["--set", "data.validation_split=-0.5"], ["data.validation_split must be a fraction"]),
        (["--set", "data.validation_split=half"], ["`data.validation_split` must be float, got 'half'"]),
        (["--set", "model.trust_remote_code=maybe"], ["`model.trust_remote_code` must be bool"]),
    ],
    ids=[
        *("set-typo", "trainer-typo", "trainer-key-at-top", "set-no-equals", "zero-steps", "negative-lr"),
        *("unknown-precision", "missing-from", "missing-model", "model-is-a-file", "missing-data"),
        *("peft-r-text", "peft-alpha-text", "peft-r-zero", "peft-target-none", "batch-zero", "accumulation-zero"),
        *("split-not-whole", "split-negative", "split-not-a-number", "model-option-type"),
    ],
)
def test_bad_flags_give_one_line_error(args, expected, tmp_path, capsys, chat_file, tiny_model):
    base = ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(tmp_path / "run")]
    if "--model" in args:
        base = base[:3] + base[5:]
        args = [str(chat_file) if a == "CHAT_FILE" else a for a in args]
    code, err = invoke(base + args, capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("stage", "key", "home"),
    [
        ("dpo", "beta", "trainer.beta"),  # was `trainer.adam_beta2`: TrainingArguments' nearest, another knob
        ("dpo", "loss_type", "trainer.loss_type"),
        ("dpo", "desirable_weight", "trainer.desirable_weight"),
        ("reward", "center_rewards_coefficient", "trainer.center_rewards_coefficient"),
        ("rl", "num_generations", "trainer.num_generations"),
        ("sft", "lora_r", "peft.r"),  # was `trainer.local_rank`
        ("sft", "use_peft", "peft.method"),  # was `trainer.use_cpu`
        ("sft", "model_name_or_path", "model.name"),
        ("sft", "output_dir", "out"),  # was `trainer.output_dir`: the checkpoints, not the run directory
        # axolotl and LLaMA-Factory configs
        ("sft", "lora_rank", "peft.r"),  # was `trainer.local_rank`
        ("sft", "max_samples", "data.max_rows"),  # was `trainer.max_steps`: another length of training
        ("sft", "micro_batch_size", "trainer.per_device_train_batch_size"),  # was `trainer.auto_find_batch_size`
        ("sft", "cutoff_len", "trainer.max_length"),  # was `trainer.hub_token`
        ("sft", "sequence_len", "trainer.max_length"),  # was no hint
        ("sft", "base_model", "model.name"),  # was `model`
        ("sft", "datasets", "data.paths"),  # was `trainer.dataset_kwargs`
        ("sft", "val_set_size", "data.validation_split"),  # was `trainer.eval_steps`
        ("sft", "load_in_4bit", "model.quantization"),  # was `trainer.logging_nan_inf_filter`
        ("sft", "torch_dtype", "model.precision"),  # was `trainer.torch_compile`
        ("sft", "finetuning_type", "peft.method"),  # was `trainer.learning_rate`
        ("sft", "lora_target", "peft.target_modules"),  # was `trainer.optim_target_modules`
        ("sft", "overwrite_output_dir", "overwrite"),  # was `trainer.output_dir`
        ("sft", "dataset_train_split", "data.paths"),  # was `data.validation_split`, a share of the rows
        ("sft", "dataset_test_split", "data.validation_paths"),  # was `trainer.dataset_text_field`
        ("sft", "group_by_length", "trainer.train_sampling_strategy"),  # was `trainer.max_length`
        ("sft", "saves_per_epoch", "trainer.save_steps"),  # was `trainer.save_on_each_node`
        ("sft", "lora_fan_in_fan_out", "peft.fan_in_fan_out"),  # was `trainer.logging_nan_inf_filter`
    ],
)
def test_a_top_level_key_is_suggested_where_it_belongs_not_as_another_knob(stage, key, home, tmp_path, capsys):
    """A misplaced key's hint named a different setting whose name looks alike; following it trained otherwise."""
    code, err = invoke([stage, "--set", f"{key}=1", "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, [f"unknown config key `{key}`", f"did you mean `{home}`?"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("peft.lora_r", "did you mean `peft.r`?"),  # was `peft.lora_dropout`
        ("trainer.lora_r", "did you mean `peft.r`?"),  # was `trainer.local_rank`
        ("trainer.cutoff_len", "did you mean `trainer.max_length`?"),  # was `trainer.hub_token`
        ("trainer.micro_batch_size", "did you mean `trainer.per_device_train_batch_size`?"),
        ("model.model_name_or_path", "did you mean `model.name`?"),  # was the list of model keys
        ("data.val_set_size", "did you mean `data.validation_split`?"),
        ("overwrite_cache", "no prepared-dataset cache"),  # was `overwrite`: it replaces the run directory
        ("stage", "the stage is the command"),  # was `trainer`
        ("beta", "the KL weight of `alignkit dpo` and `alignkit rl`"),  # was `trainer.adam_beta2`
        ("chat_template", "the model's own chat template"),  # was `trainer.chat_template_path`, a file path
        ("template", "trainer.chat_template_path"),  # LLaMA-Factory's template name
        ("strict", "alignkit refuses unknown keys always"),  # axolotl's; was `data.streaming`
        ("model_type", "architecture from the model's config"),  # axolotl's; was `model`
        ("rl", "the stage is the command: alignkit dpo"),  # axolotl's `rl: dpo`; was no hint
    ],
)
def test_another_tools_key_is_named_at_its_alignkit_home(key, hint, tmp_path, capsys, chat_file, tiny_model):
    """Keys of TRL, axolotl and LLaMA-Factory configs, at the top or inside a section, point to alignkit's key for
    the same setting, not to the key that looks most alike."""
    out = tmp_path / "run"
    argv = ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out), "--set", f"{key}=1"]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, [f"unknown config key `{key}`", hint])
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--learning_rate", "1e-4"], ["key `trainer.learning_rate`", "fix: --set trainer.learning_rate=1e-4"]),
        # a bare switch is on (was `=...`); a bare flag of another type asks for the value of the key it names
        (["--gradient_checkpointing"], ["fix: --set trainer.gradient_checkpointing=true"]),
        (["--lora_fan_in_fan_out"], ["key `peft.fan_in_fan_out`", "fix: --set peft.fan_in_fan_out=true"]),
        (["--skip_bad_rows"], ["key `data.skip_bad_rows`", "fix: --set data.skip_bad_rows=true"]),
        (["--gradient_checkpointing", "false"], ["fix: --set trainer.gradient_checkpointing=false"]),
        (
            ["--learning_rate"],
            ["fix: --set trainer.learning_rate=VALUE (--learning_rate was given no value", "`trainer.learning_rate`"],
        ),
        (["--num_train_epochs=2"], ["key `trainer.num_train_epochs`", "fix: --epochs 2"]),
        (["--per_device_train_batch_size", "2"], ["fix: --set trainer.per_device_train_batch_size=2"]),
        (["--dataset_name", "pairs.jsonl"], ["key `data.paths`", "fix: --data pairs.jsonl"]),
        (["--model_name_or_path", "Qwen/Qwen2.5-0.5B"], ["key `model.name`", "fix: --model Qwen/Qwen2.5-0.5B"]),
        (["--lora_r", "8"], ["key `peft.r`", "fix: --set peft.r=8"]),
        (["--output_dir", "x"], ["key `out`", "fix: --out ... (the run directory)"]),
        (["--bf16"], ["key `model.precision`", "fix: --set model.precision=... (bf16"]),
        (["--template", "qwen"], ["alignkit sft has no flag --template", "the model's own chat template"]),
        (["--max-step", "1"], ["alignkit sft has no flag --max-step", "did you mean --max-steps?"]),
    ],
    ids=lambda value: value[0] if isinstance(value, list) and value[0].startswith("--") else "",
)
def test_another_tools_flag_names_alignkit_key_with_the_value_given(args, expected, tmp_path, capsys):
    """TRL's CLI flags (`--learning_rate 1e-4`) gave click's usage box, `No such option`, without alignkit's key."""
    code, err = invoke(["sft", *args, "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, [f"alignkit sft has no flag {args[0].partition('=')[0]}", *expected])
    assert not (tmp_path / "run").exists()


def test_a_config_from_another_tool_gets_every_unknown_key_named_at_once(tmp_path, capsys, chat_file, tiny_model):
    """A TRL recipe or axolotl YAML took one rerun per unknown key: each error named only the first."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model_name_or_path: Qwen/Qwen2-0.5B\nlora_r: 8\nbogus_setting: 1\nnum_epochs: 3\n"
        "model:\n  torch_dtype: bfloat16\n"
        "trainer:\n  learning_rate: 1.0e-4\n  cutoff_len: 512\n  warmup_ratioo: 0.1\n"
    )
    out = tmp_path / "run"
    argv = ["sft", "--config", str(recipe), "--data", str(chat_file), "--model", tiny_model, "--out", str(out)]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, [
        f"{recipe}: 5 unknown config keys", "`model_name_or_path` (did you mean `model.name`?)",
        "`lora_r` (did you mean `peft.r`?)", "`bogus_setting`",
        "`num_epochs` (did you mean `trainer.num_train_epochs`?)",
        "`model.torch_dtype` (did you mean `model.precision`?",
    ])  # fmt: skip
    recipe.write_text("trainer:\n  learning_rate: 1.0e-4\n  cutoff_len: 512\n  warmup_ratioo: 0.1\n")
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, [
        "2 unknown config keys", "`trainer.cutoff_len` (did you mean `trainer.max_length`?)",
        "`trainer.warmup_ratioo` (did you mean `trainer.warmup_steps`?)",
    ])  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rounds", "0"], ["`rounds` must be at least 1, got 0", "fix: e.g. --set rounds=1"]),
        (["--set", "candidates=1"], ["`candidates` must be at least 2"]),
        (["--sft-steps", "-1"], ["`sft_steps` must be at least 1"]),
        (["--noise", "2"], ["`noise` is a probability (0 to 1), got 2.0"]),
        (["--rule", "nonsense"], ["unknown oracle rule 'nonsense'", "careful"]),
        (["--set", "dpo.betaa=0.2"], ["unknown config key `dpo.betaa`", "did you mean `dpo.beta`"]),
        (["--set", "reward.max_steps=ten"], ["`reward.max_steps` must be int", "'ten'"]),
        (["--set", "sft_peft.method=loraa"], ["unknown peft.method `loraa`"]),
        (["--set", "train_prompts=500"], ["no prompt left to evaluate", "train_prompts=500"]),
        (
            ["--set", "temperature=0"],
            ["demo: `temperature` 0 is greedy", "6 candidates of a prompt (`candidates`)", "--set temperature=0.8"],
        ),
    ],
    ids=[
        *("rounds-zero", "one-candidate", "sft-steps-negative", "noise-above-one", "unknown-rule", "dpo-key-typo"),
        *("reward-steps-text", "sft-peft-method", "nothing-held-out", "greedy-candidates"),
    ],
)
def test_bad_demo_settings_are_refused_before_any_training(args, expected, tmp_path, capsys, tiny_model, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")  # were it not refused: no server started, one error
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say {i}.", "reference": str(i)} for i in range(8)])
    out = tmp_path / "demo"
    argv = ["demo", "--model", tiny_model, "--out", str(out), "--set", f"prompts={prompts}", *args]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists(), "refused before anything is written"


def test_existing_output_is_not_clobbered(tmp_path, capsys, chat_file, tiny_model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, err = invoke(["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out)], capsys)
    assert_one_line_error(code, err, ["output directory exists", "--overwrite"])
    assert (out / "precious.txt").read_text() == "keep me"


def test_error_in_a_real_subprocess_has_no_traceback(tmp_path):
    result = run_cli("sft", "--data", str(BAD / "unknown_role.jsonl"), "--out", str(tmp_path / "run"))
    assert_one_line_error(result.returncode, result.stderr, ["unknown_role.jsonl:line 3", "'bot'"])


def test_export_of_a_directory_that_is_no_run_is_one_error(tmp_path, capsys):
    code, err = invoke(["export", str(tmp_path), "--out", str(tmp_path / "merged")], capsys)
    assert_one_line_error(code, err, ["not a run directory"])
    assert not (tmp_path / "merged").exists()


def test_a_run_copied_without_its_parent_says_so(tmp_path, capsys):
    """Its parent was reported as `not a run directory ... pass a directory under runs/`, a path the user never gave."""
    from alignkit import dashboard, runs

    copy = tmp_path / "shared" / "dpo"
    copy.mkdir(parents=True)
    lineage = [{"stage": "sft", "run": "../sft"}, {"stage": "dpo", "run": "."}]
    manifest = {"stage": "dpo", "status": "complete", "parent": "../sft", "lineage": lineage, "created": "x"}
    runs.write_json(copy / "manifest.json", manifest)
    code, err = invoke(["export", str(copy), "--out", str(tmp_path / "merged")], capsys)
    assert_one_line_error(code, err, [f"parent run ../sft of {copy} is missing", "fix: copy it alongside"])
    assert [row["status"] for row in dashboard.run_rows(copy.parent)] == ["parent missing"]


def test_runs_of_a_missing_directory_is_one_line_error(tmp_path):
    missing = run_cli("runs", "--dir", str(tmp_path / "nowhere"))
    assert_one_line_error(missing.returncode, missing.stderr, [f"--dir {tmp_path / 'nowhere'}: no such directory"])
    none_yet = run_cli("runs", cwd=tmp_path)  # the default runs/ before any run: nothing to list, not an error
    assert none_yet.returncode == 0 and "no runs in runs/" in none_yet.stderr


def test_runs_lists_a_run_whose_json_files_are_no_objects_as_broken(tmp_path):
    """A manifest.json or metrics.json holding a list (another file copied over it) was an AttributeError traceback;
    a broken run is listed with what is wrong with it (it was `broken` alone)."""
    complete = {"stage": "sft", "status": "complete", "lineage": [{"stage": "sft", "run": "."}], "created": "x"}
    for name, files in (
        ("a", {"manifest.json": "[]"}),
        ("b", {"manifest.json": json.dumps(complete), "metrics.json": "[1]"}),
        ("c", {"manifest.json": "{half"}),
    ):
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    listed = run_cli("runs", "--dir", str(tmp_path), "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert [(row["run"], row["status"], row["error"]) for row in json.loads(listed.stdout)] == [
        ("a", "broken", "manifest.json: expected a JSON object, got list"),
        ("b", "broken", "metrics.json: expected a JSON object, got list"),
        ("c", "broken", "manifest.json: not JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
         "(char 1))"),
    ]  # fmt: skip
    table = run_cli("runs", "--dir", str(tmp_path), env={"COLUMNS": "200"})
    assert "manifest.json: not JSON" in table.stdout, table.stdout


def test_shipped_configs_load():
    from alignkit.config import PretrainStageConfig, SFTStageConfig, load_config

    repo = Path(__file__).resolve().parent.parent.parent
    assert load_config(SFTStageConfig, repo / "configs" / "sft.yaml").peft["r"] == 16
    assert load_config(PretrainStageConfig, repo / "configs" / "pretrain.yaml").trainer["packing"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["feedback", "push", "--candidates", "CANDIDATES", "--dataset", "r1"],
        ["feedback", "pull", "--dataset", "r1", "--out", "OUT"],
        ["feedback", "users", "list"],
        ["feedback", "users", "add", "alice", "--password-file", "PASSWORD"],
        ["feedback", "simulate", "--dataset", "r1", "--annotator", "alice:alice-password"],
        ["feedback", "review", "pull", "--dataset", "r1", "--out", "OUT"],
    ],
    ids=["push", "pull", "users-list", "users-add", "simulate", "review-pull"],
)
def test_every_feedback_command_reports_unreachable_argilla_in_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARGILLA_API_KEY", "owner-api-key")
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text('{"prompt": "Hi", "candidates": [{"text": "Hello"}, {"text": "Hey"}]}\n')
    (tmp_path / "password.txt").write_text("alice-password\n")
    argv = [
        a.replace("CANDIDATES", str(candidates))
        .replace("OUT", str(tmp_path / "out.jsonl"))
        .replace("PASSWORD", str(tmp_path / "password.txt"))
        for a in argv
    ]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["Argilla at http://127.0.0.1:9 is unreachable"])
    assert not (tmp_path / "out.jsonl").exists()


# -- inputs generated at test time (binary, huge, or built from the tiny model) ---------------------------------------


def sft_argv(data: Path, model: str, out: Path, *extra: str) -> list[str]:
    return ["sft", "--data", str(data), "--model", model, "--out", str(out), *extra]


def test_huge_cut_off_row_is_named_without_loading_a_model(tmp_path, capsys, tiny_model):
    data = tmp_path / "huge.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n')
        f.write('{"messages": [{"role": "user", "content": "' + "x" * (16 << 20))  # 16 MB, never closed
    out = tmp_path / "run"
    code, err = invoke(sft_argv(data, tiny_model, out), capsys)
    assert_one_line_error(code, err, ["huge.jsonl:line 2", "not valid JSON"])
    assert len(err) < 1000, "the error quotes no megabytes of the row"
    assert not out.exists()


def long_or_short_row(stage: str, question: str) -> dict:
    if stage == "sft":
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "Yes."}]}
    return {"prompt": question, "chosen": "Yes, it is.", "rejected": "No."}


@pytest.mark.parametrize("stage", ["sft", "dpo", "reward"])
def test_examples_too_long_for_max_length_are_counted_and_said(stage, tmp_path, capsys, chat_file, tiny_model):
    """TRL drops them while preparing the data (SFT: the answer starts past `max_length`; DPO: the prompt fills it;
    reward: the pair is longer); they once went without a word, and a file of nothing else crashed in the sampler."""

    long = " ".join(["word"] * 400)
    short_rows = [long_or_short_row(stage, f"Is {i} short?") for i in range(4)]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [*short_rows, long_or_short_row(stage, long)])
    only_long = write_jsonl(tmp_path / "long.jsonl", [long_or_short_row(stage, f"{long} {i}") for i in range(3)])
    source = ["--model", tiny_model]
    if stage == "dpo":
        sft = alignkit.sft(
            data={"paths": [str(chat_file)]},
            model={"name": tiny_model},
            out=str(tmp_path / "sft"),
            trainer={"max_steps": 1},
        )
        source = ["--from", str(sft.path)]
    settings = ["--set", "trainer.max_length=64", "--set", "data.validation_split=0", "--max-steps", "1"]

    code, err = invoke([stage, "--data", str(only_long), *source, "--out", str(tmp_path / "none"), *settings], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]  # DPO's refusal comes once its parent loaded
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert "every training example is too long for trainer.max_length=64" in errors[0]
    assert not (tmp_path / "none").exists()

    out = tmp_path / "run"
    done = run_cli(stage, "--data", str(mixed), *source, "--out", str(out), *settings)  # the terminal, as users see it
    assert done.returncode == 0, done.stderr
    assert "warning: 1 of 5 train examples are too long for trainer.max_length=64" in " ".join(done.stderr.split())
    assert json.loads((out / "metrics.json").read_text())["examples_too_long"] == {"train": 1}


def cut_row(stage: str, long: str) -> dict:
    """A row whose trained part starts inside `max_length` and ends past it (`keep_end`: whose context starts before
    the last `max_length` tokens)."""
    turn = [{"role": "user", "content": "Is it short?"}]
    if stage == "dpo":  # the two answers differ only past the cut
        return {"prompt": "Is it short?", "chosen": f"{long} yes", "rejected": f"{long} no"}
    if stage == "dpo-keep-end":  # a prompt filling max_length: dropped with keep_start, its start cut with keep_end
        return {"prompt": long, "chosen": "Yes, it is.", "rejected": "No."}
    if stage == "kto":
        return {"prompt": "Is it short?", "completion": long, "label": True}
    if stage == "sft-keep-end":
        return {"messages": [{"role": "user", "content": long}, {"role": "assistant", "content": "Yes."}]}
    if stage == "sft-multi-turn":  # the first reply fits, the last (the final answer) does not
        turn += [{"role": "assistant", "content": "Yes."}, {"role": "user", "content": "Sure?"}]
    return {"messages": [*turn, {"role": "assistant", "content": long}]}


# stage -> (the run's method and trainer settings, what its warning names, what it says is lost)
CUT_CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "sft": ({}, "examples", "no EOS"),
    "sft-multi-turn": ({}, "examples", "no EOS"),
    "sft-keep-end": ({"truncation_mode": "keep_end"}, "examples", "their starts are lost"),
    "dpo": ({}, "pairs", "their ends are not compared"),
    "dpo-keep-end": ({"truncation_mode": "keep_end"}, "pairs", "the starts of their prompts are lost"),
    "kto": ({"method": "kto"}, "completions", "the end of each completion is not trained"),
}


@pytest.mark.parametrize("stage", list(CUT_CASES))
def test_examples_cut_at_max_length_are_counted_and_said(stage, tmp_path, chat_file, tiny_model):
    """TRL keeps an example whose trained part starts inside `max_length` and cuts the rest: an SFT answer without
    its end (no EOS trained: the model never learns to stop), a conversation without its final answer, a DPO pair
    compared on its starts only (the same after the cut here), a KTO completion without its end; with
    `truncation_mode: keep_end`, an SFT conversation or a DPO prompt without its start. It went without a word."""
    settings, kind, lost = CUT_CASES[stage]
    method = {"method": settings.pop("method")} if "method" in settings else {}
    long = " ".join(["word"] * 200)
    preference = stage.startswith(("dpo", "kto"))
    shorts = [long_or_short_row("dpo" if preference else "sft", f"Is {i} short?") for i in range(4)]
    if stage == "kto":
        shorts = [{"prompt": f"Is {i} short?", "completion": "Yes.", "label": i % 2 == 0} for i in range(4)]
    rows = write_jsonl(tmp_path / "rows.jsonl", [*shorts, cut_row(stage, long)])
    source: dict[str, Any] = {"model": {"name": tiny_model}}
    train = alignkit.sft
    if preference:
        parent = alignkit.sft(
            data={"paths": [str(chat_file)]}, out=str(tmp_path / "sft"), trainer={"max_steps": 1}, **source
        )
        source, train = {"from_run": str(parent.path), **method}, alignkit.dpo
    said: list[str] = []
    keep = logging.Handler(logging.WARNING)
    keep.emit = lambda record: said.append(record.getMessage()) if "are cut at" in record.getMessage() else None
    own = logging.getLogger("alignkit")  # it does not propagate: a handler of its own hears its terminal warnings
    own.addHandler(keep)
    try:
        run = train(
            data={"paths": [str(rows)], "validation_split": 0},
            out=str(tmp_path / "run"),
            trainer={"max_steps": 1, "max_length": 64, **settings},
            **source,
        )
    finally:
        own.removeHandler(keep)
    assert len(said) == 1 and f"1 of 5 train {kind} are cut at trainer.max_length=64 tokens" in said[0], said
    assert lost in said[0] and "trainer={'max_length': N}" in said[0]  # a Python call: its keyword
    if stage == "dpo":
        assert "1 of them are the same after the cut and train nothing" in said[0]
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["examples_cut"] == {"train": 1} and "examples_too_long" not in metrics


def test_truncated_gguf_is_one_line_error(tmp_path, capsys, chat_file, monkeypatch):
    from alignkit import models

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    truncated = tmp_path / "model.gguf"
    with open(models.embedded_gguf(), "rb") as f:
        truncated.write_bytes(f.read(64 << 10))  # the real header, then nothing
    out = tmp_path / "run"
    code, err = invoke(sft_argv(chat_file, str(truncated), out), capsys)
    assert_one_line_error(code, err, ["model.gguf", "cannot read GGUF", "is the file complete?"])
    assert not out.exists()
    assert not list((tmp_path / "cache").glob("models/*")), "no half-converted model is cached"


def copy_model(tiny_model: str, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    dest.mkdir()
    for file in Path(tiny_model).iterdir():
        if not file.name.startswith(skip):
            shutil.copy(file, dest / file.name)
    return dest


def test_model_dir_without_tokenizer_fails_before_the_run_dir_exists(tmp_path, capsys, chat_file, tiny_model):
    model = copy_model(tiny_model, tmp_path / "no-tokenizer", skip=("tokenizer", "special_tokens", "chat_template"))
    out = tmp_path / "run"
    code, err = invoke(sft_argv(chat_file, str(model), out), capsys)
    assert_one_line_error(code, err, ["no-tokenizer", "no tokenizer files"])
    assert not out.exists()


def test_model_dir_with_broken_config_is_one_line_error(tmp_path, capsys, chat_file, tiny_model):
    model = copy_model(tiny_model, tmp_path / "broken-config")
    (model / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    code, err = invoke(sft_argv(chat_file, str(model), tmp_path / "run"), capsys)
    assert_one_line_error(code, err, ["broken-config", "cannot read config.json"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ('{"stage": "sft", "status": "running", "lineage": []}', ["run did not finish", "--resume --out"]),
        ('{"stage": "sft", "status": "comp', ["manifest.json: unreadable"]),
        ("[]", ["manifest.json: unreadable"]),
        (None, ["not a run directory (no manifest.json)"]),
    ],
    ids=["still-running", "half-written-manifest", "manifest-not-an-object", "no-manifest"],
)
def test_from_a_half_written_run_is_one_line_error(manifest, expected, tmp_path, capsys, chat_file, tiny_model):
    parent = tmp_path / "parent"
    (parent / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    if manifest is not None:
        (parent / "manifest.json").write_text(manifest)
    out = tmp_path / "run"
    code, err = invoke(sft_argv(chat_file, tiny_model, out, "--from", str(parent)), capsys)
    assert_one_line_error(code, err, [str(parent), *expected])
    assert not out.exists()


def test_resume_of_a_complete_or_missing_run_is_one_line_error(tmp_path, capsys):
    done = tmp_path / "done"
    done.mkdir()
    (done / "manifest.json").write_text('{"stage": "sft", "status": "complete"}')
    code, err = invoke(["sft", "--resume", "--out", str(done)], capsys)
    assert_one_line_error(code, err, ["already complete"])
    code, err = invoke(["sft", "--resume", "--out", str(tmp_path / "nothing")], capsys)
    assert_one_line_error(code, err, ["no run to resume here"])


def test_overwrite_with_bad_input_keeps_what_was_there(tmp_path, capsys, tiny_model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text('{"stage": "sft", "status": "complete"}')  # an earlier run
    (out / "precious.txt").write_text("keep me")
    argv = sft_argv(BAD / "unknown_role.jsonl", tiny_model, out, "--overwrite")
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["unknown_role.jsonl:line 3"])
    assert (out / "precious.txt").read_text() == "keep me", "--overwrite replaces only once the input is valid"


def pulled_pairs(dataset: str, round_number: int, prompts: range) -> list[dict[str, Any]]:
    """Pairs as `feedback pull` writes them: one per record of `dataset`."""
    return [
        {
            "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
            "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
            "rejected": [{"role": "assistant", "content": "No idea."}],
            "dataset": dataset,
            "record_id": f"r{round_number}-prompt{i}-0badc0de",
        }
        for i in prompts
    ]


@pytest.mark.parametrize(
    ("stage", "files", "expected"),
    [
        ("reward", ["round-1", "round-1"], ["round-1.jsonl: given twice as --data", "train twice"]),
        ("dpo", ["round-1", "every-round"], ["every-round.jsonl:line 1", "also at", "round-1.jsonl:line 1"]),
        ("reward", ["round-1", "round-2", "round-1-pulled-again"], ["round-1-pulled-again.jsonl:line 1", "also at"]),
        ("dpo --set method=kto", ["every-round", "round-2"], ["round-2.jsonl:line 1", "every-round.jsonl:line 4"]),
    ],
)
def test_pairs_given_twice_are_refused_before_any_run(stage, files, expected, tmp_path, capsys, policy_and_reward):
    """Round 1's pairs with a file of every round's pairs (the demo's `pairs-round-2.jsonl`), or one file twice,
    trained round 1's votes twice without a word, and the manifest listed the twice-given file once."""
    write_jsonl(tmp_path / "round-1.jsonl", pulled_pairs("round-1", 1, range(3)))
    write_jsonl(tmp_path / "round-2.jsonl", pulled_pairs("round-2", 2, range(3, 6)))
    write_jsonl(
        tmp_path / "every-round.jsonl", pulled_pairs("round-1", 1, range(3)) + pulled_pairs("round-2", 2, range(3, 6))
    )
    flipped = [
        pair | {"chosen": pair["rejected"], "rejected": pair["chosen"]} for pair in pulled_pairs("round-1", 1, range(3))
    ]
    write_jsonl(tmp_path / "round-1-pulled-again.jsonl", flipped)  # more ratings turned the majority
    out = tmp_path / "run"
    data = [arg for name in files for arg in ("--data", str(tmp_path / f"{name}.jsonl"))]
    parent = ["--from", policy_and_reward[0]]
    code, err = invoke([*stage.split(), *data, *parent, "--out", str(out)], capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


def test_the_same_record_rated_in_two_datasets_and_a_validation_file_given_for_training(tmp_path, capsys, tiny_model):
    """The same candidates pushed to two datasets (two teams) are two ratings, not one pulled twice; a training file
    given as the validation file too is refused (a validation loss on trained rows)."""
    from alignkit.data import preferences

    team_a = write_jsonl(tmp_path / "team-a.jsonl", pulled_pairs("team-a", 1, range(3)))
    team_b = write_jsonl(tmp_path / "team-b.jsonl", pulled_pairs("team-b", 1, range(3)))
    assert len(preferences.load_preferences([str(team_a), str(team_b)])) == 6
    argv = ["reward", "--data", str(team_a), "--set", f"data.validation_paths=[{team_a}]", "--model", tiny_model]
    code, err = invoke([*argv, "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, ["team-a.jsonl: given as --data and as data.validation_paths"])
    assert not (tmp_path / "run").exists()


def test_overwrite_replaces_a_run_never_a_folder_of_other_things(tmp_path, capsys, chat_file, tiny_model):
    """`--out runs --overwrite` once deleted every run in `runs/`; a data folder or a model dir went the same way."""
    runs_dir = tmp_path / "runs"
    (runs_dir / "sft-earlier").mkdir(parents=True)
    (runs_dir / "sft-earlier" / "manifest.json").write_text('{"stage": "sft", "status": "complete"}')
    for out in (runs_dir, chat_file.parent, Path(tiny_model)):
        before = sorted(p.name for p in out.iterdir())
        code, err = invoke(sft_argv(chat_file, tiny_model, out, "--overwrite", "--max-steps", "1"), capsys)
        assert_one_line_error(code, err, [str(out), "is not a run directory (no manifest.json)", "another --out"])
        assert sorted(p.name for p in out.iterdir()) == before

    model_dir = tmp_path / "merged"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    code, err = invoke(["export", str(runs_dir / "sft-earlier"), "--out", str(model_dir), "--overwrite"], capsys)
    assert_one_line_error(code, err, ["is not an exported model (no alignkit-export.json)"])
    assert (model_dir / "config.json").read_text() == "{}"


@pytest.mark.parametrize("command", ["generate", "feedback"])
def test_output_file_that_is_a_directory_is_refused_before_any_work(command, tmp_path, capsys, tiny_model):
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "keep.txt").write_text("keep me")
    prompts = str(Path(__file__).resolve().parents[2] / "datasets" / "prompts.jsonl")
    pull = ["feedback", "pull", "--dataset", "round-1"]
    args = ["generate", "--prompts", prompts, "--model", tiny_model] if command == "generate" else pull
    code, err = invoke([*args, "--out", str(out), "--overwrite"], capsys)
    assert_one_line_error(code, err, ["is a directory, not an output file"])
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_corpus_has_thirty_plus_files():
    assert len(list(BAD.iterdir())) >= 30


@pytest.mark.parametrize("command", ["generate", "synth"])
def test_existing_output_file_is_not_clobbered(command, tmp_path, capsys, tiny_model):
    out = tmp_path / "candidates.jsonl"
    out.write_text("precious\n")
    prompts = str(Path(__file__).resolve().parents[2] / "datasets" / "prompts.jsonl")
    source = ["--prompts", prompts] if command == "generate" else ["--seeds", prompts]
    code, err = invoke([command, *source, "--model", tiny_model, "--out", str(out)], capsys)
    assert_one_line_error(code, err, ["output file exists", "--overwrite"])
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--top-p", "0"], ["`top_p` must be in (0, 1], got 0.0", "fix: e.g. --top-p 0.95"]),
        (["--top-p", "1.5"], ["`top_p` must be in (0, 1], got 1.5"]),
        (["--temperature", "-1"], ["`temperature` must be at least 0 (0: greedy), got -1.0"]),
        (["--max-new-tokens", "0"], ["`max_new_tokens` must be at least 1, got 0"]),
    ],
    ids=["top-p-zero", "top-p-above-one", "temperature-negative", "no-new-tokens"],
)
def test_out_of_range_sampling_is_one_line_error_and_no_file(args, expected, tmp_path, capsys, tiny_model):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}])
    out = tmp_path / "candidates.jsonl"
    code, err = invoke(["generate", "--prompts", str(prompts), "--model", tiny_model, "--out", str(out), *args], capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("generate", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ("generate", ["--limit", "-1"], "--limit must be at least 1, got -1"),
        ("generate", ["--limit", "0"], "--limit must be at least 1, got 0"),
        ("synth", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        ("synth", ["--shots", "0"], "--shots must be at least 1, got 0"),
        ("synth", ["--max-attempts", "0"], "--max-attempts must be at least 1, got 0"),
    ],
    ids=[
        "generate-batch-0",
        "generate-limit-negative",
        "generate-limit-0",
        "synth-batch-0",
        "synth-shots-0",
        "synth-attempts-0",
    ],
)
def test_a_count_below_one_is_one_line_error_and_no_file(command, args, expected, tmp_path, capsys, tiny_model):
    """Before: a traceback (generate --batch-size 0, synth --shots 0/-1 or --batch-size 0), prompts silently dropped
    (generate --limit -1 wrote all but the last one) or an empty file (--limit 0)."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": "Name a color."}])
    out = tmp_path / "out.jsonl"
    source = "--prompts" if command == "generate" else "--seeds"
    code, err = invoke([command, source, str(prompts), "--model", tiny_model, "--out", str(out), *args], capsys)
    assert_one_line_error(code, err, [expected])
    assert not out.exists()


# -- runs given to the commands that use a policy ---------------------------------------------------------------------

PROMPTS = str(Path(__file__).resolve().parents[2] / "datasets" / "prompts.jsonl")


@pytest.fixture(scope="module")
def policy_and_reward(tmp_path_factory, tiny_model):
    """A one-step SFT run and a one-step reward run on it: (sft path, reward path)."""
    root = tmp_path_factory.mktemp("policy-and-reward")
    chats = write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": rejected} for r in CHAT_ROWS]
    write_jsonl(root / "pairs.jsonl", pairs)
    tiny = {"max_steps": 1, "per_device_train_batch_size": 4}
    sft = alignkit.sft(data={"paths": [str(chats)]}, model={"name": tiny_model}, out=str(root / "sft"), trainer=tiny)
    reward = alignkit.reward(
        data={"paths": [str(root / "pairs.jsonl")]}, from_run=str(sft.path), out=str(root / "reward"), trainer=tiny
    )
    return str(sft.path), str(reward.path)


def policy_argv(command: str, run: str, out: Path) -> list[str]:
    """`command` started from `run` as its policy, writing to `out`."""
    return {
        "generate": ["generate", "--prompts", PROMPTS, "--from", run],
        "synth": ["synth", "--seeds", PROMPTS, "--from", run],
        "eval": ["eval", "--runs", run],
    }[command] + ["--out", str(out)]


@pytest.mark.parametrize("command", ["generate", "synth", "eval"])
def test_a_reward_run_is_refused_as_a_policy(command, policy_and_reward, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = invoke(policy_argv(command, policy_and_reward[1], out), capsys)
    flag = "--runs" if command == "eval" else "--from"
    assert_one_line_error(code, err, ["is a reward model, not a policy", f"pass {flag} an sft (or dpo) run"])
    assert not out.exists()


@pytest.mark.parametrize("command", ["generate", "synth"])
def test_model_other_than_the_runs_base_is_refused(command, policy_and_reward, tmp_path, capsys):
    other = build_tiny_model(tmp_path / "other-model", initializer_range=0.5)  # same shapes, other weights
    capsys.readouterr()  # its save's progress bar
    out = tmp_path / "out.jsonl"
    code, err = invoke([*policy_argv(command, policy_and_reward[0], out), "--model", str(other)], capsys)
    assert_one_line_error(code, err, [f"--model {other} is another model than the base of", "drop --model"])
    assert not out.exists()


def test_model_that_is_the_runs_base_is_accepted(policy_and_reward, tmp_path, capsys, tiny_model):
    out = tmp_path / "out.jsonl"
    argv = [*policy_argv("generate", policy_and_reward[0], out), "--model", tiny_model, "--limit", "1", "--n", "1"]
    code, err = invoke([*argv, "--max-new-tokens", "4"], capsys)
    assert code == 0, err
    assert json.loads(out.read_text().splitlines()[0])["candidates"][0]["model"] == tiny_model


def test_the_same_run_twice_in_eval_is_refused(policy_and_reward, tmp_path, capsys):
    sft = Path(policy_and_reward[0])
    out = tmp_path / "eval"
    again = str(sft.parent / ".." / sft.parent.name / sft.name)  # another spelling of the same directory
    code, err = invoke(["eval", "--runs", str(sft), "--runs", again, "--out", str(out)], capsys)
    assert_one_line_error(code, err, [again, "passed to --runs twice", "pass each run once"])
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["eval", "--runs", "RUN", "--prompts", "MISSING"], "--prompts"),
        (["generate", "--prompts", "MISSING"], "--prompts"),
        (["synth", "--seeds", "MISSING"], "--seeds"),
        (["eval", "--runs", "RUN", "--prompts", PROMPTS, "--general", "MISSING"], "--general"),
    ],
    ids=["eval", "generate", "synth", "eval-general"],
)
def test_a_missing_file_names_the_flag_that_passed_it(argv, flag, policy_and_reward, tmp_path, capsys):
    missing, out = str(tmp_path / "nonexist.jsonl"), tmp_path / "out"
    argv = [a.replace("MISSING", missing).replace("RUN", policy_and_reward[0]) for a in argv]
    code, err = invoke([*argv, "--out", str(out)], capsys)
    assert_one_line_error(code, err, [missing, "not found", f"check the path passed to {flag}"])
    assert not out.exists()


def command_options() -> dict[str, dict[str, Any]]:
    """Every CLI command (`feedback pull`, ...) -> its options by flag."""
    import typer

    found = {}

    def walk(command: Any, name: str) -> None:
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{name} {sub_name}".strip())
        if not hasattr(command, "commands"):
            found[name] = {flag: p for p in command.params if p.param_type_name == "option" for flag in p.opts}

    walk(typer.main.get_command(cli.app), "")
    return found


FILE_OUTPUTS = {"generate", "synth", "feedback pull", "feedback review pull"}  # --out is a file, not a directory


def test_every_option_has_help_and_overwrite_names_what_out_is():
    for command, options in command_options().items():
        assert not [flag for flag, option in options.items() if not option.help], command
        if "--overwrite" in options:
            says = options["--overwrite"].help
            assert ("file" in says) == (command in FILE_OUTPUTS), (command, says)


def test_a_trainer_precision_flag_against_the_models_precision_is_refused(tmp_path, capsys, chat_file, tiny_model):
    """`trainer.bf16` beside another `model.precision` trained in one precision and recorded the other (or, on a CPU,
    ended in transformers' error naming neither key); a flag that agrees, as in TRL recipes, trains."""
    argv = ["sft", "--data", str(chat_file), "--model", tiny_model, "--max-steps", "1", *TINY_TRAINER]
    for flag in ("bf16", "fp16"):
        out = tmp_path / f"refused-{flag}"
        code, err = invoke([*argv, "--out", str(out), "--set", "model.precision=fp32", "--set", f"trainer.{flag}=true"],
                           capsys)  # fmt: skip
        assert_one_line_error(code, err, [f"trainer.{flag}=True, but the model loads in float32", "model.precision"])
        assert not out.exists()
    out = tmp_path / "agrees"
    code, err = invoke(
        [*argv, "--out", str(out), "--set", "model.precision=bf16", "--set", "trainer.bf16=true"], capsys
    )
    assert code == 0, err
    assert runs.Run(out).manifest["precision"] == "bfloat16"


@pytest.mark.parametrize(
    ("setting", "home"),
    [
        ('trainer.model_init_kwargs={"dtype": "float16"}', "model.precision"),
        ("trainer.trust_remote_code=true", "model.trust_remote_code"),
    ],
)
def test_a_trainer_key_for_loading_the_model_is_refused_not_ignored(setting, home, tmp_path, capsys, tiny_model):
    """TRL reads `model_init_kwargs` and `trust_remote_code` only when it loads the model from a name; alignkit hands
    it the model, so the run trained without them (a warning in log.txt) and its config.yaml recorded them."""
    rejected = [{"role": "assistant", "content": "No idea."}]
    pairs = [{"prompt": row["messages"][:1], "chosen": row["messages"][1:], "rejected": rejected} for row in CHAT_ROWS]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "run"
    argv = ["reward", "--data", str(data), "--model", tiny_model, "--out", str(out), "--set", setting]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, [f"trainer.{setting.split('=')[0].split('.')[1]} is not used", home])
    assert not out.exists()


def test_a_top_level_key_put_under_trainer_is_named_as_top_level(tmp_path, capsys, chat_file, tiny_model):
    """`trainer.early_stopping_patience` was answered with the nearest TRL field's name, not with where it goes."""
    argv = ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(tmp_path / "run")]
    code, err = invoke([*argv, "--set", "trainer.early_stopping_patience=2"], capsys)
    assert_one_line_error(code, err, ["`trainer.early_stopping_patience`", "`early_stopping_patience` is a top-level"])
    assert not (tmp_path / "run").exists()


def test_the_demo_replaces_an_earlier_demos_outputs_and_refuses_a_folder_of_other_things(tmp_path, capsys, tiny_model):
    from alignkit import demo

    # an earlier demo (two rounds) with the user's own run and the reused SFT run beside its outputs
    earlier = tmp_path / "demo"
    for name in ("sft", "reward", "dpo", "dpo-round-2", "eval", "argilla", "mine", "reused/sft"):
        (earlier / name).mkdir(parents=True)
    for name in ("report.json", "train_prompts.jsonl", "candidates-round-2.jsonl", "pairs-best-worst.jsonl", "notes"):
        (earlier / name).write_text("{}")
    demo.prepare_out(earlier, keep=earlier / "reused" / "sft")
    assert sorted(p.name for p in earlier.iterdir()) == ["alignkit-demo.json", "argilla", "mine", "notes", "reused"]
    demo.prepare_out(earlier)  # its marker now says it is a demo's, whatever else is there
    demo.prepare_out(earlier, keep=earlier / "sft")

    # a runs folder holding the user's own run `sft`: replaced by the demo's were it not refused
    runs_dir = tmp_path / "runs"
    (runs_dir / "sft").mkdir(parents=True)
    (runs_dir / "sft" / "manifest.json").write_text("{}")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say {i}.", "reference": str(i)} for i in range(8)])
    settings = ["--set", f"prompts={prompts}", "--set", "train_prompts=4"]
    code, err = invoke(["demo", "--model", tiny_model, "--out", str(runs_dir), *settings], capsys)
    assert_one_line_error(code, err, [f"{runs_dir}: holds other things than an earlier demo", "pass a new or empty"])
    assert sorted(p.name for p in runs_dir.iterdir()) == ["sft"] and (runs_dir / "sft" / "manifest.json").is_file()


def test_synth_checks_its_task_and_answer_sampling_before_any_work(tmp_path, capsys, tiny_model):
    from alignkit import AlignkitError, synth

    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "Say hi."}])
    out = tmp_path / "synth.jsonl"
    argv = ["synth", "--seeds", str(seeds), "--model", tiny_model, "--out", str(out), "--temperature", "-1"]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["`temperature` must be at least 0 (0: greedy), got -1.0", "--temperature 0.8"])
    with pytest.raises(AlignkitError, match=r"`task_max_new_tokens` must be at least 1, got 0"):
        synth.run(None, tiny_model, str(seeds), 2, str(out), task_max_new_tokens=0)
    assert not out.exists()


@pytest.mark.parametrize("command", [["feedback", "pull"], ["feedback", "review", "pull"]], ids=" ".join)
def test_pulling_onto_an_existing_file_is_refused_before_argilla_is_asked(command, tmp_path, capsys, monkeypatch):
    """`review pull` asked Argilla first, so an unreachable server hid that the file would not have been written."""
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    out = tmp_path / "rows.jsonl"
    out.write_text("keep\n")
    code, err = invoke([*command, "--dataset", "round-1", "--out", str(out)], capsys)
    assert_one_line_error(code, err, [f"{out}: output file exists", "--overwrite"])
    assert out.read_text() == "keep\n"


def test_skip_bad_rows_trains_on_the_rest_says_so_records_it_and_resumes_on_the_same_rows(tmp_path, capsys, tiny_model):
    """A scraped SFT file with an empty reply and a row with no reply: refused whole by default, the fix naming
    `data.skip_bad_rows`; with it the rest trains, the terminal says what was left out in one line, the manifest
    records the count beside the file's sha256, and `--resume` (the run's own config.yaml) leaves out the same rows."""
    empty_reply = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}
    no_reply = {"messages": [{"role": "user", "content": "Anyone there?"}]}
    rows = [*CHAT_ROWS[:2], empty_reply, *CHAT_ROWS[2:6], no_reply, *CHAT_ROWS[6:10]]
    data = write_jsonl(tmp_path / "scraped.jsonl", rows)
    out = tmp_path / "run"
    settings = ["--max-steps", "2", "--set", "trainer.save_steps=1", "--set", "data.validation_split=2", *TINY_TRAINER]

    code, err = invoke(sft_argv(data, tiny_model, out, *settings), capsys)
    fix = "or skip them: --set data.skip_bad_rows=true"
    assert_one_line_error(code, err, ["scraped.jsonl:line 3", "(+1 more rows with problems)", fix])
    assert not out.exists()

    done = run_cli(*sft_argv(data, tiny_model, out, *settings, "--set", "data.skip_bad_rows=true"))
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in done.stderr.splitlines() if "skipped" in line]
    assert said == [
        f"warning: {data}: skipped 2 of 12 rows that fail the checks (first: line 3: field `messages[1].content`: is "
        "empty)"
    ], done.stderr
    run = runs.Run(out)
    assert run.complete and run.manifest["data"] == {str(data): {"sha256": file_sha256(data), "skipped_rows": 2}}
    assert run.metrics["train_rows"] + run.metrics["eval_rows"] == 10

    # as an interrupted run is left: its last checkpoint (step 2) not written, status interrupted
    shutil.rmtree(out / "checkpoints" / "checkpoint-2")
    run.update_manifest(status="interrupted")
    code, err = invoke(["sft", "--resume", "--out", str(out)], capsys)
    assert code == 0, err
    assert run.complete and run.metrics["resumed_from"].endswith("checkpoint-1") and run.metrics["global_step"] == 2
    assert (run.metrics["train_rows"], run.metrics["eval_rows"]) == (8, 2)
    assert run.manifest["data"] == {str(data): {"sha256": file_sha256(data), "skipped_rows": 2}}
