"""SFT and pretraining on a tiny random model: every input format, run directory contents, labels, resume, lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import alignkit
from alignkit import data, hardware, lineage, models, paths, runs, training
from alignkit.config import DataConfig, SFTStageConfig, load_config
from alignkit.errors import AlignkitError
from tests.conftest import CHAT_ROWS, TINY_TRAINER, run_capturing_trainer, run_cli, write_jsonl

FORMAT_ROWS = {
    "messages": CHAT_ROWS,
    "sharegpt": [
        {
            "conversations": [
                {"from": "human", "value": m["messages"][0]["content"]},
                {"from": "gpt", "value": m["messages"][1]["content"]},
            ]
        }
        for m in CHAT_ROWS
    ],
    "alpaca": [
        {"instruction": m["messages"][0]["content"], "input": "", "output": m["messages"][1]["content"]}
        for m in CHAT_ROWS
    ],
    "prompt_completion": [
        {"prompt": m["messages"][0]["content"], "completion": m["messages"][1]["content"]} for m in CHAT_ROWS
    ],
}


def write_format(tmp_path: Path, fmt: str, suffix: str) -> Path:
    rows = FORMAT_ROWS[fmt]
    path = tmp_path / f"{fmt}{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        pd.DataFrame([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]).to_csv(
            path, index=False
        )
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif suffix == "-saved":
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    ("fmt", "suffix"),
    [
        ("messages", ".jsonl"),
        ("sharegpt", ".json"),
        ("alpaca", ".csv"),
        ("prompt_completion", ".parquet"),
        ("messages", "-saved"),
        ("alpaca", ".jsonl"),
        ("messages", ".csv"),
    ],
)
def test_each_format_converts_to_the_same_messages(fmt, suffix, tmp_path):
    rows = data.load_chat([str(write_format(tmp_path, fmt, suffix))])
    assert [r["messages"] for r in rows] == [r["messages"] for r in CHAT_ROWS]


@pytest.mark.parametrize("fmt", ["messages", "sharegpt", "alpaca", "prompt_completion"])
def test_sft_cli_trains_each_format(fmt, tmp_path, tiny_model):
    path = write_format(
        tmp_path, fmt, {"messages": ".jsonl", "sharegpt": ".json", "alpaca": ".csv"}.get(fmt, ".parquet")
    )
    out = tmp_path / "run"
    result = run_cli(
        "sft", "--data", str(path), "--model", tiny_model, "--max-steps", "5", "--out", str(out), *TINY_TRAINER
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = runs.Run(out)
    assert run.complete
    assert run.metrics["global_step"] == 5
    assert run.metrics["train_tokens"] > 0 and run.metrics["train_runtime"] > 0
    assert "eval_loss" in run.metrics and "final_train_loss" in run.metrics
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((out / "adapter").glob("*.bin")), "adapters are safetensors only"
    manifest = run.manifest
    assert manifest["precision"] == "float32" and manifest["device"] == "cpu"
    assert manifest["data"][str(path)] == paths.file_sha256(path)
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["versions"])
    assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").read_text().strip()


def test_a_saved_dataset_dicts_test_split_is_the_validation_rows_and_the_run_says_so(tmp_path, tiny_model):
    from datasets import Dataset, DatasetDict

    saved = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(CHAT_ROWS[:20]), "test": Dataset.from_list(CHAT_ROWS[20:])}).save_to_disk(
        str(saved)
    )
    train_rows, eval_rows, files, validation = data.load_split(DataConfig(paths=[str(saved)]), data.load_chat)
    assert (train_rows, eval_rows) == (CHAT_ROWS[:20], CHAT_ROWS[20:])  # not a random split of `train`
    assert files == [str(saved), f"{saved}:test"] and validation == f"saved split: {saved}:test"
    out = tmp_path / "run"
    result = run_cli(
        "sft", "--data", str(saved), "--model", tiny_model, "--max-steps", "1", "--out", str(out), *TINY_TRAINER
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run = runs.Run(out)
    assert run.manifest["validation"] == run.metrics["validation"] == f"saved split: {saved}:test"
    assert run.metrics["eval_rows"] == 4 and run.manifest["data"][str(saved)] == paths.file_sha256(saved)


def test_a_save_dir_split_is_picked_as_dir_colon_split_and_a_missing_one_lists_the_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    saved = tmp_path / "ultrafeedback"
    splits = {"train_prefs": CHAT_ROWS[:3], "test_prefs": CHAT_ROWS[3:5]}
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(saved))
    assert data.load_chat([f"{saved}:test_prefs"]) == CHAT_ROWS[3:5]
    with pytest.raises(alignkit.AlignkitError) as error:
        data.load_chat([str(saved)])
    assert error.value.message == f"{saved}: dataset has no `train` split (it has train_prefs, test_prefs)"
    assert error.value.hint == f"name the split to read as {saved}:SPLIT, e.g. {saved}:train_prefs"
    # the named training split's held-out twin is the validation rows, unless it is trained on too
    config = DataConfig(paths=[f"{saved}:train_prefs"])
    assert data.load_split(config, data.load_chat)[1:] == (
        CHAT_ROWS[3:5],
        [f"{saved}:train_prefs", f"{saved}:test_prefs"],
        f"saved split: {saved}:test_prefs",
    )
    both = DataConfig(paths=[f"{saved}:train_prefs", f"{saved}:test_prefs"], validation_split=1)
    _, eval_rows, _, validation = data.load_split(both, data.load_chat)
    assert len(eval_rows) == 1 and validation.startswith("random split: 1 of 5 rows")


def test_a_run_started_before_saved_splits_were_read_resumes_on_the_validation_rows_it_started_with(
    tmp_path, tiny_model
):
    """`--data DIR:train_X` held out a random share of its rows until a save dir's `validation_X`/`test_X` became the
    validation rows: `--resume` of a run started then silently scored other rows (the saved split), and without the
    cap its config.yaml does not name, fewer of them. It reads the rows its manifest's `validation` records, and its
    config.yaml then says so (`data.saved_validation: false`, `data.max_validation_rows: null`)."""
    import yaml

    from datasets import Dataset, DatasetDict

    saved = tmp_path / "ultrafeedback"
    splits = {"train_prefs": CHAT_ROWS[:20], "test_prefs": CHAT_ROWS[20:]}
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(saved))
    out = tmp_path / "run"
    steps = ["--set", "trainer.save_steps=1", "--set", "trainer.eval_steps=1", *TINY_TRAINER]
    started = run_cli("sft", "--data", f"{saved}:train_prefs", "--model", tiny_model, "--out", str(out),
                      "--max-steps", "1", *steps)  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    # as a run started then wrote them: a random split recorded, no held-out split among its data, no such keys
    old_split = DataConfig(paths=[f"{saved}:train_prefs"], saved_validation=False, max_validation_rows=None)
    _, old_rows, _, old_validation = data.load_split(old_split, data.load_chat)
    assert old_validation.startswith("random split: 2 of 20 rows")
    run = runs.Run(out)
    manifest = run.manifest
    run.update_manifest(
        status="interrupted",
        validation=old_validation,
        data={f"{saved}:train_prefs": manifest["data"][f"{saved}:train_prefs"]},
        rows=None,  # recorded only since
    )
    config = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("saved_validation", "max_validation_rows"):
        config["data"].pop(key, None)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    resumed_cfg, _ = training.resolve_resume("sft", SFTStageConfig(out=str(out), resume=True))
    assert data.load_split(resumed_cfg.data, data.load_chat)[1] == old_rows

    resumed = run_cli("sft", "--resume", "--out", str(out), "--max-steps", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = runs.Run(out)
    assert run.complete and run.metrics["global_step"] == 2
    assert run.metrics["eval_rows"] == 2 and run.metrics["validation"] == run.manifest["validation"] == old_validation
    recorded = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert recorded["saved_validation"] is False and recorded["max_validation_rows"] is None


def test_a_dataset_downloaded_from_the_hub_trains_on_its_train_files_and_validates_on_its_test_files(tmp_path):
    """A hub dataset's folder (`hf download --repo-type dataset --local-dir`): its dataset card was read as a chat
    row ("raw text rows are for `alignkit pretrain`"), and its `data/` folder trained on the test files too."""
    folder = tmp_path / "sharegpt-set"
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A chat set\n\nThe dataset card.\n")
    for split, rows in {"train": CHAT_ROWS[:20], "test": CHAT_ROWS[20:]}.items():
        pd.DataFrame(rows).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")
    for given in (folder, folder / "data"):
        train_rows, eval_rows, files, validation = data.load_split(DataConfig(paths=[str(given)]), data.load_chat)
        assert (train_rows, eval_rows) == (CHAT_ROWS[:20], CHAT_ROWS[20:])
        assert files == [str(given), f"{given}:test"] and validation == f"saved split: {given}:test"
    assert data.load_chat([f"{folder}:test"]) == CHAT_ROWS[20:]
    # splits named as UltraFeedback's: one is picked as DIR:SPLIT, its held-out twin validates
    named = tmp_path / "ultrafeedback"
    (named / "data").mkdir(parents=True)
    for split, rows in {"train_sft": CHAT_ROWS[:3], "test_sft": CHAT_ROWS[3:5]}.items():
        pd.DataFrame(rows).to_parquet(named / "data" / f"{split}-00000-of-00001.parquet")
    with pytest.raises(alignkit.AlignkitError) as error:
        data.load_chat([str(named)])
    assert error.value.message == f"{named}: no `train` split (its files are named by split: test_sft, train_sft)"
    assert error.value.hint == f"name the split to read as {named}:SPLIT, e.g. {named}:train_sft"
    assert data.load_split(DataConfig(paths=[f"{named}:train_sft"]), data.load_chat)[:2] == (
        CHAT_ROWS[:3],
        CHAT_ROWS[3:5],
    )
    # a folder with a file named by no split is read whole, as before
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_jsonl(mixed / "train.jsonl", CHAT_ROWS[:2])
    write_jsonl(mixed / "more.jsonl", CHAT_ROWS[2:3])
    assert data.load_chat([str(mixed)]) == [CHAT_ROWS[2], *CHAT_ROWS[:2]]


MULTI_TURN = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is two plus three?"},
        {"role": "assistant", "content": "It is five."},
        {"role": "user", "content": "And two plus two?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome, glad to help."},
    ]
}


def test_only_assistant_tokens_carry_labels_and_special_tokens_are_not_doubled(tmp_path, tiny_model):
    cfg = load_config(
        SFTStageConfig, values={"model": {"name": tiny_model}, "trainer": {"per_device_train_batch_size": 2}}
    )
    precision = hardware.pick_precision()
    tokenizer = models.load_tokenizer(cfg.model)
    model = models.load_base(cfg.model, precision)
    examples = data.prompt_completion([MULTI_TURN])
    replies = [m["content"] for m in MULTI_TURN["messages"] if m["role"] == "assistant"]
    assert len(examples) == len(replies) == 3  # one example per assistant turn
    args = training.sft_args(cfg, tmp_path, False, precision)
    trainer = training.sft_trainer(args, model, tokenizer, models.peft_config(cfg.peft), examples, [])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    for ids, labels, reply in zip(batch["input_ids"], batch["labels"], replies, strict=True):
        trained = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        assert trained == reply + "<|im_end|>\n" or trained == reply + "<|im_end|>"
        text = tokenizer.decode([t for t, m in zip(ids, batch["attention_mask"][0], strict=False) if m])
        assert "<|im_start|><|im_start|>" not in text and "<|im_end|><|im_end|>" not in text
    # the same template renders training and inference prompts
    rendered = tokenizer.apply_chat_template(examples[1]["prompt"], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(batch["input_ids"][1]).startswith(rendered)


def test_a_conversation_is_one_example_with_the_loss_and_gradients_of_its_per_turn_examples(tmp_path, tiny_model):
    trainer, per_turn = eval_sft_trainer(tmp_path, tiny_model, examples=data.prompt_completion([MULTI_TURN]))
    tokenizer = trainer.processing_class
    examples = data.sft_examples([MULTI_TURN], tokenizer)
    assert len(per_turn) == 3 and len(examples) == 1  # three assistant turns, one conversation
    args = training.sft_args(
        load_config(SFTStageConfig, values={"model": {"name": tiny_model}}), tmp_path, False, hardware.pick_precision()
    )
    whole = training.sft_trainer(args, trainer.model, tokenizer, None, examples, []).train_dataset[0]

    def trained(row):
        return [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]

    assert trained(whole) == [t for row in per_turn for t in trained(row)]  # the same tokens, each once
    assert len(whole["input_ids"]) < sum(len(row["input_ids"]) for row in per_turn)  # earlier turns not repeated
    # the same context for every trained token: per-turn and per-conversation batches give one loss and gradient
    assert_same_loss_and_grads(
        loss_and_grads(trainer, trainer.data_collator(per_turn)),
        loss_and_grads(trainer, trainer.data_collator([whole])),
    )


def test_a_weight_0_assistant_turn_is_context_in_both_example_forms_and_never_trained(tmp_path, tiny_model):
    """OpenAI fine-tuning's `"weight": 0`: the turn stays in later turns' prompts and carries no label."""
    messages = [dict(m) for m in MULTI_TURN["messages"]]
    messages[2]["weight"], messages[4]["weight"] = 0, 1  # "It is five." is context only
    rows = data.load_chat([str(write_jsonl(tmp_path / "weights.jsonl", [{"messages": messages}]))])
    context = MULTI_TURN["messages"]
    assert data.prompt_completion(rows) == [
        {"prompt": context[:4], "completion": [context[4]]},
        {"prompt": context[:6], "completion": [context[6]]},
    ]
    trainer, per_turn = eval_sft_trainer(tmp_path, tiny_model, examples=data.prompt_completion(rows))
    tokenizer = trainer.processing_class
    examples = data.sft_examples(rows, tokenizer)
    assert len(examples) == 1 and "assistant_masks" in examples[0]  # the per-conversation form
    args = training.sft_args(
        load_config(SFTStageConfig, values={"model": {"name": tiny_model}}), tmp_path, False, hardware.pick_precision()
    )
    whole = training.sft_trainer(args, trainer.model, tokenizer, None, examples, []).train_dataset[0]

    def trained(row):
        return [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]

    assert trained(whole) == [t for row in per_turn for t in trained(row)]
    assert "It is five." in tokenizer.decode(whole["input_ids"])
    assert tokenizer.decode(trained(whole)).replace("<|im_end|>", "").split("\n")[:2] == [
        "Four.",
        "You are welcome, glad to help.",
    ]


@pytest.mark.parametrize("rows", [[MULTI_TURN], CHAT_ROWS[:2]], ids=["multi-turn", "single-turn"])
def test_completion_only_loss_false_trains_the_prompts_of_every_conversation(rows, tmp_path, tiny_model):
    """`trainer.completion_only_loss: false` (axolotl's `train_on_inputs: true`) was applied by TRL to single-turn
    rows only: a multi-turn conversation's example still trained its assistant turns alone."""
    path = write_jsonl(tmp_path / "chat.jsonl", rows * 4)
    trainers = {}
    for prompt_loss in (False, True):
        trainer_keys = {"max_steps": 1, "per_device_train_batch_size": 2, "completion_only_loss": not prompt_loss}
        _, trainers[prompt_loss] = run_capturing_trainer(
            alignkit.sft,
            model={"name": tiny_model},
            data={"paths": [str(path)], "validation_split": 0},
            trainer=trainer_keys,
            out=str(tmp_path / f"run-{prompt_loss}"),
        )
    for prompt_loss, trainer in trainers.items():
        batch = trainer.data_collator([trainer.train_dataset[0]])
        trained = tokenizer_decode_trained(trainer.processing_class, batch)
        messages = rows[0]["messages"]
        assert (messages[0]["content"] in trained) is prompt_loss, trained  # the first user turn
        assert messages[-1]["content"] in trained


def tokenizer_decode_trained(tokenizer, batch) -> str:
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])


def test_a_template_that_rewrites_earlier_turns_keeps_one_example_per_turn(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # like templates that drop past reasoning: an earlier turn renders differently once the conversation goes on
    tokenizer.chat_template = "{{ messages | length }}\n" + tokenizer.chat_template
    assert data.conversation_examples([MULTI_TURN], tokenizer) is None
    assert data.sft_examples([MULTI_TURN], tokenizer) == data.prompt_completion([MULTI_TURN])


def eval_sft_trainer(tmp_path, tiny_model, replies=(), examples=None, **model_options):
    """An SFTTrainer on one-turn chats ending in `replies` (or on `examples`), in eval mode (no LoRA dropout: batches
    compare exactly); `model_options`: more `model.*` settings."""
    cfg = load_config(SFTStageConfig, values={"model": {"name": tiny_model, **model_options}})
    precision = hardware.pick_precision()
    examples = examples or data.prompt_completion(
        [
            {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": reply}]}
            for i, reply in enumerate(replies)
        ]
    )
    args = training.sft_args(cfg, tmp_path, False, precision)
    model, tokenizer = models.load_base(cfg.model, precision), models.load_tokenizer(cfg.model)
    trainer = training.sft_trainer(args, model, tokenizer, models.peft_config(cfg.peft), examples, [])
    trainer.model.eval()
    return trainer, [trainer.train_dataset[i] for i in range(len(examples))]


def loss_and_grads(trainer, batch):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]


def assert_same_loss_and_grads(a, b):
    import torch

    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    for grad_a, grad_b in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-4, atol=1e-6)


def test_padding_free_batch_has_the_padded_batch_loss_and_gradients(tmp_path, tiny_model):
    replies = ["Five.", "It is five, since two plus three makes five.", "Paris is the capital of France, yes."]
    trainer, rows = eval_sft_trainer(tmp_path, tiny_model, replies)
    padded = trainer.data_collator(rows)
    assert (padded["attention_mask"] == 0).any()  # the lengths differ, so the padded batch carries padding
    training.use_padding_free(trainer, trainer.model.peft_config["default"])
    flat = trainer.data_collator(rows)
    assert flat["input_ids"].shape == (1, int(padded["attention_mask"].sum()))  # one row, real tokens only
    # attention runs per example of the row (its bounds from the collator), not under one block-diagonal mask
    assert trainer.model.config._attn_implementation == training.SEGMENT_ATTENTION
    assert flat["cu_seq_lens_q"].tolist()[-1] == flat["input_ids"].shape[1] and len(flat["cu_seq_lens_q"]) == 4
    trainer._track_num_input_tokens(flat)  # metrics.json `train_tokens`: every real token, EOS (== pad) included
    assert trainer.state.num_input_tokens_seen == flat["input_ids"].numel()
    assert_same_loss_and_grads(loss_and_grads(trainer, flat), loss_and_grads(trainer, padded))


def test_split_is_seeded_and_disjoint():
    rows = [{"i": i} for i in range(50)]
    train_a, val_a = data.split(rows, 0.2, seed=7)
    _, val_b = data.split(rows, 0.2, seed=7)
    assert val_a == val_b and len(val_a) == 10 and len(train_a) == 40
    assert not {r["i"] for r in val_a} & {r["i"] for r in train_a}
    assert data.split(rows, 0.2, seed=8)[1] != val_a


def test_a_big_files_validation_split_is_capped_and_can_be_a_number_of_rows():
    """10 % of a 20,000-row file held out 2,000 rows, each scored at every evaluation (every 50 steps): most of the
    training time went to evaluation. A fraction is capped at `max_validation_rows`; a whole number is a row count,
    as LLaMA-Factory's `val_size` and axolotl's `val_set_size` take it."""
    rows = [{"i": i} for i in range(3000)]

    def held_out(**options: object) -> tuple[int, str]:
        train, held, _, source = data.load_split(DataConfig(paths=["rows.jsonl"], **options), lambda paths: rows)
        assert len(train) + len(held) == len(rows)
        return len(held), source

    assert held_out() == (256, "random split: 256 of 3000 rows (0.1 of the rows, at most 256, seed 42)")
    assert held_out(max_validation_rows=None)[0] == 300
    assert held_out(validation_split=500)[0] == 500  # a count asked for is not capped
    assert held_out(validation_split=0.05)[0] == 150
    for bad in ({"validation_split": 2.5}, {"validation_split": -1}, {"max_validation_rows": 0}):
        with pytest.raises(AlignkitError, match="validation"):
            held_out(**bad)


def test_an_evaluation_during_training_shows_its_progress_on_the_training_bar(tmp_path, tiny_model, chat_file):
    """An evaluation printed nothing: the bar stood still at 0 for as long as the validation rows took."""
    out = tmp_path / "run"
    args = ["sft", "--data", str(chat_file), "--model", tiny_model, "--out", str(out), "--max-steps", "2"]
    done = run_cli(*args, *TINY_TRAINER, "--set", "trainer.per_device_eval_batch_size=1")
    assert done.returncode == 0, done.stderr
    evaluated = json.loads((out / "metrics.json").read_text())["eval_rows"]
    assert f"evaluating {evaluated}/{evaluated}" in done.stderr and evaluated > 1  # eval_on_start, batch by batch
    assert "evaluating 1/" in done.stderr


def test_resume_after_kill_reaches_same_step_and_continues_loss_curve(tmp_path, tiny_model, chat_file):
    out = tmp_path / "run"
    args = [
        "sft",
        "--data",
        str(chat_file),
        "--model",
        tiny_model,
        "--out",
        str(out),
        "--max-steps",
        "120",
        "--set",
        "trainer.save_steps=10",
        "--set",
        "trainer.eval_steps=10",
        "--set",
        "trainer.save_total_limit=3",
        "--set",
        "early_stopping_patience=null",
        *TINY_TRAINER,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignkit.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    run = runs.Run(out)
    while time.time() < deadline and proc.poll() is None:
        checkpoint = run.last_checkpoint() if (out / "manifest.json").exists() else None
        if checkpoint and int(checkpoint.rsplit("-", 1)[-1]) >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not run.complete
    killed_at = int(run.last_checkpoint().rsplit("-", 1)[-1])
    assert killed_at < 120

    result = run_cli("sft", "--resume", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert run.complete
    assert run.metrics["global_step"] == 120
    assert run.metrics["resumed_from"].endswith(f"checkpoint-{killed_at}")
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_after = [r["step"] for r in logged if "loss" in r and r["step"] > killed_at]
    assert steps_after and steps_after[0] == killed_at + 1, "the loss curve continues from the checkpoint"
    assert steps_after[-1] == 120


def test_pretrain_then_sft_records_lineage(tmp_path, tiny_model, chat_file):
    text = tmp_path / "domain.txt"
    text.write_text("\n\n".join(f"Compost pile number {i} needs air, water and browns." for i in range(20)))
    pre = alignkit.pretrain(
        data={"paths": [str(text)]},
        model={"name": tiny_model},
        out=str(tmp_path / "pre"),
        trainer={"max_steps": 3, "per_device_train_batch_size": 2, "max_length": 32},
    )
    assert pre.complete and (pre.path / "adapter").is_dir()
    tuned = alignkit.sft(
        data={"paths": [str(chat_file)]},
        model={"name": tiny_model},
        from_run=str(pre.path),
        out=str(tmp_path / "sft"),
        trainer={"max_steps": 3, "per_device_train_batch_size": 4},
    )
    stages = [step["stage"] for step in tuned.manifest["lineage"]]
    assert stages == ["pretrain", "sft"]
    assert tuned.manifest["parent"] == "../pre" and tuned.parent_path == pre.path.resolve()  # relative: runs move
    model, _ = lineage.load_run_model(tuned.path)
    assert model.active_adapters == ["default"]
    listing = run_cli("runs", "--dir", str(tmp_path), "--json")
    assert listing.returncode == 0, listing.stderr
    by_stage = {row["stage"]: row for row in json.loads(listing.stdout)}
    assert by_stage["sft"]["lineage"].endswith("pretrain → sft") and by_stage["sft"]["status"] == "complete"


def test_pretrain_trains_every_token_of_a_text_longer_than_max_length(tmp_path, tiny_model):
    """A .txt file without blank lines is one row; packed with TRL's default `bfd` strategy it was cut to
    `max_length` tokens and the rest of the text silently never trained."""
    from transformers import AutoTokenizer

    text = tmp_path / "book.txt"
    text.write_text("\n".join(f"Compost pile number {i} needs air, water, greens and browns." for i in range(40)))
    pre = alignkit.pretrain(
        data={"paths": [str(text)], "validation_split": 0.0},
        model={"name": tiny_model},
        out=str(tmp_path / "pre"),
        trainer={"num_train_epochs": 1, "per_device_train_batch_size": 2, "max_length": 64},
    )
    tokens = len(AutoTokenizer.from_pretrained(tiny_model)(text.read_text())["input_ids"])
    assert tokens > 10 * 64
    assert pre.metrics["train_rows"] == 1 and pre.metrics["train_tokens"] >= tokens


@pytest.mark.parametrize("method", ["full", "dora", "ia3", "prompt_tuning", "prefix_tuning"])
def test_peft_methods_by_name(method, tmp_path, tiny_model, chat_file):
    peft_section = {"method": method}
    if method == "ia3":
        peft_section |= {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
    run = alignkit.sft(
        data={"paths": [str(chat_file)]},
        model={"name": tiny_model},
        out=str(tmp_path / method),
        peft=peft_section,
        trainer={"max_steps": 2, "per_device_train_batch_size": 4},
    )
    assert run.complete
    assert (run.path / ("model" if method == "full" else "adapter")).is_dir()
    model, _ = lineage.load_run_model(run.path)
    assert model is not None


def test_loss_positions_only_head_gives_the_same_loss_and_gradients(tmp_path, tiny_model, monkeypatch):
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    trainer, rows = eval_sft_trainer(tmp_path, tiny_model, ["Five.", "It is five, since two plus three makes five."])
    batch = trainer.data_collator(rows)
    scored = []
    original_apply = trl_utils._ChunkedLogProbFunction.apply

    def counting_apply(hidden, *rest):
        scored.append(hidden.shape[0])
        return original_apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)
    # TRL's own switch, whether or not a training run earlier in this process already applied alignkit's
    monkeypatch.setattr(trl_utils, "_use_triton", chunked_logprob._use_triton)
    every_position = loss_and_grads(trainer, batch)
    training.score_only_loss_positions()
    training.score_only_loss_positions()  # idempotent
    loss_positions_only = loss_and_grads(trainer, batch)
    loss_positions = int((batch["labels"][:, 1:] != -100).sum())
    assert scored == [batch["input_ids"][:, 1:].numel(), loss_positions]  # the prompt tokens are no longer scored
    assert_same_loss_and_grads(loss_positions_only, every_position)


@pytest.mark.parametrize("chunked", [False, True], ids=["dense", "checkpointed-chunks"])
def test_dense_cpu_lm_head_has_trls_log_probs_metrics_and_gradients(monkeypatch, chunked):
    import torch
    from trl.kernels import ChunkedLogProbFunction

    tokens, hidden_size, vocab = 37, 16, 300
    seeded = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=seeded) for shape in ((tokens, hidden_size), (vocab, hidden_size), (vocab,))]
    targets = torch.randint(0, vocab, (tokens,), generator=seeded)
    if chunked:
        monkeypatch.setattr(training.DenseLogProbsOnCPU, "chunk_floats", 8 * vocab)  # five chunks of <= 8 tokens
    outputs = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")

    def run(function):
        leaves = [t.clone().requires_grad_() for t in inputs]
        result = function.apply(*leaves, targets, 0.7, 128, 5.0, 1.3, outputs)
        log_probs, entropy = result[:2]
        (log_probs.sum() + 0.1 * entropy.sum()).backward()  # the entropy's own gradient too (GRPO can use it)
        return [r.detach() for r in result], [leaf.grad for leaf in leaves]

    (ours, our_grads), (trls, trl_grads) = run(training.DenseLogProbsOnCPU), run(ChunkedLogProbFunction)
    assert ours[4].dtype == torch.bool and ours[4].equal(trls[4])  # the target is the first argmax
    for a, b in zip(ours[:4] + our_grads, trls[:4] + trl_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sft_with_the_dense_cpu_lm_head_has_trls_loss_and_gradients(tmp_path, tiny_model, monkeypatch):
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer import utils as trl_utils

    trainer, rows = eval_sft_trainer(tmp_path, tiny_model, ["Five.", "It is five, since two plus three makes five."])
    batch = trainer.data_collator(rows)
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", ChunkedLogProbFunction)  # TRL's, as a fresh process has
    trls = loss_and_grads(trainer, batch)
    training.dense_lm_head_on_cpu()
    assert trl_utils._ChunkedLogProbFunction is training.DenseLogProbsOnCPU
    assert_same_loss_and_grads(loss_and_grads(trainer, batch), trls)


def test_a_run_made_with_relative_paths_works_from_any_directory(tmp_path, tiny_model):
    """`--model tiny --data chat.jsonl` were once recorded as typed: from another directory the run's base was
    looked up on the hub and its data was missing, so `generate --from`, `eval` and `--resume` failed there."""
    import yaml

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    (work / "tiny").symlink_to(tiny_model)
    write_jsonl(work / "chat.jsonl", CHAT_ROWS)
    trained = run_cli(
        "sft",
        "--data",
        "chat.jsonl",
        "--model",
        "tiny",
        "--out",
        "runs/sft",
        "--max-steps",
        "1",
        *TINY_TRAINER,
        cwd=work,
    )
    assert trained.returncode == 0, trained.stderr
    recorded = yaml.safe_load((work / "runs" / "sft" / "config.yaml").read_text())
    assert recorded["model"]["name"] == str(Path(tiny_model).resolve())
    assert recorded["data"]["paths"] == [str(work / "chat.jsonl")]

    prompts = str(Path(__file__).resolve().parents[2] / "datasets" / "prompts.jsonl")
    generated = run_cli(
        *("generate", "--from", str(work / "runs" / "sft"), "--prompts", prompts),
        *("--n", "1", "--limit", "1", "--max-new-tokens", "4", "--out", "c.jsonl"),
        cwd=elsewhere,
    )
    assert generated.returncode == 0, generated.stderr
    assert json.loads((elsewhere / "c.jsonl").read_text())["candidates"][0]["model"] == str(Path(tiny_model).resolve())


def test_a_finished_runs_log_takes_nothing_of_what_the_process_does_next(tmp_path, tiny_model, chat_file, monkeypatch):
    import logging

    from alignkit import logs

    between = tmp_path / "alignkit.log"  # what `quiet_terminal` (the CLI) sets: where records go between runs
    monkeypatch.setattr(logs, "_default_file", between, raising=False)
    settings = {"model": {"name": tiny_model}, "data": {"paths": [str(chat_file)]}, "trainer": {"max_steps": 1}}
    first = alignkit.sft(out=str(tmp_path / "first"), **settings)
    logging.getLogger("transformers").warning("after the first run")
    second = alignkit.sft(out=str(tmp_path / "second"), **settings)
    assert "after the first run" not in (first.path / "log.txt").read_text()
    assert str(second.path) not in (first.path / "log.txt").read_text()
    assert "after the first run" in between.read_text()
    assert "step 1: {'loss'" in (second.path / "log.txt").read_text()  # each run still logs to its own
    open_files = [h.baseFilename for h in logging.getLogger("transformers").handlers if hasattr(h, "baseFilename")]
    assert open_files == [str(between)]
    logs.stop_file(between)
