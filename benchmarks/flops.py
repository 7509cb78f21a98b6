"""Real FLOPs of an SFT step on a decoder-only model with LoRA on every linear layer (frozen base).

Per real (non-pad) token: forward 2N and backward through the frozen weights 2N (activation gradients only) for the
decoder's linear layers; the LM head only where the loss falls (elsewhere it is wasted work); LoRA 6 x its params;
attention scores and values 3 x (4 x layers x heads x head_dim) per causal pair (forward, then two backward matmuls).
"""

from __future__ import annotations

from typing import Any


def model_shape(config: dict[str, Any], lora_r: int = 16) -> dict[str, int]:
    """Parameter counts that set the FLOPs: decoder linear layers, LM head, LoRA, attention width."""
    hidden, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    q = heads * head_dim
    linears = [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden), (hidden, inter), (hidden, inter), (inter, hidden)]
    return {
        "decoder_params": layers * sum(i * o for i, o in linears),
        "head_params": config["vocab_size"] * hidden,
        "lora_params": layers * sum(lora_r * (i + o) for i, o in linears),
        "attention_width": layers * q,
    }


def sft_step_flops(shape: dict[str, int], lengths: list[int], loss_tokens: int) -> float:
    """FLOPs of forward + backward over sequences of `lengths` tokens with `loss_tokens` scored positions."""
    tokens = sum(lengths)
    linear = 4 * shape["decoder_params"] * tokens + 6 * shape["lora_params"] * tokens
    head = 4 * shape["head_params"] * loss_tokens
    causal_pairs = sum(n * (n + 1) // 2 for n in lengths)
    attention = 3 * 4 * shape["attention_width"] * causal_pairs
    return float(linear + head + attention)
