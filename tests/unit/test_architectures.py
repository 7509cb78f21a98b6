"""Models users bring, beyond the Llama-style embedded one: tiny random models of other architectures and tokenizer
conventions (a template whose turn end is not the eos, a template without a system role, fused projections,
attention logit softcapping), built in-process like `tests/conftest.py`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignkit
from alignkit import AlignkitError, evaluate, generate, hardware, lineage, models
from alignkit.config import ModelConfig
from alignkit.export import export
from tests.conftest import CHAT_ROWS, CHATML, CORPUS, run_cli, write_jsonl

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
GEMMA_TOKENS = {  # Gemma and Gemma2 share the tokenizer's specials and template
    "specials": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
    "bos": "<bos>",
    "eos": "<eos>",
    "pad": "<pad>",
    "template": GEMMA_TEMPLATE,
    "add_bos": True,
}
LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}

# name -> (model_type, config, tokenizer: specials, bos, eos, pad, chat template, BOS added by the tokenizer)
FAMILIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # Qwen2.5 base: ships ChatML, but its eos (and generation config) is <|endoftext|>
    "qwen2-base": (
        "qwen2",
        {**LAYERS, "num_key_value_heads": 2, "tie_word_embeddings": True},
        {
            "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            "eos": "<|endoftext|>",
            "pad": "<|endoftext|>",
            "template": CHATML,
        },
    ),
    "gemma": (
        "gemma",
        {**LAYERS, "num_key_value_heads": 1, "head_dim": 8},
        GEMMA_TOKENS,
    ),
    # attention-logit and final-logit softcapping (no SDPA), alternating sliding-window layers
    "gemma2": (
        "gemma2",
        {**LAYERS, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 16, "final_logit_softcapping": 30.0},
        GEMMA_TOKENS,
    ),
    # Pythia: fused query_key_value, untied head, no pad token, no chat template (given ChatML)
    "gpt-neox": (
        "gpt_neox",
        {**LAYERS, "tie_word_embeddings": False, "hidden_dropout": 0.0, "attention_dropout": 0.0},
        {"specials": ["<|endoftext|>"], "bos": "<|endoftext|>", "eos": "<|endoftext|>"},
    ),
    # OPT: learned positions with an offset, `</s>` both bos and eos, BOS added by the tokenizer
    "opt": (
        "opt",
        {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "dropout": 0.0},
        {"specials": ["<s>", "<pad>", "</s>", "<unk>"], "bos": "</s>", "eos": "</s>", "pad": "<pad>", "add_bos": True},
    ),
    # fused qkv_proj and gate_up_proj; a turn ends with <|end|>, the eos is <|endoftext|>
    "phi3": (
        "phi3",
        {**LAYERS, "num_key_value_heads": 4, "tie_word_embeddings": False},
        {
            "specials": ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
            "eos": "<|endoftext|>",
            "pad": "<|endoftext|>",
            "template": PHI3_TEMPLATE,
        },
    ),
}


def family_tokenizer(specials: list[str], eos: str, template: str | None = None, **tokens: Any) -> Any:
    """A byte-level BPE tokenizer over conftest's corpus with a model family's special tokens and template."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers import models as tokenizer_models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tokenizer_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
    )
    bos, pad = tokens.get("bos"), tokens.get("pad")
    if tokens.get("add_bos"):  # as Gemma's and Mistral's tokenizers do
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    named = {"bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": specials[0]}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in named.items() if v})
    tokenizer.chat_template = template
    return tokenizer


def build_family_model(path: Path, family: str, **config_overrides: Any) -> Path:
    """A 2-layer random model of `family` (`FAMILIES`) with its tokenizer, saved as a normal HF model dir; its
    generation config ends at the tokenizer's eos only, as a fine-tune saved without the family's config would."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    model_type, config, tokens = FAMILIES[family]
    tokenizer = family_tokenizer(**tokens)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model(
            model_type,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            **{"max_position_embeddings": 1024, **config_overrides},
            **ids,
            **config,
        )
    )
    model.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id, **ids)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_family_model(root / family, family) for family in FAMILIES}


TURN_ENDS = {"qwen2-base": "<|im_end|>", "gemma": "<end_of_turn>", "phi3": "<|end|>"}


@pytest.mark.parametrize("family", list(TURN_ENDS))
def test_generation_ends_at_the_token_that_closes_the_templates_assistant_turn(family_models, family):
    """SFT trains replies to end with the template's turn end; where that is not the eos, generation (generate, rl,
    eval, the playground, an export) must stop there too, not run on into made-up turns."""
    cfg = ModelConfig(name=str(family_models[family]))
    tokenizer = models.load_tokenizer(cfg)
    turn_end = tokenizer.convert_tokens_to_ids(TURN_ENDS[family])
    assert turn_end != tokenizer.eos_token_id
    model = models.load_base(cfg, hardware.pick_precision("fp32"), tokenizer=tokenizer)
    ends = model.generation_config.eos_token_id
    assert turn_end in ends and tokenizer.eos_token_id in ends


PROMPTS = [[{"role": "user", "content": f"What is {i} plus {i}?"}] for i in (1, 5)]


@pytest.mark.parametrize("family", ["gemma2", "gpt-neox", "opt", "phi3"])
def test_sft_adapts_every_layer_and_its_export_reloads_to_the_runs_replies(family_models, family, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:8])
    run = alignkit.sft(
        data={"paths": [str(chat)], "validation_split": 0},
        model={"name": str(family_models[family])},
        out=str(tmp_path / "sft"),
        trainer={"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-2},
    )
    model, tokenizer = lineage.load_run_model(run.path)
    adapted = {name.split(".layers.")[1].split(".")[0] for name, _ in model.named_parameters() if "lora_B" in name}
    assert adapted == {"0", "1"}, "a LoRA on every decoder layer (all-linear found the fused and Conv1D layers)"
    exported = export(run.path, tmp_path / "exported")
    plain = AutoModelForCausalLM.from_pretrained(exported).eval()  # transformers' own choice of attention
    replies = generate.greedy_replies(model, tokenizer, PROMPTS, 6)
    assert generate.greedy_replies(plain, AutoTokenizer.from_pretrained(exported), PROMPTS, 6) == replies


def adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_a_resized_bases_checkpoints_hold_the_adapter_only_and_resume_to_the_same_one(family_models, tmp_path):
    """A base given ChatML has resized embeddings: the Trainer's checkpoints held its whole embedding and LM head
    matrices (peft's `save_embedding_layers="auto"`), GBs per checkpoint on a 7B base, where the final adapter has
    only the new tokens' rows."""
    import shutil

    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:8])
    whole = alignkit.sft(
        data={"paths": [str(chat)], "validation_split": 0},
        model={"name": str(family_models["gpt-neox"])},
        out=str(tmp_path / "whole"),
        trainer={"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2},
    )
    final = adapter_tensors(whole.adapter_dir)
    assert any("trainable_tokens_delta" in key for key in final), "the new ChatML tokens' rows are trained"
    for step in (2, 4):
        checkpoint = adapter_tensors(whole.path / "checkpoints" / f"checkpoint-{step}")
        assert sorted(checkpoint) == sorted(final), "no embedding matrix beside the adapter"
    # the run as killed after its step-2 checkpoint, resumed from it
    shutil.copytree(whole.path, tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "checkpoint-4")
    shutil.rmtree(tmp_path / "resumed" / "adapter")
    alignkit.runs.Run(tmp_path / "resumed").update_manifest(status="interrupted")
    resumed = alignkit.sft(out=str(tmp_path / "resumed"), resume=True)
    assert resumed.metrics["resumed_from"] and resumed.metrics["global_step"] == 4
    again = adapter_tensors(resumed.adapter_dir)
    assert sorted(again) == sorted(final)
    for key, tensor in final.items():
        torch.testing.assert_close(again[key], tensor, msg=key)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_batch_sft_trains_on_has_the_padded_batchs_loss_on_opt(
    family_models, attention, tmp_path, alignkit_records
):
    """OPT builds its mask without `position_ids`: under eager attention the padding-free row's examples attended to
    each other. Padding-free is for attention that keeps to each example (SDPA as `segment_attention`, flash)."""
    from alignkit import training
    from tests.unit.test_sft import assert_same_loss_and_grads, eval_sft_trainer, loss_and_grads

    replies = ["Five.", "It is five, since two plus three makes five.", "Paris is the capital of France, yes."]
    model = str(family_models["opt"])
    trainer, rows = eval_sft_trainer(tmp_path, model, replies, attn_implementation=attention)
    padded = trainer.data_collator(rows)
    training.use_padding_free(trainer, trainer.model.peft_config["default"])
    batch = trainer.data_collator(rows)
    assert_same_loss_and_grads(loss_and_grads(trainer, batch), loss_and_grads(trainer, padded))
    padding_free = "attention_mask" not in batch
    assert padding_free == (attention == "sdpa")
    said = [r.getMessage() for r in alignkit_records.records if "padded batches" in r.getMessage()]
    assert len(said) == (attention == "eager") and all("model.attn_implementation=eager" in line for line in said)


def test_an_attention_implementation_the_model_lacks_is_one_line_naming_the_setting(family_models):
    cfg = ModelConfig(name=str(family_models["gemma2"]), attn_implementation="sdpa")
    with pytest.raises(AlignkitError, match=r"does not support model\.attn_implementation=sdpa"):
        models.load_base(cfg, hardware.pick_precision("fp32"))


def test_a_system_message_gemmas_template_refuses_is_one_line_before_any_run_dir(family_models, tmp_path):
    system = {"role": "system", "content": "Answer briefly."}
    rows = [*CHAT_ROWS[:3], {"messages": [system, *CHAT_ROWS[3]["messages"]]}]
    chat = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "runs" / "sft"
    result = run_cli("sft", "--model", str(family_models["gemma"]), "--data", str(chat), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{chat}: the model's chat template refuses 1 of 4 rows (System role not supported" in result.stderr
    assert "fold the system message into the first user turn" in result.stderr
    assert not out.exists()
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": [system, {"role": "user", "content": "Hi"}]}])
    candidates = tmp_path / "candidates.jsonl"
    result = run_cli(
        "generate", "--model", str(family_models["gemma"]), "--prompts", str(prompts), "--out", str(candidates)
    )
    assert not candidates.exists()
    assert result.returncode == 2 and "refuses 1 of 1 rows (System role not supported" in result.stderr, result.stderr


def test_perplexity_of_a_text_longer_than_a_learned_position_models_context_is_taken_over_its_context(tmp_path):
    """`eval`'s perplexity cut texts at 512 tokens whatever the model: an OPT or GPT-2 with a shorter context crashed
    in its position embedding (IndexError)."""
    path = build_family_model(tmp_path / "opt-64", "opt", max_position_embeddings=64)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    text = " ".join(f"word{i}" for i in range(300))
    assert len(tokenizer(text).input_ids) > 64
    assert evaluate.perplexity(model, tokenizer, [text]) == evaluate.perplexity(model, tokenizer, [text], max_length=64)
