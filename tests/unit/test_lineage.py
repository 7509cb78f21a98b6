"""Runs can be moved: manifests store their parents relative to the run dir, so moving runs/ (or copying a run with
its parents elsewhere) keeps `runs`, `generate --from`, `dpo --from`, `eval`, `export` and the playground working;
the base model is recorded by name and by the sha256 of its weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

import alignkit
from alignkit import lineage, runs
from alignkit import playground as pg
from alignkit.paths import file_sha256
from tests.conftest import CHAT_ROWS, run_cli, train_sft_and_dpo, write_jsonl


def test_moved_runs_keep_their_lineage_everywhere(tiny_model, tmp_path):
    (tmp_path / "first-home").mkdir()
    original = train_sft_and_dpo(tmp_path / "first-home", tiny_model, sft_steps=2)
    dpo_before = runs.Run(original / "dpo")
    model, tokenizer = lineage.load_run_model(dpo_before.path)
    messages = CHAT_ROWS[0]["messages"][:1]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    with torch.no_grad():
        logits_before = model(prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]).logits

    moved = tmp_path / "colleague" / "runs"
    moved.parent.mkdir()
    shutil.move(str(original.parent), str(moved.parent / "project"))  # the whole project folder, runs/ inside it
    moved = moved.parent / "project" / "runs"
    assert not original.exists()

    dpo = runs.open_run(moved / "dpo")
    assert dpo.manifest["parent"] == "../sft" and dpo.parent_path == (moved / "sft").resolve()
    assert [step["run"] for step in dpo.lineage] == [str((moved / "sft").resolve()), str((moved / "dpo").resolve())]
    base = dpo.manifest["base"]
    assert base["name"] == tiny_model and base["sha256"] == file_sha256(Path(tiny_model) / "model.safetensors")

    # base + the SFT adapter + the DPO adapter, found from the new place
    model, tokenizer = lineage.load_run_model(dpo.path)
    with torch.no_grad():
        logits_after = model(prompt if isinstance(prompt, torch.Tensor) else prompt["input_ids"]).logits
    assert torch.equal(logits_before, logits_after)

    listing = run_cli("runs", "--dir", str(moved), "--json")
    assert listing.returncode == 0, listing.stderr
    assert {row["run"]: row["parent"] for row in json.loads(listing.stdout)} == {"sft": None, "dpo": "sft"}
    choices = {c.label: c for c in pg.model_choices(moved, tiny_model)}
    assert choices["dpo · dpo"].usable and choices["sft · sft"].usable

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I start composting?"}])
    generated = run_cli("generate", "--from", str(moved / "dpo"), "--prompts", str(prompts), "--out",
                        str(tmp_path / "candidates.jsonl"), "--n", "1", "--max-new-tokens", "4")  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    exported = run_cli("export", str(moved / "dpo"), "--out", str(tmp_path / "merged"))
    assert exported.returncode == 0, exported.stderr
    evaluated = run_cli("eval", "--runs", str(moved / "sft"), "--runs", str(moved / "dpo"), "--prompts", str(prompts),
                        "--out", str(tmp_path / "eval"), "--max-new-tokens", "4")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    again = alignkit.dpo(
        data={"paths": [str(moved.parent / "pairs.jsonl")]},
        from_run=str(moved / "sft"),
        out=str(moved / "dpo-again"),
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
    )
    assert [step["stage"] for step in again.lineage] == ["sft", "dpo"] and again.manifest["parent"] == "../sft"
    assert Path(again.lineage[0]["run"]) == (moved / "sft").resolve()
    assert lineage.load_run_model(again.path)[0] is not None


def test_a_run_copied_with_its_parents_loads_in_the_copy(tiny_model, tmp_path):
    (tmp_path / "home").mkdir()
    original = train_sft_and_dpo(tmp_path / "home", tiny_model, sft_steps=2)
    copy = tmp_path / "shared"
    shutil.copytree(original, copy)
    shutil.rmtree(original / "sft")  # the copy must not lean on the original
    dpo = runs.open_run(copy / "dpo")
    assert all(Path(step["run"]).is_relative_to(copy.resolve()) for step in dpo.lineage)
    model, _ = lineage.load_run_model(dpo.path)
    assert model.active_adapters == ["default"]


def test_a_base_with_other_weights_than_the_run_was_trained_on_is_said(tiny_model, tmp_path):
    """The manifest records the base's sha256; it was never compared, so a replaced base took the adapters silently."""
    from tests.conftest import TINY_TRAINER, build_tiny_model

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    chat = str(tmp_path / "chat.jsonl")
    sft = tmp_path / "runs" / "sft"
    trained = run_cli("sft", "--data", chat, "--model", str(base), "--out", str(sft), "--max-steps", "1", *TINY_TRAINER)
    assert trained.returncode == 0, trained.stderr
    prompts = str(Path(__file__).resolve().parents[2] / "datasets" / "prompts.jsonl")
    generate = [
        "generate",
        "--from",
        str(sft),
        "--prompts",
        prompts,
        "--n",
        "1",
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
    ]
    same = run_cli(*generate, "--out", str(tmp_path / "same.jsonl"))
    assert same.returncode == 0 and "other weights" not in same.stderr, same.stderr

    shutil.rmtree(base)
    build_tiny_model(base, initializer_range=0.5)  # same architecture and tokenizer, other weights
    other = run_cli(*generate, "--out", str(tmp_path / "other.jsonl"))
    assert other.returncode == 0, other.stderr
    assert f"warning: {sft}: its base {base} now has other weights" in " ".join(other.stderr.split())
    further = run_cli(
        "sft", "--from", str(sft), "--data", chat, "--out", str(tmp_path / "runs" / "more"), "--max-steps", "1"
    )
    assert further.returncode == 0, further.stderr
    assert "now has other weights" in further.stderr
