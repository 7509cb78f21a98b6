"""One benchmark variant in its own process: `python -m benchmarks.measure VARIANT CONFIG.json RESULT.json`.

Each variant runs in a fresh process so its peak RSS is its own. The same two hooks wrap every trainer, alignkit's
and the plain scripts' alike: per-step token counts (from the batch each `training_step` receives) and per-step wall
clock (from `on_step_end`). The first step is warm-up and is left out of every rate.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

STEPS: list[dict[str, Any]] = []  # one record per optimizer step: tokens, label tokens, sequence lengths, end time


def install_hooks() -> None:
    """Count each step's tokens and time it, in whichever Trainer subclass runs (alignkit's or a plain script's)."""
    import transformers
    from transformers.trainer_callback import CallbackHandler

    training_step = transformers.Trainer.training_step

    def counted_training_step(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        STEPS.append(batch_stats(inputs) if isinstance(inputs, dict) else online_rl_stats(self.args))
        return training_step(self, model, inputs, *args, **kwargs)

    on_step_end = CallbackHandler.on_step_end

    def timed_on_step_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        if STEPS:
            STEPS[-1]["end"], STEPS[-1]["cpu"] = time.perf_counter(), time.process_time()
        return on_step_end(self, *args, **kwargs)

    transformers.Trainer.training_step = counted_training_step
    CallbackHandler.on_step_end = timed_on_step_end


def batch_stats(inputs: dict[str, Any]) -> dict[str, Any]:
    """Real (non-pad) tokens, tokens the loss falls on, padded tokens computed, and each sequence's length."""
    if "input_ids" not in inputs:  # preference batches: count rows only
        rows = next(v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor))
        return {"rows": int(rows)}
    ids = inputs["input_ids"]
    if "attention_mask" in inputs:
        lengths = inputs["attention_mask"].sum(-1).tolist()
    else:  # padding-free: one row, sequences start where position_ids restart at 0
        starts = [*(inputs["position_ids"][0] == 0).nonzero().flatten().tolist(), ids.shape[1]]
        lengths = [b - a for a, b in itertools.pairwise(starts)]
    labels = inputs.get("labels")
    loss_tokens = int((labels[:, 1:] != -100).sum()) if labels is not None else sum(lengths)
    if labels is not None and "completion_mask" in inputs:
        loss_tokens = int(inputs["completion_mask"][:, 1:].sum())
    return {
        "rows": len(lengths),
        "tokens": int(sum(lengths)),
        "loss_tokens": loss_tokens,
        "computed_tokens": int(ids.numel()),
        "lengths": [int(n) for n in lengths],
    }


def online_rl_stats(args: Any) -> dict[str, Any]:
    """An online-RL step trains on `per_device_train_batch_size` completions, sampled inside the step every
    `steps_per_generation` steps (its input is the prompts of the whole generation batch, repeated each step)."""
    return {"rows": args.per_device_train_batch_size, "generate_every": args.steps_per_generation}


def steady_state(steps: list[dict[str, Any]], warmup: int = 1) -> dict[str, Any]:
    """Rates over steps warmup+1..n: wall time from the end of step `warmup` to the end of step n."""
    timed = [s for s in steps if "end" in s]
    if len(timed) < warmup + 1:
        raise RuntimeError(f"need at least {warmup + 1} timed steps, got {len(timed)}")
    seconds = timed[-1]["end"] - timed[warmup - 1]["end"]
    counted = timed[warmup:]
    out: dict[str, Any] = {"steps_timed": len(counted), "seconds": seconds, "step_s": seconds / len(counted)}
    # CPU seconds of this process (all its threads): robust to other processes taking turns on the cores
    cpu_seconds = timed[-1]["cpu"] - timed[warmup - 1]["cpu"]
    out["cpu_seconds"] = cpu_seconds
    out["rows_per_s"] = sum(s["rows"] for s in counted) / seconds
    if "tokens" in counted[0]:
        for key in ("tokens", "loss_tokens", "computed_tokens"):
            out[key] = sum(s[key] for s in counted)
            out[f"{key}_per_s"] = out[key] / seconds
        out["tokens_per_cpu_s"] = out["tokens"] / cpu_seconds
        out["lengths"] = [n for s in counted for n in s["lengths"]]
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# --- variants ------------------------------------------------------------------------------------------------------


def run_cli() -> None:
    """`alignkit` with `sys.argv`, in this process (its trainer is the one the hooks time)."""
    from alignkit import cli

    try:
        cli.app(standalone_mode=False)
    except SystemExit as exc:  # typer exits 0 after a command
        if exc.code:
            raise


def sft_alignkit(cfg: dict[str, Any], work: Path) -> None:
    """`alignkit sft` exactly as a user runs it (defaults), on the benchmark data, no validation split."""
    sys.argv = ["alignkit", "sft", "--data", cfg["sft_data"], "--max-steps", str(cfg["sft_steps"])]
    sys.argv += ["--out", str(work / "run"), "--set", "data.validation_split=0"]
    run_cli()


def run_dtype(cfg: dict[str, Any]) -> torch.dtype:
    """The precision alignkit picks on this machine (`settings.precision`): the plain scripts and the ceiling use it."""
    return getattr(torch, cfg["precision"])


def sft_trl(cfg: dict[str, Any], work: Path, careful: bool) -> None:
    from benchmarks import plain_trl_sft

    steps = cfg["sft_steps_trl_default"] if not careful else cfg["sft_steps"]
    bf16 = careful and run_dtype(cfg) == torch.bfloat16
    plain_trl_sft.main(cfg["model_dir"], cfg["sft_data"], steps, careful=careful, bf16=bf16, out=str(work / "out"))


def sft_ceiling(cfg: dict[str, Any], work: Path) -> None:
    """The least work an SFT step can do: frozen base + LoRA in the run's precision, no padding, LM head only where
    the loss falls: every assistant turn's tokens, as `alignkit sft` trains a conversation; alignkit's allocator
    setting (`hardware.reuse_freed_memory`)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit import hardware

    hardware.reuse_freed_memory()  # the allocator setting `alignkit sft` trains with
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(cfg["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(cfg["model_dir"], dtype=run_dtype(cfg), attn_implementation="sdpa")
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = [json.loads(line) for line in Path(cfg["sft_data"]).read_text().splitlines()]

    def token_count(messages: list[dict[str, str]], **options: Any) -> int:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, **options)
        return len(getattr(ids, "input_ids", ids))

    examples = []  # (token ids, whether each position is a target: a token of an assistant turn)
    for row in rows:
        messages = row["messages"]
        full = tokenizer.apply_chat_template(messages, tokenize=True)
        full = list(getattr(full, "input_ids", full))[:512]
        target = torch.zeros(len(full), dtype=torch.bool)
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                target[token_count(messages[:i], add_generation_prompt=True) : token_count(messages[: i + 1])] = True
        examples.append((full, target))
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    backbone, head = model.base_model.model.model, model.base_model.model.lm_head
    model.train()
    for step in range(cfg["sft_steps"]):
        batch = [examples[order[(step * 4 + i) % len(order)]] for i in range(4)]
        ids = torch.tensor([t for full, _ in batch for t in full])[None]
        positions = torch.cat([torch.arange(len(full)) for full, _ in batch])[None]
        targets = torch.cat([torch.tensor([*full[1:], -100]) for full, _ in batch])
        loss_mask = torch.cat([torch.cat([target[1:], target.new_zeros(1)]) for _, target in batch])  # predicts one
        hidden = backbone(input_ids=ids, position_ids=positions).last_hidden_state[0]
        logits = head(hidden[loss_mask])
        loss = torch.nn.functional.cross_entropy(logits, targets[loss_mask])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lengths = [len(full) for full, _ in batch]
        STEPS.append(
            {
                "rows": 4,
                "tokens": sum(lengths),
                "loss_tokens": int(loss_mask.sum()),
                "computed_tokens": sum(lengths),
                "lengths": lengths,
                "end": time.perf_counter(),
                "cpu": time.process_time(),
            }
        )


def matmul_peak(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """The best matmul rate (GFLOP/s) in the run's precision on the training's own shapes, torch's default threads."""
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = [(1024, hidden, inter), (1024, inter, hidden), (1024, hidden, hidden), (2048, hidden, inter)]
    best, dtype = 0.0, run_dtype(cfg)
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(2):
            a @ b
        for _ in range(cfg.get("matmul_reps", 10)):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return {"gflops": best, "threads": torch.get_num_threads()}


def dpo_alignkit(cfg: dict[str, Any], work: Path, precompute: bool) -> dict[str, Any]:
    """`alignkit dpo` from the SFT run: the reference is the SFT adapter frozen beside the trained copy (one base)."""
    sys.argv = ["alignkit", "dpo", "--from", cfg["sft_run"], "--data", cfg["dpo_data"]]
    sys.argv += ["--max-steps", str(cfg["dpo_steps"]), "--out", str(work / "run"), "--set", "data.validation_split=0"]
    if precompute:
        sys.argv += ["--set", "trainer.precompute_ref_log_probs=true"]
    run_cli()
    return pairs_rate()


def pairs_rate() -> dict[str, Any]:
    """A DPO batch holds each pair's chosen and rejected rows: pairs/s is half the rows/s."""
    rates = steady_state(STEPS)
    return {"pairs_per_s": rates["rows_per_s"] / 2}


def dpo_trl(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from alignkit import runs
    from benchmarks import plain_trl_dpo

    adapter = str(runs.open_run(cfg["sft_run"]).adapter_dir)
    bf16 = run_dtype(cfg) == torch.bfloat16
    plain_trl_dpo.main(cfg["model_dir"], adapter, cfg["dpo_data"], cfg["dpo_steps"], bf16=bf16, out=str(work / "out"))
    return pairs_rate()


def rl_alignkit(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """`alignkit rl` (GRPO) from the SFT run, rewarded by the `concise` rule, as the plain script is."""
    sys.argv = ["alignkit", "rl", "--from", cfg["sft_run"], "--data", cfg["rl_prompts"], "--out", str(work / "run")]
    sys.argv += ["--max-steps", str(cfg["rl_steps"]), "--set", "rewards=[concise]"]
    run_cli()
    return completions_rate()


def rl_trl(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from alignkit import runs
    from benchmarks import plain_trl_grpo

    adapter = str(runs.open_run(cfg["sft_run"]).adapter_dir)
    bf16 = run_dtype(cfg) == torch.bfloat16
    plain_trl_grpo.main(cfg["model_dir"], adapter, cfg["rl_prompts"], cfg["rl_steps"], bf16=bf16, out=str(work / "out"))
    return completions_rate()


def completions_rate() -> dict[str, Any]:
    """Completions trained per second over whole generation cycles: the first cycle is warm-up, so the steps counted
    sample as often as they train (a run of 2 cycles or more)."""
    cycle = STEPS[0]["generate_every"]
    if len(STEPS) % cycle:
        raise RuntimeError(f"{len(STEPS)} steps are not whole generation cycles of {cycle} steps")
    return {"completions_per_s": steady_state(STEPS, warmup=cycle)["rows_per_s"]}


def generation_prompts(cfg: dict[str, Any]) -> list[list[dict[str, str]]]:
    from alignkit import generate
    from alignkit.paths import bundled_data

    return generate.load_prompts(str(bundled_data("prompts.jsonl")))[: cfg["gen_prompts"]]


def gen_batched(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """alignkit's candidate sampling: up to 16 prompts x N candidates per `generate` call; duplicates resampled."""
    from alignkit import generate

    model, tokenizer, source = generate.load_policy(None, cfg["model_dir"])
    prompts = generation_prompts(cfg)
    sampling = generate.Sampling(max_new_tokens=cfg["gen_tokens"])
    started = time.perf_counter()
    rows = generate.candidates(model, tokenizer, prompts, cfg["gen_n"], sampling, source)  # as `alignkit generate`
    seconds = time.perf_counter() - started
    completions = sum(len(r["candidates"]) for r in rows)
    return {"completions": completions, "gen_seconds": seconds, "completions_per_s": completions / seconds}


def gen_sequential(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    from benchmarks import plain_generate

    prompts = generation_prompts(cfg)
    model, tokenizer = plain_generate.load(cfg["model_dir"])
    started = time.perf_counter()  # sampling only, as in gen_batched
    replies = plain_generate.candidates(model, tokenizer, prompts, cfg["gen_n"], cfg["gen_tokens"])
    seconds = time.perf_counter() - started
    completions = sum(len(r) for r in replies)
    return {"completions": completions, "gen_seconds": seconds, "completions_per_s": completions / seconds}


SINGLE_STREAM_PROMPT = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]


def memory_bandwidth(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """The best read rate of a 512 MB fp32 tensor (GB/s) with torch's default threads: what bounds decoding, which
    reads every weight once per token."""
    x = torch.ones(128 * 2**20)
    best = 0.0
    for _ in range(cfg.get("bandwidth_reps", 8)):
        start = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return {"read_gb_per_s": best}


def gen_single(cfg: dict[str, Any], work: Path, adapter: bool = True) -> dict[str, Any]:
    """One greedy stream of up to `single_tokens` new tokens as the playground answers for an SFT run: llama.cpp on
    the base GGUF with the run's LoRA adapter merged in (here an SFT-shaped one: r 16 on every linear layer, random
    weights; the merged file is written before timing, as the playground caches it), where llama.cpp is installed;
    else transformers answers (`gen-single-transformers`). `adapter=False`: the playground's base model, the
    embedded GGUF as it is (`gen-single-base`). Tokens/s of the reply's tokens."""
    from alignkit import llamacpp, models
    from alignkit.config import ModelConfig
    from alignkit.generate import Sampling

    cfg_model = ModelConfig(name="embedded")
    tokenizer = models.load_tokenizer(cfg_model)
    adapters = [sft_shaped_adapter(cfg, work)] if adapter else []
    if llamacpp.unsupported(cfg_model, adapters, tokenizer):
        return {"not_installed": True}
    engine = llamacpp.load(cfg_model, adapters, tokenizer)
    sampling = Sampling(temperature=0.0, max_new_tokens=cfg["single_tokens"])
    "".join(engine.stream(SINGLE_STREAM_PROMPT, Sampling(temperature=0.0, max_new_tokens=8)))  # warm-up
    seconds, reply = median_time(lambda: "".join(engine.stream(SINGLE_STREAM_PROMPT, sampling)))
    tokens = len(tokenizer(reply, add_special_tokens=False)["input_ids"])
    return {"tokens": tokens, "gen_seconds": seconds, "tokens_per_s": tokens / seconds}


def median_time(stream: Callable[[], Any], times: int = 5) -> tuple[float, Any]:
    """The median wall time of `times` calls of `stream` (a greedy reply, the same each time: one takes under a
    second, where one busy moment of the machine moves a single timing by 10-20 %) and the last call's result."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        result = stream()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def sft_shaped_adapter(cfg: dict[str, Any], work: Path) -> Path:
    """A LoRA adapter of alignkit's default shape on the embedded model, saved once per bench run."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = work / "sft-shaped-adapter"
    if not (out / "adapter_model.safetensors").is_file():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(cfg["model_dir"], dtype=torch.float32)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(base, lora)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data *= 0.1  # a small update, as after SFT: the answers stay fluent
        model.save_pretrained(out)
    return out


def gen_single_transformers(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """The same stream in transformers (the fallback without llama.cpp): the base in the precision `auto` picks,
    exactly `single_tokens` tokens."""
    from alignkit import generate

    model, tokenizer, _ = generate.load_policy(None, cfg["model_dir"])
    inputs = tokenizer.apply_chat_template(
        SINGLE_STREAM_PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    n = cfg["single_tokens"]
    options = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=8, **options)  # warm-up
        started = time.perf_counter()
        model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, **options)
    seconds = time.perf_counter() - started
    return {"tokens": n, "gen_seconds": seconds, "tokens_per_s": n / seconds, "precision": str(model.dtype)}


def llama_cpp_model(path: Path | None = None) -> Any:
    """A GGUF file in llama.cpp (llama-cpp-python), a thread per core: the embedded model's own unless `path` is
    given; None if llama.cpp is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    from alignkit import models

    model = path or models.embedded_gguf()
    return Llama(model_path=str(model), n_threads=os.cpu_count(), n_ctx=1024, seed=0, verbose=False)


def llama_cpp_single(cfg: dict[str, Any], work: Path, path: Path | None = None) -> dict[str, Any]:
    llm = llama_cpp_model(path)
    if llm is None:
        return {"not_installed": True}
    llm.create_chat_completion(SINGLE_STREAM_PROMPT, max_tokens=8, temperature=0.0)
    seconds, reply = median_time(
        lambda: llm.create_chat_completion(SINGLE_STREAM_PROMPT, max_tokens=cfg["single_tokens"], temperature=0.0)
    )
    tokens = reply["usage"]["completion_tokens"]
    return {"tokens": tokens, "gen_seconds": seconds, "tokens_per_s": tokens / seconds}


def llama_cpp_single_merged(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """Plain llama.cpp on the file gen-single serves (the base with the SFT-shaped adapter merged, Q8_0): what the
    merged file's format costs, apart from alignkit's code."""
    from alignkit import llamacpp, models

    if importlib.util.find_spec("llama_cpp") is None:
        return {"not_installed": True}
    merged = llamacpp.cached_model([sft_shaped_adapter(cfg, work)], models.embedded_gguf())
    return llama_cpp_single(cfg, work, merged) | {"gguf_mb": merged.stat().st_size / 2**20}


def llama_cpp_sequential(cfg: dict[str, Any], work: Path) -> dict[str, Any]:
    """The same candidates as gen-batched, one llama.cpp completion after another (what a CPU user would run)."""
    llm = llama_cpp_model()
    if llm is None:
        return {"not_installed": True}
    prompts = generation_prompts(cfg)
    started, tokens = time.perf_counter(), 0
    for messages in prompts:
        for _ in range(cfg["gen_n"]):
            reply = llm.create_chat_completion(messages, max_tokens=cfg["gen_tokens"], temperature=0.8, top_p=0.95)
            tokens += reply["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    completions = len(prompts) * cfg["gen_n"]
    return {"completions": completions, "gen_seconds": seconds, "completions_per_s": completions / seconds,
            "tokens_per_s": tokens / seconds}  # fmt: skip


VARIANTS = {
    "dpo-alignkit": lambda cfg, work: dpo_alignkit(cfg, work, precompute=False),
    "dpo-alignkit-precompute": lambda cfg, work: dpo_alignkit(cfg, work, precompute=True),
    "dpo-trl-plain": dpo_trl,
    "rl-alignkit": rl_alignkit,
    "rl-trl-plain": rl_trl,
    "gen-batched": gen_batched,
    "gen-sequential": gen_sequential,
    "gen-single": gen_single,
    "gen-single-base": lambda cfg, work: gen_single(cfg, work, adapter=False),
    "gen-single-transformers": gen_single_transformers,
    "gen-llama-cpp-single-merged": llama_cpp_single_merged,
    "gen-llama-cpp-single": llama_cpp_single,
    "gen-llama-cpp-sequential": llama_cpp_sequential,
    "memory-bandwidth": memory_bandwidth,
    "sft-alignkit": sft_alignkit,
    "sft-trl-default": lambda cfg, work: sft_trl(cfg, work, careful=False),
    "sft-trl-careful": lambda cfg, work: sft_trl(cfg, work, careful=True),
    "sft-ceiling": sft_ceiling,
    "matmul-peak": matmul_peak,
}


def main() -> None:
    name, cfg_path, result_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    cfg = json.loads(cfg_path.read_text())
    variant, _, distribution = name.partition(":")  # "sft-alignkit:multiturn": the same variant on other data
    if distribution:
        cfg["sft_data"] = cfg[f"sft_data_{distribution}"]
    work = result_path.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    install_hooks()
    started = time.perf_counter()
    extra = VARIANTS[variant](cfg, work) or {}
    result = {"variant": name, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), **extra}
    result["torch_threads"] = torch.get_num_threads()  # at the end: a library that changed it would show here
    if STEPS:
        result |= steady_state(STEPS, warmup=STEPS[0].get("generate_every", 1))
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
