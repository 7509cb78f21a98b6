"""Sampling from a run's model (or the base): answers for the demo and playground, candidates for annotation."""

from __future__ import annotations

from typing import Any


def answer(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int = 64, **sampling: Any
) -> str:
    """One reply to a conversation, with the chat template exactly as in training; greedy unless sampling is given."""
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(model.device)
    options = {"do_sample": False} if not sampling else {"do_sample": True, **sampling}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **options)
    return tokenizer.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True).strip()
