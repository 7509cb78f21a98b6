"""`python -m benchmarks.prefill_logits [MODEL]`: the prefill of a batch of prompts, the last position's logits kept
by `logits_to_keep=1` (a slice, as transformers' `generate` asks for it) and by an index tensor (`generate.decode`).

The embedded model by default, frozen, in the precision `auto` picks; the first 32 bundled prompts, left-padded as
`decode` pads them. The two ways alternate in one process, three times each, after a warm-up call. Writes
`benchmarks/results/prefill-logits-<date>.json`: each try's seconds, the ratio of the medians, and whether the two
ways' logits are equal.
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

from alignkit import generate, hardware, models
from alignkit.config import ModelConfig

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    cfg = ModelConfig(name=sys.argv[1]) if len(sys.argv) > 1 else ModelConfig()
    precision = hardware.pick_precision()
    tokenizer = models.load_tokenizer(cfg)
    # Frozen, as the merged run models that alignkit decodes with are: for a 3-d input, torch's matmul folds the
    # batch into one matrix when the weight needs gradients; for a frozen weight, only when the strides allow a view,
    # and the last position's slice does not: the weight is then expanded to the batch and copied.
    model = models.load_base(cfg, precision, tokenizer=tokenizer).eval().requires_grad_(False)
    prompts = generate.load_prompts(str(ROOT / "datasets" / "prompts.jsonl"))[:32]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    inputs = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
    positions = (inputs.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    length = inputs.input_ids.shape[1]
    ways = {"slice": 1, "index": torch.tensor([length - 1], device=model.device)}
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    logits = {}
    with torch.no_grad():
        for repetition in range(4):  # the first is a warm-up
            for way, keep in ways.items():
                started = time.perf_counter()
                out = model(**inputs, position_ids=positions, logits_to_keep=keep).logits[:, -1]
                if repetition:
                    seconds[way].append(round(time.perf_counter() - started, 3))
                logits[way] = out
    results = {
        "date": datetime.date.today().isoformat(),
        "command": "python -m benchmarks.prefill_logits " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **precision.manifest},
        "model": cfg.name,
        "prompts": len(prompts),
        "padded_length": length,
        "seconds": seconds,
        "slice_vs_index": round(statistics.median(seconds["slice"]) / statistics.median(seconds["index"]), 2),
        "same_logits": bool(torch.equal(logits["slice"], logits["index"])),
    }
    out_file = ROOT / "benchmarks" / "results" / f"prefill-logits-{results['date']}.json"
    out_file.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))
    print(f"results: {out_file}")
