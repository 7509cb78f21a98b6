"""Generation backend selection: transformers by default; vLLM asked for where it cannot run is one clear error."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from alignkit.config import RLStageConfig
from alignkit.errors import AlignkitError
from alignkit.stages import rl
from tests.conftest import run_cli, write_jsonl
from tests.unit.test_bad_inputs import assert_one_line_error, invoke

PROMPTS = [{"prompt": f"Say {i}."} for i in range(3)]
VLLM_RUNS = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(VLLM_RUNS, reason="vLLM can run here")
def test_generate_with_vllm_where_it_cannot_run_is_one_error_before_loading(tmp_path, tiny_model, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "candidates.jsonl"
    argv = ["generate", "--prompts", str(prompts), "--out", str(out), "--model", tiny_model, "--backend", "vllm"]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["vllm", "--backend transformers"])
    assert not out.exists()


def test_unknown_backend_names_the_choices(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    argv = ["generate", "--prompts", str(prompts), "--out", str(tmp_path / "c.jsonl"), "--backend", "tgi"]
    code, err = invoke(argv, capsys)
    assert_one_line_error(code, err, ["unknown generation backend 'tgi'", "transformers, vllm"])


def test_transformers_backend_is_the_default_and_writes_candidates(tmp_path, tiny_model):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "candidates.jsonl"
    result = run_cli(
        "generate", "--prompts", str(prompts), "--out", str(out), "--model", tiny_model,
        "--n", "2", "--max-new-tokens", "8", "--backend", "transformers",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == len(PROMPTS)


@pytest.mark.skipif(VLLM_RUNS, reason="vLLM can run here")
def test_rl_with_the_vllm_backend_where_it_cannot_run_is_one_error():
    with pytest.raises(AlignkitError, match="vllm"):
        rl.trainer_defaults(RLStageConfig(backend="vllm"), None, has_eval=False)


def test_rl_transformers_backend_leaves_trl_generation_as_is():
    defaults = rl.trainer_defaults(RLStageConfig(), None, has_eval=False)
    assert "use_vllm" not in defaults


def test_shared_prefix_sampling_gives_the_per_sample_prefill_answers(tiny_model):
    """N candidates per prompt share one prefill (`generate.shared_prefix_cache`): the same greedy tokens as `generate`
    prefilling the prompt itself, with left padding (prompts of different lengths), and seeded samples that repeat."""
    from alignkit import generate, models
    from alignkit.config import ModelConfig
    from alignkit.hardware import pick_precision

    cfg = ModelConfig(name=tiny_model)
    tokenizer = models.load_tokenizer(cfg)
    model = models.load_base(cfg, pick_precision(cfg.precision), tokenizer=tokenizer).eval()
    prompts = [[{"role": "user", "content": "hi " * k}] for k in (1, 5, 12)]
    lengths = {
        len(tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"])
        for p in prompts
    }
    assert len(lengths) == 3, "the prompts must need left padding"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        cache = generate.shared_prefix_cache(model, batch.input_ids, batch.attention_mask, 2)
        last = model(
            input_ids=batch.input_ids[:, -1:].repeat_interleave(2, dim=0),
            attention_mask=batch.attention_mask.repeat_interleave(2, dim=0),
            position_ids=positions[:, -1:].repeat_interleave(2, dim=0),
            cache=cache,
        ).logits[:, -1]
        whole = model(**batch, position_ids=positions).logits[:, -1]
    assert torch.allclose(last, whole.repeat_interleave(2, dim=0), atol=1e-4)
    # n=1 is `generate` prefilling the prompt itself; greedy copies of it are what the shared prefill must give
    alone = generate.sample(model, tokenizer, prompts, 1, 8)
    assert generate.sample(model, tokenizer, prompts, 3, 8) == [replies * 3 for replies in alone]
    draws = []
    for _ in range(2):
        torch.manual_seed(7)
        draws.append(generate.sample(model, tokenizer, prompts, 3, 8, temperature=1.0, top_p=1.0))
    assert draws[0] == draws[1]
