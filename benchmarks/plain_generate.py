"""Plain sequential candidate generation, as a user would write it with transformers: one prompt at a time.

`python benchmarks/plain_generate.py MODEL_DIR PROMPTS.jsonl N MAX_NEW_TOKENS`: N sampled replies per prompt, one
`generate` call per prompt (`num_return_sequences=N`).
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def load(model_dir: str):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


def candidates(model, tokenizer, prompts: list[list[dict[str, str]]], n: int, max_new_tokens: int) -> list[list[str]]:
    torch.manual_seed(0)
    completions = []
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            output = model.generate(
                **inputs,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        completions.append(tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return completions


if __name__ == "__main__":
    with open(sys.argv[2]) as f:
        rows = [json.loads(line) for line in f]
    prompts = [r.get("messages") or [{"role": "user", "content": r["prompt"]}] for r in rows]
    model, tokenizer = load(sys.argv[1])
    for replies in candidates(model, tokenizer, prompts, int(sys.argv[3]), int(sys.argv[4])):
        print(json.dumps(replies))
