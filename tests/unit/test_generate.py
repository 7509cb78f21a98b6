"""alignkit's decoding loop (`generate.decode`) against transformers' `generate`: the same greedy tokens with left
padding, rows that end early and N replies per prompt; the same sampling distribution as its warpers; seeded draws."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from alignkit import backends, generate, jsonl, models
from alignkit.config import ModelConfig
from alignkit.errors import AlignkitError
from alignkit.hardware import pick_precision
from tests.conftest import REPO, run_cli, write_jsonl

PROMPTS = [[{"role": "user", "content": "hi " * k}] for k in (1, 5, 12, 3)]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    cfg = ModelConfig(name=tiny_model)
    tokenizer = models.load_tokenizer(cfg)
    model = models.load_base(cfg, pick_precision(cfg.precision), tokenizer=tokenizer).eval()
    # The shared tiny model says one token forever; larger random weights give replies that vary by prompt and step.
    seeded = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, 0.5, generator=seeded)
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    assert len(set(batch.attention_mask.sum(-1).tolist())) == len(PROMPTS), "the prompts must need left padding"
    return model, tokenizer, batch


def reference(model, batch, max_new_tokens: int, eos: int) -> list[list[int]]:
    """transformers' greedy tokens, each row cut at its first `eos` (excluded)."""
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos
        )[:, batch.input_ids.shape[1] :].tolist()
    return [row[: row.index(eos)] if eos in row else row for row in out]


def test_greedy_tokens_are_generates_with_rows_that_end_early(loaded):
    model, _, batch = loaded
    # A tiny random model never says its real end token: take as "end" a token its rows say at different steps, so
    # some rows leave the batch while others go on.
    free = reference(model, batch, 12, eos=-1)

    def ends(token: int) -> set[int | None]:
        return {row.index(token) if token in row else None for row in free}

    eos = max(sorted({t for row in free for t in row}), key=lambda token: len(ends(token)))
    assert len(ends(eos)) >= 2, "the chosen end token must end rows at different steps"
    expected = reference(model, batch, 12, eos)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        assert generate.decode(model, batch.input_ids, batch.attention_mask, 12) == expected
        # N replies per prompt share one prefill: greedy copies of the single reply
        tripled = generate.decode(model, batch.input_ids, batch.attention_mask, 12, n=3)
        assert tripled == [row for row in expected for _ in range(3)]
    finally:
        model.generation_config.eos_token_id = saved
    assert any(len(row) < 12 for row in expected) and any(len(row) == 12 for row in expected)


def test_no_prefill_copies_a_frozen_lm_head_per_row(loaded, tiny_model):
    """`logits_to_keep=1` hands the LM head a strided slice; for a frozen head, torch's matmul then copies the head's
    weight once per row (1.9x a prefill's time on the embedded model: benchmarks/prefill_logits.py). Every model
    `load_base` loads gets a contiguous head input instead, for `decode` and transformers' `generate` alike."""
    from transformers import AutoModelForCausalLM

    model, _, batch = loaded
    per_row = [len(batch.input_ids), *model.get_output_embeddings().weight.T.shape]  # [rows, hidden, vocab]

    def head_copies(frozen_model: Any, run: Callable[[Any], Any]) -> list[str]:
        trainable = [weight.requires_grad for weight in frozen_model.parameters()]
        frozen_model.requires_grad_(False)  # as the merged run models alignkit decodes with are
        try:
            with torch.profiler.profile(record_shapes=True) as profile, torch.no_grad():
                run(frozen_model)
        finally:
            for weight, needs_grad in zip(frozen_model.parameters(), trainable, strict=True):
                weight.requires_grad_(needs_grad)
        return [event.name for event in profile.events() if per_row in event.input_shapes]

    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=model.dtype).eval()
    assert head_copies(plain, lambda m: m(**batch, logits_to_keep=1)), "the check must see the copy a slice makes"
    assert not head_copies(model, lambda m: m(**batch, logits_to_keep=1))
    assert not head_copies(model, lambda m: generate.decode(m, batch.input_ids, batch.attention_mask, 1))
    assert not head_copies(model, lambda m: m.generate(**batch, max_new_tokens=1, do_sample=False))


def test_sampling_distribution_is_transformers_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, top_p, top_k in [(0.8, 0.95, 50), (1.0, 0.5, 0), (0.7, 1.0, 20), (1.3, 0.3, 100)]:
        scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
        if top_k:
            scores = TopKLogitsWarper(top_k)(None, scores)
        expected = TopPLogitsWarper(top_p)(None, scores).softmax(-1)
        probs, ids = generate.filtered(logits, temperature, top_p, top_k)
        ours = torch.zeros_like(expected).scatter(-1, ids, probs)
        assert torch.allclose(ours, expected, atol=1e-6), (temperature, top_p, top_k)
        assert (ours > 0).sum() < logits.numel(), "the filters must drop tokens"


def test_seeded_draws_repeat_and_differ_by_seed(loaded):
    model, tokenizer, _ = loaded
    draws = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        draws.append(generate.sample(model, tokenizer, PROMPTS, 3, 8, temperature=1.0, top_p=1.0))
    assert draws[0] == draws[1]
    assert draws[0] != draws[2]


def test_greedy_first_candidate_is_the_greedy_reply_and_the_rest_are_distinct_samples(loaded):
    model, tokenizer, _ = loaded
    sampling = generate.Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=3, greedy_first=True)
    rows = generate.candidates(model, tokenizer, PROMPTS, 3, sampling, {"run": "", "model": "tiny"})
    greedy = generate.greedy_replies(model, tokenizer, PROMPTS, 8)
    for row, reply in zip(rows, greedy, strict=True):
        texts = [c["text"] for c in row["candidates"]]
        assert texts[0] == reply and row["candidates"][0]["greedy"] is True
        assert len(set(texts)) == len(texts) == 3 and not any(c.get("greedy") for c in row["candidates"][1:])
    plain = generate.candidates(model, tokenizer, PROMPTS, 3, generate.Sampling(1.0, 1.0, 8, 3), {"run": ""})
    assert not any(c.get("greedy") for row in plain for c in row["candidates"])


def test_beside_the_greedy_reply_the_first_draw_samples_only_the_missing_replies(loaded):
    model, tokenizer, _ = loaded
    counts: list[int] = []

    def draw(conversations: list[list[dict[str, str]]], count: int) -> list[list[str]]:
        counts.append(count)
        return generate.sample(model, tokenizer, conversations, count, 8, temperature=1.0, top_p=1.0)

    greedy = list(generate.greedy_replies(model, tokenizer, PROMPTS, 8))
    found = backends.distinct_replies(PROMPTS, 3, draw, first=greedy)
    assert counts[0] == 2 and all(count == 3 for count in counts[1:])  # a redraw samples n again
    assert [texts[0] for texts in found] == greedy and all(len(set(texts)) == len(texts) for texts in found)


def test_a_config_without_top_k_samples_from_generates_default_top_50(loaded):
    """transformers 5 leaves top_k None in a model's generation config and applies 50 when it samples; `decode` must
    too, not draw from the whole vocabulary."""
    model, _, batch = loaded
    saved = model.generation_config.top_k
    model.generation_config.top_k = None
    try:
        with torch.no_grad():
            first = model(**batch).logits[:, -1]
        allowed = first.topk(generate.GENERATE_DEFAULT_TOP_K).indices
        torch.manual_seed(0)
        drawn = generate.decode(model, batch.input_ids, batch.attention_mask, 1, n=64, temperature=50.0, top_p=1.0)
    finally:
        model.generation_config.top_k = saved
    for row, tokens in enumerate(drawn):
        assert tokens[0] in allowed[row // 64].tolist()
    assert len({t[0] for t in drawn}) > 20, "a hot temperature spreads the draws over the top 50"


def test_prompts_given_fewer_distinct_candidates_than_n_are_reported(tiny_model, tmp_path, alignkit_records):
    """A near-greedy temperature repeats one reply: the file used to hold fewer candidates than --n without a word,
    and `feedback push` then skipped those prompts."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": "Name a color."}])
    out = tmp_path / "candidates.jsonl"
    sampling = generate.Sampling(temperature=1e-4, max_new_tokens=6)
    generate.run(str(prompts), str(out), n=3, model_name=tiny_model, sampling=sampling)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(len(row["candidates"]) < 3 for row in rows)
    assert "2 of 2 prompts got fewer than 3 distinct non-empty candidates" in alignkit_records.text


def test_greedy_decoding_with_several_candidates_is_refused_before_loading(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}])
    out = tmp_path / "candidates.jsonl"
    with pytest.raises(AlignkitError) as refused:
        generate.run(str(prompts), str(out), n=4, model_name="no-such-model", sampling=generate.Sampling(0.0))
    assert refused.value.message == (
        "--temperature 0 is greedy: the 4 candidates of a prompt (--n) would all be the same reply"
    )
    assert (
        refused.value.hint
        == "sample, e.g. --temperature 0.8 (with --greedy-first the first candidate is the greedy reply)"
    )
    assert not out.exists()
    assert generate.Sampling(0.0).temperature == 0  # one greedy reply per prompt stays allowed (--n 1)


def test_a_killed_generation_resumes_with_the_prompts_it_had_not_done(tiny_model, tmp_path):
    """`generate` used to write its file only at the end: a kill (or Ctrl-C) an hour in lost every candidate."""
    bundled = (REPO / "datasets" / "prompts.jsonl").read_text().splitlines()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(bundled[:40]) + "\n")  # with `skill`, `reference`: the rows get a `spec`
    out = tmp_path / "candidates.jsonl"
    partial = jsonl.partial_file(out)
    argv = ["generate", "--model", tiny_model, "--prompts", str(prompts), "--out", str(out), "--n", "2"]
    argv += ["--batch-size", "1", "--max-new-tokens", "16"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, "-m", "alignkit.cli", *argv], env=env, stderr=subprocess.DEVNULL) as run:
        deadline = time.monotonic() + 120
        while not (partial.is_file() and partial.read_text().count("\n") >= 4) and run.poll() is None:
            assert time.monotonic() < deadline, "no rows were saved while generating"
            time.sleep(0.05)
        run.kill()
    saved = partial.read_text().splitlines()
    assert not out.exists() and 4 <= len(saved) < 40, "the kill must land mid-generation"
    partial.write_text(partial.read_text() + '{"prompt_id": "cut off mid-wri')

    again = run_cli(*argv)
    assert again.returncode == 2 and f"interrupted `alignkit generate` saved {len(saved)} rows" in again.stderr
    other = run_cli(*argv, "--resume", "--temperature", "0.5")
    assert other.returncode == 2 and "sampling.temperature=0.8, not 0.5" in other.stderr
    resumed = run_cli(*argv, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows = out.read_text().splitlines()
    assert rows[: len(saved)] == saved  # what was done is kept as it was, not sampled again
    expected = [jsonl.prompt_id(p) for p in generate.load_prompts(str(prompts))]
    assert [json.loads(row)["prompt_id"] for row in rows] == expected
    assert all("spec" in json.loads(row) for row in rows) and not partial.exists()
