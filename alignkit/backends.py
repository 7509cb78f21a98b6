"""Generation backends: `transformers` (default, any machine; alignkit/generate.py) and `vllm` (CUDA GPUs, installed).

- `alignkit generate --backend vllm`: the run's model is merged once into a plain model dir (`alignkit export`, cached
  under `~/.cache/alignkit/merged/`) and served by `vllm.LLM`, which batches and pages the KV cache itself.
- `alignkit rl --set backend=vllm`: TRL's own vLLM integration generates GRPO/RLOO completions
  (`GRPOConfig(use_vllm=True, vllm_mode="colocate")`: vLLM shares the training GPUs; `vllm_mode=server` with
  `trl vllm-serve` on other GPUs is set through `trainer.vllm_mode` and `trainer.vllm_server_base_url`).

Both `alignkit generate` backends keep N distinct candidates per prompt by one rule (`distinct_replies`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alignkit import export, hardware, models, runs
from alignkit.errors import AlignkitError, option
from alignkit.jsonl import generated_row
from alignkit.paths import cache_dir

BACKENDS = ("transformers", "vllm")
MAX_ATTEMPTS = 3  # samplings of a prompt before it is left with fewer distinct candidates than asked


def check(name: str) -> None:
    """A known backend that can run here (vLLM: a CUDA GPU and the `vllm` package)."""
    if name not in BACKENDS:
        raise AlignkitError(f"unknown generation backend {name!r}", f"one of: {', '.join(BACKENDS)}")
    if name == "vllm":
        hardware.require(
            "the vllm generation backend",
            "vllm",
            f"use the default backend: {option('backend', 'transformers')}",
        )


def rl_options(backend: str) -> dict[str, Any]:
    """`trainer:` defaults that make TRL's GRPO/RLOO generate with `backend`."""
    check(backend)
    return {"use_vllm": True, "vllm_mode": "colocate"} if backend == "vllm" else {}


def vllm_candidates(
    prompts: list[list[dict[str, str]]],
    n: int,
    sampling: Any,
    from_run: str | None,
    model_name: str | None,
    max_attempts: int = MAX_ATTEMPTS,
) -> list[dict[str, Any]]:
    """`alignkit generate`'s rows (same format as the transformers backend), sampled by vLLM."""
    from vllm import LLM, SamplingParams

    model_dir, source = servable_model(from_run, model_name)
    llm = LLM(model=str(model_dir), seed=sampling.seed)

    def draw(conversations: list[list[dict[str, str]]], count: int) -> list[list[str]]:
        params = SamplingParams(
            n=count, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens
        )
        outputs = llm.chat(conversations, params, use_tqdm=True)
        return [[completion.text.strip() for completion in output.outputs] for output in outputs]

    record = {**source, "sampling": asdict(sampling), "backend": "vllm"}
    first: list[str | None] = [None] * len(prompts)
    if sampling.greedy_first:
        greedy = SamplingParams(n=1, temperature=0.0, max_tokens=sampling.max_new_tokens)
        first = [output.outputs[0].text.strip() for output in llm.chat(prompts, greedy, use_tqdm=True)]
    found = distinct_replies(prompts, n, draw, max_attempts, first)
    return [generated_row(p, texts, record, g) for p, texts, g in zip(prompts, found, first, strict=True)]


def distinct_replies(
    prompts: list[list[dict[str, str]]],
    n: int,
    draw: Callable[[list[list[dict[str, str]]], int], list[list[str]]],
    max_attempts: int = MAX_ATTEMPTS,
    first: list[str | None] | None = None,
) -> list[list[str]]:
    """Up to `n` distinct non-empty replies per prompt, the rule of both backends: `draw(prompts, count)` samples
    `count` replies for each; identical ones are dropped and the prompts still short are drawn again, up to
    `max_attempts` times. `first`: one reply per prompt that opens its list (the greedy reply), samples equal to it
    count as repeats. The first draw samples only what is missing (n - 1 beside a greedy reply); a redraw samples n,
    as a prompt whose samples repeat needs more tries than replies."""
    found: list[list[str]] = [[text] if text else [] for text in first or [None] * len(prompts)]
    for attempt in range(max_attempts):
        todo = [i for i, got in enumerate(found) if len(got) < n]
        if not todo:
            break
        count = max(n - len(found[i]) for i in todo) if attempt == 0 else n
        for i, replies in zip(todo, draw([prompts[i] for i in todo], count), strict=True):
            for text in replies:
                if text and text not in found[i] and len(found[i]) < n:
                    found[i].append(text)
    return found


def servable_model(from_run: str | None, model_name: str | None) -> tuple[Path, dict[str, str]]:
    """A plain model dir vLLM can load: the run merged once (`merged_dir`), or the base."""
    if not from_run:
        name = model_name or "embedded"
        return Path(models.resolve_model(name)), {"run": "", "model": name}
    run = runs.open_policy(from_run, model_name)
    merged = merged_dir(run)
    if not (merged / export.EXPORT_RECORD).is_file():
        export.export(run.path, merged, overwrite=True)
    return merged, runs.policy_source(run)


def merged_dir(run: runs.Run) -> Path:
    """Where `run` merged is cached, named by what the merge is made of: the base's weights (sha256, else its name)
    and the id and files of each run of its lineage (`runs.lineage_digests`), not the run's path: a run moved or
    copied finds its merge, one trained again or resumed in its place gets another."""
    base = run.manifest.get("base") or {}
    ids = [runs.Run(step["run"]).manifest.get("id") for step in run.lineage]
    made_of = [base.get("sha256") or run.recorded_model_config.name, ids, runs.lineage_digests(run)]
    key = hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:16]
    return cache_dir() / "merged" / f"{run.stage}-{key}"
