"""`python -m benchmarks.prefill_logits [MODEL]`: the prefill of a batch of prompts that keeps the last position's
logits (`logits_to_keep=1`, as `decode`, transformers' `generate` and TRL's GRPO sampling ask for them), on a frozen
model as transformers loads it and with alignkit's contiguous LM-head input (`models.compact_head_input`, which
`load_base` adds); an index tensor for the last position is a third way to the same rows.

The embedded model by default, frozen (as a merged run model or a LoRA policy's head is), in the precision `auto`
picks; the first 32 bundled prompts, left-padded as `decode` pads them. The ways alternate in one process, three
times each, after a warm-up round. Writes `benchmarks/results/prefill-logits-<date>.json`: each try's seconds, the
ratio of the medians against alignkit's way, and whether every way's logits are equal.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from alignkit import generate, hardware, models
from alignkit.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    cfg = ModelConfig(name=sys.argv[1]) if len(sys.argv) > 1 else ModelConfig()
    precision = hardware.pick_precision()
    tokenizer = models.load_tokenizer(cfg)
    # transformers' model as it loads (`load_base` would add the contiguous head input already)
    model = AutoModelForCausalLM.from_pretrained(models.resolve_model(cfg.name), dtype=precision.dtype)
    model = model.to(precision.device).eval().requires_grad_(False)
    prompts = generate.load_prompts(str(ROOT / "datasets" / "prompts.jsonl"))[:32]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    inputs = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
    positions = (inputs.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    length = inputs.input_ids.shape[1]
    ways = {
        "slice": 1,
        "slice_contiguous_head_input": 1,
        "index": torch.tensor([length - 1], device=model.device),
    }
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    logits = {}
    with torch.no_grad():
        for repetition in range(4):  # the first is a warm-up
            for way, keep in ways.items():
                hook = models.compact_head_input(model) if way == "slice_contiguous_head_input" else None
                started = time.perf_counter()
                out = model(**inputs, position_ids=positions, logits_to_keep=keep).logits[:, -1]
                if repetition:
                    seconds[way].append(round(time.perf_counter() - started, 3))
                logits[way] = out
                if hook is not None:
                    hook.remove()
    ours = statistics.median(seconds["slice_contiguous_head_input"])
    results = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.prefill_logits " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **precision.manifest},
        "model": cfg.name,
        "prompts": len(prompts),
        "padded_length": length,
        "seconds": seconds,
        "median_vs_contiguous_head_input": {way: round(statistics.median(s) / ours, 2) for way, s in seconds.items()},
        "same_logits": all(torch.equal(logits["slice"], out) for out in logits.values()),
    }
    out_file = ROOT / "benchmarks" / "results" / f"prefill-logits-{results['date']}.json"
    out_file.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    print(f"results: {out_file}")
