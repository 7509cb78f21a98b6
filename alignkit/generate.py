"""Sampling from a run's model (or the base): answers for the demo and playground, candidates for annotation.

`alignkit generate` writes one JSONL row per prompt:
`{"prompt_id", "prompt": [messages], "candidates": [{"text", "run", "run_id", "model", "sampling"}, ...]}` (`run_id`:
the run's manifest `id`, the same wherever runs/ is moved), plus `spec` (the prompt's skill, reference, must_contain,
decline: `judges.PromptSpec`) when the prompt file has those fields, and `tools` (the function schemas the chat
template showed the model) when the prompt row has them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignkit import backends, distributed, jsonl, lineage, models, runs
from alignkit.config import ModelConfig
from alignkit.data import check_template_renders, check_tool_template
from alignkit.data.formats import ROW_KEYS, read_prompt_rows, tools_field
from alignkit.data.validate import BadRows, convert_all
from alignkit.errors import AlignkitError, option
from alignkit.hardware import pick_precision
from alignkit.jsonl import generated_row, prompt_id, prompt_row
from alignkit.judges import Prompt, PromptSpec

logger = logging.getLogger("alignkit")


@dataclass
class Sampling:
    """Sampling parameters, recorded with every candidate."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int = 0
    # The first candidate is the policy's greedy reply, the answer evaluation and the playground see: rating it
    # against samples gives pairs about the answer the policy actually gives.
    greedy_first: bool = False

    def __post_init__(self) -> None:
        """Out-of-range values are one error here, not a sampler's traceback or a silently empty reply."""
        check_sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


def check_sampling(temperature: float, top_p: float, max_new_tokens: int, prefix: str = "") -> None:
    """`temperature` >= 0 (0: greedy), `top_p` in (0, 1], `max_new_tokens` >= 1, each named as the option it is
    (`prefix`: of a second set of them, e.g. synth's `task_temperature`, a keyword argument rather than a flag)."""
    for name, value, ok, expected, example in (
        ("temperature", temperature, temperature >= 0, "at least 0 (0: greedy)", "0.8"),
        ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]", "0.95"),
        ("max_new_tokens", max_new_tokens, max_new_tokens >= 1, "at least 1", "128"),
    ):
        if not ok:
            fix = f"{prefix}{name}={example}" if prefix else option(name, example)
            raise AlignkitError(f"sampling: `{prefix}{name}` must be {expected}, got {value}", f"e.g. {fix}")


def check_counts(**counts: int | None) -> None:
    """Each count option (`n=4`, `batch_size=16`, ...: `--n`, `--batch-size`) is at least 1 when given (None: left
    to its default): 0 would loop forever or write nothing, and a negative `--limit` would drop prompts silently."""
    for name, value in counts.items():
        if value is not None and value < 1:
            raise AlignkitError(
                f"{option(name)} must be at least 1, got {value}", f"pass {option(name, 1)} or more, or leave it out"
            )


@dataclass(frozen=True)
class SamplingNames:
    """How a command names the options `check_distinct` speaks of: the demo's config keys; by default `generate`'s,
    as its caller spells them (`--temperature` or `temperature=`)."""

    temperature: str
    candidates: str
    sample: str  # how to ask for a sampling temperature
    greedy_first: str
    where: str = ""  # what the message starts with


def check_distinct(n: int, sampling: Sampling, names: SamplingNames | None = None) -> None:
    """Several candidates per prompt need sampling: greedy decoding gives one reply, and repeats are dropped."""
    names = names or SamplingNames(
        option("temperature"), option("n"), option("temperature", 0.8), option("greedy_first", True)
    )
    if n > 1 and sampling.temperature == 0:
        raise AlignkitError(
            f"{names.where}{names.temperature} 0 is greedy: the {n} candidates of a prompt ({names.candidates}) would "
            "all be the same reply",
            f"sample, e.g. {names.sample} (with {names.greedy_first} the first candidate is the greedy reply)",
        )


def answer(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int = 64, **sampling: Any
) -> str:
    """One reply to a conversation, with the chat template exactly as in training; greedy unless sampling is given."""
    return sample(model, tokenizer, [messages], n=1, max_new_tokens=max_new_tokens, **sampling)[0][0]


def sample(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    n: int,
    max_new_tokens: int,
    tools: Sequence[list[dict[str, Any]]] | None = None,
    **sampling: Any,
) -> list[list[str]]:
    """`n` replies for each conversation, in one batched `decode` (left padding); greedy if no sampling is given
    (`temperature`, `top_p`, `top_k`: the same warpers, in the same order, as transformers' `generate`). `tools`:
    each conversation's function schemas, shown by the chat template as in training."""
    tools = tools or [[]] * len(conversations)
    texts = [
        tokenizer.apply_chat_template(c, tools=t or None, tokenize=False, add_generation_prompt=True)
        for c, t in zip(conversations, tools, strict=True)
    ]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = tokenizer(texts, add_special_tokens=False, return_tensors="pt", padding=True).to(model.device)
    finally:
        tokenizer.padding_side = side
    tokens = decode(model, inputs.input_ids, inputs.attention_mask, max_new_tokens, n, **sampling)
    replies = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return [[r.strip() for r in replies[i * n : (i + 1) * n]] for i in range(len(conversations))]


# What `generate` samples from when the model's generation config leaves top_k unset (transformers 5 keeps it None
# in the config and applies 50 at call time). Reading None as "the whole vocabulary" once made every sampling step
# sort 49k logits per row: a third of the time of the demo's candidates.
GENERATE_DEFAULT_TOP_K = 50


def decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    max_new_tokens: int,
    n: int = 1,
    temperature: float | None = None,
    top_p: float = 1.0,
    top_k: int | None = None,
) -> list[list[int]]:
    """The new tokens of `n` replies to each left-padded prompt, end-of-sequence token excluded: greedy, or sampled
    (torch's global generator) when a positive `temperature` is given; `top_k` defaults to the model's generation
    config, or to 50 where it leaves it unset (as `generate` does); its other options (repetition penalty, ...) are
    not applied.

    Written out rather than `model.generate` for two costs that dominate batched decoding on a CPU: each prompt is
    prefilled once for its `n` replies, and a row that has ended leaves the batch (with `generate` it is computed
    to the longest reply). Sampling draws from the top-k tokens only, not the whole vocabulary (in `generate` a
    draw over 49k tokens x 64 rows took a quarter of each step on 2 CPU cores). Greedy tokens are those of
    `generate` (tests/unit/test_generate.py)."""
    import torch

    config = model.generation_config
    ends = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    eos = torch.tensor([t for t in ends if t is not None], dtype=torch.long, device=input_ids.device)
    top_k = next(k for k in (top_k, config.top_k, GENERATE_DEFAULT_TOP_K) if k is not None)
    cache = reserved_cache(model.config, max_new_tokens)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # as `generate` derives them (left padding)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache, logits_to_keep=1
        ).logits[:, -1]
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, attention_mask, positions = (t.repeat_interleave(n, 0) for t in (logits, attention_mask, positions))
        rows = torch.arange(logits.shape[0], device=logits.device)  # original row of each row still decoding
        tokens: list[list[int]] = [[] for _ in range(logits.shape[0])]
        for step in range(max_new_tokens):
            chosen = next_tokens(logits, temperature, top_p, top_k)
            ended = torch.isin(chosen, eos)
            for row, token, done in zip(rows.tolist(), chosen.tolist(), ended.tolist(), strict=True):
                if not done:
                    tokens[row].append(token)
            if step == max_new_tokens - 1 or bool(ended.all()):
                break
            if bool(ended.any()):
                keep = (~ended).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, chosen = rows[keep], chosen[keep]
                attention_mask, positions = attention_mask[keep], positions[keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=-1)
            positions = positions[:, -1:] + 1
            logits = model(
                input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=positions, cache=cache
            ).logits[:, -1]
    return tokens


def reserved_cache(model_config: Any, room: int) -> Any:
    """A `DynamicCache` whose full-attention layers keep `room` spare positions after the prompt, so that each step
    writes its keys and values in place. `DynamicLayer` concatenates instead: every step copied every layer's whole
    cache, a quarter of the CPU time of 16 prompts x 4 replies x 48 tokens on 2 cores; in place, that call took about
    10 % less wall time in paired runs (attention reads the strided views a little slower than compact tensors;
    hand-timed, benchmarks/notes.md, 2026-12-04)."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        # `keys`/`values` are views of the first `length` positions of `buffers`, which hold `room` more.
        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                shape = (*key_states.shape[:2], key_states.shape[2] + room, key_states.shape[3])
                self.buffers = tuple(
                    torch.empty(shape, dtype=t.dtype, device=t.device) for t in (key_states, value_states)
                )
                self.length = 0
            end = self.length + key_states.shape[-2]  # `decode` writes at most the prompt plus `room` positions
            self.buffers[0][..., self.length : end, :] = key_states
            self.buffers[1][..., self.length : end, :] = value_states
            self.length = end
            return self.view(self.buffers)

        def batch_repeat_interleave(self, repeats: int) -> None:
            self.view(tuple(b.repeat_interleave(repeats, dim=0) for b in self.buffers))

        def batch_select_indices(self, indices: Any) -> None:
            self.view(tuple(b[indices] for b in self.buffers))

        def view(self, buffers: tuple[Any, Any]) -> tuple[Any, Any]:
            self.buffers = buffers
            self.keys, self.values = (b[..., : self.length, :] for b in buffers)
            return self.keys, self.values

    cache = DynamicCache(config=model_config)
    cache.layers = [ReservedLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def next_tokens(logits: Any, temperature: float | None, top_p: float, top_k: int | None) -> Any:
    """One token per row: the argmax, or a draw from `filtered`."""
    import torch

    if not temperature:  # None or 0: greedy
        return logits.argmax(-1)
    probs, ids = filtered(logits, temperature, top_p, top_k)
    return ids.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)


def filtered(logits: Any, temperature: float, top_p: float, top_k: int | None) -> tuple[Any, Any]:
    """(probabilities, token ids) per row after temperature, top-k and top-p, as transformers' warpers give them:
    the `top_k` most likely tokens, of those the most likely whose probability first reaches `top_p`, renormalised.
    Tokens outside it have probability 0."""
    k = min(top_k, logits.shape[-1]) if top_k else logits.shape[-1]
    values, ids = logits.topk(k)  # sorted, most likely first; temperature after, on k logits instead of 49k
    probs = (values.float() / temperature).softmax(-1)
    probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)  # the mass before it already reaches top_p
    return probs / probs.sum(-1, keepdim=True), ids


def greedy_replies(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int,
    batch_size: int = 32,
    progress: Callable[[int], Any] | None = None,
    tools: Sequence[list[dict[str, Any]]] | None = None,
    save: Callable[[list[str]], Any] | None = None,
) -> list[str]:
    """One greedy reply per prompt, in batches (evaluation answers); `progress` is told each batch's size (e.g. a
    tqdm bar's `update`); `tools`: each prompt's function schemas; `save` is given each batch's replies as soon as
    they are made (an interrupted evaluation keeps them)."""
    replies = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        batch_tools = tools[start : start + batch_size] if tools else None
        made = [r for (r,) in sample(model, tokenizer, batch, 1, max_new_tokens, batch_tools)]
        replies += made
        if save:
            save(made)
        if progress:
            progress(len(batch))
    return replies


def load_prompts(path: str) -> list[list[dict[str, str]]]:
    """Prompts as message lists from rows with `prompt` (string or messages), `instruction`, `messages` or
    `conversations` (`jsonl.prompt_row`)."""
    return [item.messages for item in load_prompt_items(path)]


def load_prompt_items(path: str, key: str = "prompts") -> list[Prompt]:
    """Prompts with their specs (optional `skill`, `reference`, `must_contain`, `decline` fields), validated whole.
    `key`: the option that named `path`."""
    return [prompt for prompt, _ in load_prompts_with_columns(path, key)]


def check_prompt_tools(tokenizer: Any, prompts: Sequence[Prompt], source: str) -> None:
    """Prompts with `tools` need a chat template that shows them (`data.check_tool_template`): the model would be
    asked to call functions it is never shown; and no prompt may be one the template refuses (a system message
    under Gemma's: `data.check_template_renders`)."""
    rows = [{"messages": p.messages, "tools": p.tools} for p in prompts]
    check_tool_template(tokenizer, rows, [source])
    check_template_renders(tokenizer, rows, source)


# Columns a prompt row's messages and spec are read from (`jsonl.prompt_row`, `PromptSpec.from_row`), and the names
# TRL gives reward functions itself: not passed on as a row's other columns.
PROMPT_COLUMNS = ROW_KEYS | {"input", "context", "output", "response", "history", "system", "label", "prompt_id"}
PROMPT_COLUMNS |= {"tools"}
PROMPT_COLUMNS |= {"spec", "skill", "reference", "must_contain", "decline", "prompts", "completions", "completion_ids"}


def load_prompts_with_columns(
    path: str, key: str = "prompts", bad_rows: BadRows | None = None
) -> list[tuple[Prompt, dict[str, Any]]]:
    """`load_prompt_items`, each with the row's other columns (`solution`, `answer`, ...: what a reward function of
    `alignkit rl` may read). `bad_rows`: the prompts are `alignkit rl`'s training data (`data.skip_bad_rows`)."""
    return convert_all(
        read_prompt_rows(path, key),
        lambda data: (
            Prompt(prompt_row(data), PromptSpec.from_row(data), tools_field(data)),
            {k: v for k, v in data.items() if k not in PROMPT_COLUMNS},
        ),
        "rows with `prompt` or `question` (string or messages), `instruction`, `messages`, `conversations`, "
        "or preference pairs",
        bad_rows,
        path,
    )


def candidates(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    n: int,
    sampling: Sampling,
    source: dict[str, str],
    batch_size: int = 16,
    max_attempts: int = backends.MAX_ATTEMPTS,
    save: Callable[[list[dict[str, Any]]], Any] | None = None,
    tools: Sequence[list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """N distinct candidates per prompt (identical samples are dropped and resampled up to `max_attempts` times); with
    `sampling.greedy_first`, the first is the greedy reply. `save` is given each batch's rows as they are done.
    `tools`: each prompt's function schemas.

    Under `accelerate launch`, each process samples `batch_size` prompts of every `batch_size` x processes (its own
    draws: the seed plus its rank) and every process gets all the rows, in prompt order."""
    import torch
    from tqdm.auto import tqdm

    processes, me = distributed.world_size(), distributed.rank()
    torch.manual_seed(sampling.seed + me)
    rows = []
    params = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    # each process draws from the seed plus its rank, its share of each `batch_size` x processes prompts: the same seed
    # on another number of processes, or batch size, draws other samples
    launched = {"processes": processes, "batch_size": batch_size} if processes > 1 else {}
    record = {**source, "sampling": asdict(sampling) | launched}

    tools = tools or [[]] * len(prompts)

    def draw(conversations: list[tuple[list[dict[str, str]], list[dict[str, Any]]]], count: int) -> list[list[str]]:
        messages, their_tools = [c for c, _ in conversations], [t for _, t in conversations]
        return sample(model, tokenizer, messages, count, sampling.max_new_tokens, their_tools, **params)

    step = batch_size * processes
    with tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not distributed.is_main()) as progress:
        for start in range(0, len(prompts), step):
            mine = list(range(start, min(start + step, len(prompts))))[me::processes]
            batch, batch_tools = [prompts[i] for i in mine], [tools[i] for i in mine]
            mine_done = []
            if batch:  # the last round may leave a process none
                first: list[str | None] = [None] * len(batch)
                if sampling.greedy_first:
                    first = list(
                        greedy_replies(model, tokenizer, batch, sampling.max_new_tokens, batch_size, tools=batch_tools)
                    )
                pairs = list(zip(batch, batch_tools, strict=True))
                found = backends.distinct_replies(pairs, n, draw, max_attempts, first)
                mine_done = [
                    generated_row(p, texts, record, g, t)
                    for p, texts, g, t in zip(batch, found, first, batch_tools, strict=True)
                ]
            done = distributed.in_order(list(zip(mine, mine_done, strict=True)))
            if save:
                save(done)
            rows += done
            progress.update(len(done))
    return rows


def load_policy(from_run: str | None, model_name: str | None) -> tuple[Any, Any, dict[str, str]]:
    """(model, tokenizer, source record) for a run's policy (`runs.open_policy`: no reward run, no other `--model`),
    or for a bare base model when no run is given."""
    if from_run:
        run = runs.open_policy(from_run, model_name)
        model, tokenizer = lineage.load_inference_model(run.path)
        return model, tokenizer, runs.policy_source(run)
    cfg = ModelConfig(name=model_name or ModelConfig.name)
    tokenizer = models.load_tokenizer(cfg)
    model = models.load_base(cfg, pick_precision(cfg.precision), tokenizer=tokenizer).eval()
    return model, tokenizer, {"run": "", "model": cfg.name}


def resumable_source(earlier: dict[str, Any], source: dict[str, str]) -> dict[str, str]:
    """`source` (the policy about to write more rows) as the rows being resumed name it (`earlier`) where both are the
    same run (`runs.same_policy`): moved since (runs/ renamed, copied to another machine), it has another path."""
    if source.get("run") and runs.same_policy(earlier, source):
        return source | {key: earlier[key] for key in ("run", "run_id") if key in earlier}
    return source


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
    resume: bool = False,
) -> Path:
    """`alignkit generate`: N candidates per prompt from a run (or the base) to a JSONL file.

    Rows are saved batch by batch to `out.partial`, renamed to `out` when every prompt is done; `resume` continues
    an interrupted generation with the prompts it had not done (sampled from the seed again, so they differ from an
    uninterrupted run's). `backend`: transformers (here) or vllm (alignkit/backends.py).
    """
    check_counts(n=n, batch_size=batch_size, limit=limit)
    sampling = sampling or Sampling()
    check_distinct(n, sampling)
    backends.check(backend)
    if backend == "vllm" and distributed.world_size() > 1:
        raise AlignkitError(
            "--backend vllm samples in one process, not one per process of `accelerate launch`",
            "run `alignkit generate --backend vllm` without accelerate launch (vLLM uses the GPUs itself)",
        )
    out_path = Path(out)
    # under `accelerate launch` the processes split the prompts; the main one alone writes the file
    earlier = distributed.from_main(lambda: jsonl.start_partial(out_path, overwrite, resume, "generate"))
    items = load_prompt_items(prompts_file)[:limit]
    left = Counter(row.get("prompt_id") for row in earlier)  # a prompt listed twice has two rows
    todo = [item for item in items if not take(left, prompt_id(item.messages, item.tools))]
    rows = list(earlier)

    def save(done: list[dict[str, Any]]) -> None:
        specs = [item.spec for item in todo[len(rows) - len(earlier) :][: len(done)]]  # rows come in prompt order
        for row, spec in zip(done, specs, strict=True):
            if spec != PromptSpec():
                row["spec"] = json.loads(spec.to_json())
        if distributed.is_main():
            jsonl.append_partial(out_path, done)
        rows.extend(done)

    prompts = [item.messages for item in todo]
    made = [c for row in earlier for c in row.get("candidates", [])[:1]]

    def check_resumable(source: dict[str, str]) -> None:
        if made:
            current = resumable_source(made[0], source)
            jsonl.check_resumable(jsonl.partial_file(out_path), made[0], {**current, "sampling": asdict(sampling)})

    check_resumable({})  # before any model loads, for either backend
    if backend == "vllm":
        if any(item.tools for item in todo):
            raise AlignkitError(
                f"{prompts_file}: prompts with `tools` are not sampled by the vllm backend yet",
                f"use {option('backend', 'transformers')} (it renders each prompt's tools)",
            )
        save(backends.vllm_candidates(prompts, n, sampling, from_run, model_name))
    else:
        model, tokenizer, source = load_policy(from_run, model_name)
        check_resumable(source)
        check_prompt_tools(tokenizer, todo, prompts_file)
        tools = [item.tools for item in todo]
        candidates(model, tokenizer, prompts, n, sampling, source, batch_size=batch_size, save=save, tools=tools)
    if not distributed.is_main():
        return out_path
    jsonl.finish_partial(out_path)
    short = sum(len(row["candidates"]) < n for row in rows)
    if short:  # `feedback push` compares the most common count and skips prompts with fewer
        logger.warning(
            f"{short} of {len(rows)} prompts got fewer than {n} distinct non-empty candidates (each prompt is "
            f"sampled up to {backends.MAX_ATTEMPTS} times, repeats and empty replies dropped); a higher "
            f"{option('temperature')} or {option('max_new_tokens')} gives more"
        )
    return out_path


def take(counts: Counter[Any], key: Any) -> bool:
    """Whether `counts` still holds `key`, taking one of it."""
    if counts[key] > 0:
        counts[key] -= 1
        return True
    return False
