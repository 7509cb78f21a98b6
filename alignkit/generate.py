"""Sampling from a run's model (or the base): answers for the demo and playground, candidates for annotation.

`alignkit generate` writes one JSONL row per prompt:
`{"prompt_id", "prompt": [messages], "candidates": [{"text", "run", "model", "sampling"}, ...]}`, plus `spec` (the
prompt's skill, reference, must_contain, decline: `judges.PromptSpec`) when the prompt file has those fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignkit import backends, lineage, models, runs
from alignkit.config import ModelConfig
from alignkit.data.formats import read_rows
from alignkit.data.validate import convert_all
from alignkit.errors import AlignkitError
from alignkit.hardware import pick_precision
from alignkit.jsonl import generated_row, prompt_row, write_jsonl
from alignkit.judges import Prompt, PromptSpec


@dataclass
class Sampling:
    """Sampling parameters, recorded with every candidate."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int = 0


def answer(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int = 64, **sampling: Any
) -> str:
    """One reply to a conversation, with the chat template exactly as in training; greedy unless sampling is given."""
    return sample(model, tokenizer, [messages], n=1, max_new_tokens=max_new_tokens, **sampling)[0][0]


def sample(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], n: int, max_new_tokens: int, **sampling: Any
) -> list[list[str]]:
    """`n` replies for each conversation, in one batched `generate` call (left padding); greedy if no sampling."""
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
    finally:
        tokenizer.padding_side = side
    options = {"do_sample": True, **sampling} if sampling else {"do_sample": False}
    with torch.no_grad():
        if n > 1:  # each prompt's N samples share one prefill of it
            options["cache"] = shared_prefix_cache(model, inputs.input_ids, inputs.attention_mask, n)
            inputs = {key: value.repeat_interleave(n, dim=0) for key, value in inputs.items()}
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **options)
    replies = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [[r.strip() for r in replies[i * n : (i + 1) * n]] for i in range(len(conversations))]


def shared_prefix_cache(model: Any, input_ids: Any, attention_mask: Any, n: int) -> Any:
    """The KV cache of every prompt but its last token, computed once and repeated for its `n` samples: `generate`
    then runs only the last prompt token and the new ones per sample (with `num_return_sequences=n` it would prefill
    each prompt n times, which on CPU costs about as much as decoding a short answer)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # as `generate` derives them (left padding)
    model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=positions[:, :-1],
        cache=cache,
        use_cache=True,
    )
    cache.batch_repeat_interleave(n)
    return cache


def greedy_replies(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """One greedy reply per prompt, in batches (evaluation answers)."""
    replies = []
    for start in range(0, len(prompts), batch_size):
        replies += [r for (r,) in sample(model, tokenizer, prompts[start : start + batch_size], 1, max_new_tokens)]
    return replies


def load_prompts(path: str) -> list[list[dict[str, str]]]:
    """Prompts as message lists from rows with `prompt` (string or messages), `instruction`, or `messages`."""
    return [item.messages for item in load_prompt_items(path)]


def load_prompt_items(path: str) -> list[Prompt]:
    """Prompts with their specs (optional `skill`, `reference`, `must_contain`, `decline` fields), validated whole."""
    return convert_all(
        read_rows(path),
        lambda data: Prompt(prompt_row(data), PromptSpec.from_row(data)),
        "rows with `prompt` (string or messages), `instruction` or `messages`",
    )


def candidates(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    n: int,
    sampling: Sampling,
    source: dict[str, str],
    batch_size: int = 16,
    max_attempts: int = 3,
) -> list[dict[str, Any]]:
    """N distinct candidates per prompt (identical samples are dropped and resampled up to `max_attempts` times)."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(sampling.seed)
    rows = []
    params = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    record = {**source, "sampling": asdict(sampling)}

    def draw(conversations: list[list[dict[str, str]]]) -> list[list[str]]:
        return sample(model, tokenizer, conversations, n, sampling.max_new_tokens, **params)

    with tqdm(total=len(prompts), desc="generating", unit="prompt") as progress:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            found = backends.distinct_replies(batch, n, draw, max_attempts)
            rows += [generated_row(prompt, texts, record) for prompt, texts in zip(batch, found, strict=True)]
            progress.update(len(batch))
    return rows


def load_policy(from_run: str | None, model_name: str | None) -> tuple[Any, Any, dict[str, str]]:
    """(model, tokenizer, source record) for a run's policy, or for a bare base model when no run is given."""
    if from_run:
        run = runs.open_run(from_run)
        model, tokenizer = lineage.load_inference_model(run.path)
        return model, tokenizer, {"run": str(run.path.resolve()), "model": run.manifest["model"]["name"]}
    cfg = ModelConfig(name=model_name or ModelConfig.name)
    tokenizer = models.load_tokenizer(cfg)
    model = models.load_base(cfg, pick_precision(cfg.precision), tokenizer=tokenizer).eval()
    return model, tokenizer, {"run": "", "model": cfg.name}


def run(
    prompts_file: str,
    out: str,
    n: int = 4,
    from_run: str | None = None,
    model_name: str | None = None,
    sampling: Sampling | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    overwrite: bool = False,
    backend: str = "transformers",
) -> Path:
    """`alignkit generate`: N candidates per prompt from a run (or the base) to a JSONL file.

    `backend`: transformers (here) or vllm (alignkit/backends.py).
    """
    if n < 1:
        raise AlignkitError(f"--n must be at least 1, got {n}")
    backends.check(backend)
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise AlignkitError(f"{out_path}: output file exists", "pass --overwrite or choose another --out")
    items = load_prompt_items(prompts_file)[:limit]
    prompts = [item.messages for item in items]
    if backend == "vllm":
        rows = backends.vllm_candidates(prompts, n, sampling or Sampling(), from_run, model_name)
    else:
        model, tokenizer, source = load_policy(from_run, model_name)
        rows = candidates(model, tokenizer, prompts, n, sampling or Sampling(), source, batch_size=batch_size)
    for row, item in zip(rows, items, strict=True):  # rows come in prompt order
        if item.spec != PromptSpec():
            row["spec"] = json.loads(item.spec.to_json())
    write_jsonl(out_path, rows, overwrite=overwrite)
    return out_path
