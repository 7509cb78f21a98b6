"""`alignkit export`: a run's adapters merged into its base, saved as a plain transformers model dir."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignkit
from alignkit import generate, lineage
from alignkit.errors import AlignkitError
from alignkit.export import export
from tests.conftest import run_cli

PROMPTS = [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in (1, 7, 12)]


@pytest.fixture(scope="module")
def sft_run(tiny_model, tmp_path_factory):
    from tests.conftest import CHAT_ROWS, write_jsonl

    work = tmp_path_factory.mktemp("export")
    data = write_jsonl(work / "chat.jsonl", CHAT_ROWS)
    # A high learning rate so the adapter visibly changes the model's answers.
    return alignkit.sft(
        data={"paths": [str(data)]},
        model={"name": tiny_model},
        trainer={"max_steps": 6, "learning_rate": 5e-2, "per_device_train_batch_size": 4, "logging_steps": 1},
        out=str(work / "sft"),
    )


def test_exported_model_loads_with_plain_transformers_and_answers_like_the_run(sft_run, tmp_path, tiny_model):
    out = tmp_path / "merged"
    result = run_cli("export", str(sft_run.path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes  # other users read the weights as the config
    assert not (out / "adapter_config.json").exists(), "a merged model, not an adapter"
    record = json.loads((out / "alignkit-export.json").read_text())
    assert record["source_run"] == str(sft_run.path.resolve()) and record["stage"] == "sft"

    exported = AutoModelForCausalLM.from_pretrained(out).eval()  # no peft, no alignkit
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template, "the chat template travels with the model"
    run_model, run_tokenizer = lineage.load_run_model(sft_run.path)
    assert tokenizer.apply_chat_template(PROMPTS[0], tokenize=False) == run_tokenizer.apply_chat_template(
        PROMPTS[0], tokenize=False
    )
    exported_replies = generate.greedy_replies(exported, tokenizer, PROMPTS, max_new_tokens=12)
    run_replies = generate.greedy_replies(run_model, run_tokenizer, PROMPTS, max_new_tokens=12)
    assert exported_replies == run_replies

    ids = run_tokenizer.apply_chat_template(
        PROMPTS[1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        merged_logits = exported(**ids).logits
        run_logits = run_model(**ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(tiny_model).eval()(**ids).logits
    assert torch.allclose(merged_logits, run_logits, atol=1e-4)
    assert not torch.allclose(base_logits, run_logits, atol=1e-3), "the adapter was trained to change the model"


def test_export_refuses_a_non_empty_out_and_keeps_it(sft_run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(AlignkitError, match="exists and is not empty"):
        export(sft_run.path, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_gguf_without_llama_cpp_is_one_clear_error_before_any_work(sft_run, tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    result = run_cli("export", str(sft_run.path), "--out", str(tmp_path / "m"), "--gguf")
    assert result.returncode == 2
    assert "convert_hf_to_gguf.py" in result.stderr and "LLAMA_CPP_DIR" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m").exists()


def test_export_never_replaces_the_base_the_run_was_trained_on(tmp_path, tiny_model):
    """Ship an export, fine-tune on it, export again over it with --overwrite: that replaced the new run's own base
    (the run then applied its adapter to a model that already held it), with exit 0."""
    from tests.conftest import CHAT_ROWS, write_jsonl

    shipped = tmp_path / "shipped"
    first = alignkit.sft(
        data={"paths": [str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS))]},
        model={"name": tiny_model},
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
        out=str(tmp_path / "first"),
    )
    assert alignkit.export_run(first, shipped) == shipped  # the Python API takes a returned `Run`
    on_it = alignkit.sft(
        data={"paths": [str(tmp_path / "chat.jsonl")]},
        model={"name": str(shipped)},
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
        out=str(tmp_path / "second"),
    )
    weights = (shipped / "model.safetensors").read_bytes()
    with pytest.raises(AlignkitError, match=f"^out={str(shipped)!r} is the base model of"):
        alignkit.export_run(on_it, shipped, overwrite=True)
    assert (shipped / "model.safetensors").read_bytes() == weights
