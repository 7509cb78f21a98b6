"""The benchmark's accounting (no timings asserted): FLOPs from the config, tokens counted from either batch layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignkit import data, models
from alignkit.config import SFTStageConfig, load_config
from alignkit.stages import sft
from benchmarks import flops, measure


def test_flops_shape_counts_the_models_own_linear_weights(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    shape = flops.model_shape(json.loads((Path(tiny_model) / "config.json").read_text()))
    decoder = sum(m.weight.numel() for n, m in model.model.named_modules() if isinstance(m, torch.nn.Linear))
    assert shape["decoder_params"] == decoder
    assert shape["head_params"] == model.lm_head.weight.numel()


def test_padded_and_padding_free_batches_count_the_same_real_tokens(tmp_path, tiny_model):
    cfg = load_config(SFTStageConfig, values={"model": {"name": tiny_model}})
    precision = models.pick_precision()
    replies = ["Five.", "It is five, since two plus three makes five."]
    examples = data.prompt_completion(
        [
            {"messages": [{"role": "user", "content": "Two plus three?"}, {"role": "assistant", "content": reply}]}
            for reply in replies
        ]
    )
    args = sft.sft_args(cfg, tmp_path, False, precision)
    model, tokenizer = models.load_base(cfg.model, precision), models.load_tokenizer(cfg.model)
    trainer = sft.build_trainer(args, model, tokenizer, models.peft_config(cfg.peft), examples, [])
    rows = [trainer.train_dataset[i] for i in range(2)]
    padded = measure.batch_stats(trainer.data_collator(rows))
    sft.use_padding_free(trainer, None)
    flat = measure.batch_stats(trainer.data_collator(rows))
    assert padded["computed_tokens"] > padded["tokens"]  # padding is computed but not counted
    for key in ("rows", "tokens", "loss_tokens", "lengths"):
        assert flat[key] == padded[key]
    assert flat["computed_tokens"] == flat["tokens"]
    assert 0 < padded["loss_tokens"] < padded["tokens"]  # the loss falls on the replies only
