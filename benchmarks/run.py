"""`make bench`: every variant in its own process, interleaved (A B C, A B C, ...) so load drifts hit all alike.

Writes `benchmarks/results/<date>.json` (every repetition) and `docs/benchmarks.md` (medians and ratios). Sizes come
from environment variables so a run fits the time there is (with the defaults, the variants' own wall times added up
to 28-42 minutes on 2 cores and the demo loop to 7-8 more: benchmarks/results/2026-12-04b.json, -c, -d):

- BENCH_REPS (3), BENCH_SECTIONS (sft,sft-multiturn,dpo,rl,gen,loop,roundtrip): `sft` on mixed-length chats,
  `sft-multiturn` the same trainers on long multi-turn conversations (benchmarks/data.py)
- BENCH_SFT_STEPS (12); BENCH_SFT_STEPS_TRL_DEFAULT (3; on CPUs without bf16, TRL's defaults do not run at all)
- BENCH_DPO_STEPS (8); BENCH_RL_STEPS (8: GRPO steps of 4 completions, one group of 4 per prompt; two
  generation cycles of alignkit's 4 steps, the first one warm-up)
- BENCH_GEN_PROMPTS (16), BENCH_GEN_N (4), BENCH_GEN_TOKENS (48), BENCH_SINGLE_TOKENS (128)
- llama.cpp rows need `llama-cpp-python` in the bench's environment (`pip install llama-cpp-python` builds it);
  without it they say "not installed"
- BENCH_LOOP (1: runs `alignkit demo` once, 7-8 min in those runs; 0 skips it), BENCH_LOOP_ARGS (extra `alignkit
  demo` flags)
- BENCH_ROUNDTRIP_RECORDS (1000); BENCH_SKIP (variants to leave out, e.g. sft-trl-default)
- BENCH_OUT (results dir), BENCH_DOC (markdown path)
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from alignkit.hardware import pick_precision
from benchmarks import data, flops

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {
    "sft": ["matmul-peak", "sft-alignkit", "sft-trl-careful", "sft-ceiling", "sft-trl-default"],
    "sft-multiturn": ["sft-alignkit:multiturn", "sft-trl-careful:multiturn", "sft-ceiling:multiturn"],
    "dpo": ["dpo-alignkit", "dpo-alignkit-precompute", "dpo-trl-plain"],
    "rl": ["rl-alignkit", "rl-trl-plain"],
    "gen": [
        "memory-bandwidth",
        "gen-single",
        "gen-single-base",
        "gen-single-transformers",
        "gen-llama-cpp-single",
        "gen-llama-cpp-single-merged",
        "gen-batched",
        "gen-sequential",
        "gen-llama-cpp-sequential",
    ],
}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def settings() -> dict[str, Any]:
    return {
        "reps": env_int("BENCH_REPS", 3),
        "sections": os.environ.get("BENCH_SECTIONS", "sft,sft-multiturn,dpo,rl,gen,loop,roundtrip").split(","),
        "sft_steps": env_int("BENCH_SFT_STEPS", 12),
        "sft_steps_trl_default": env_int("BENCH_SFT_STEPS_TRL_DEFAULT", 3),
        "dpo_steps": env_int("BENCH_DPO_STEPS", 8),
        "rl_steps": env_int("BENCH_RL_STEPS", 8),
        "gen_prompts": env_int("BENCH_GEN_PROMPTS", 16),
        "gen_n": env_int("BENCH_GEN_N", 4),
        "gen_tokens": env_int("BENCH_GEN_TOKENS", 48),
        "single_tokens": env_int("BENCH_SINGLE_TOKENS", 128),
        "loop": env_int("BENCH_LOOP", 1),
        "roundtrip_records": env_int("BENCH_ROUNDTRIP_RECORDS", 1000),
        # alignkit's `auto` precision on this machine. The plain scripts and the ceiling run in it too: what a careful
        # user picks here (bf16 where the CPU has it natively, else fp32), so no ratio is a precision's doing.
        "precision": pick_precision().dtype,
    }


def run_variant(variant: str, cfg_path: Path, work: Path, rep: int) -> dict[str, Any]:
    result_path = work / f"{variant}-{rep}.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = work / f"{variant}-{rep}.log"
    print(f"  rep {rep + 1}: {variant} ...", end="", flush=True)
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.measure", variant, str(cfg_path), str(result_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=env,
        )
    if proc.returncode != 0:
        print(f" failed (log: {log})")
        return {"variant": variant, "error": log.read_text()[-2000:]}
    result = json.loads(result_path.read_text())
    print(f" {result.get('wall_s', 0):.0f} s")
    return result


def median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def add_sft_figures(rep: dict[str, dict[str, Any]], shape: dict[str, int]) -> None:
    """Real FLOPs/s and MFU of each SFT variant against the matmul peak measured in the same repetition."""
    peak = rep.get("matmul-peak", {}).get("gflops")
    for name, result in rep.items():
        lengths = result.pop("lengths", None)
        if name.startswith("sft-") and lengths:
            step_flops = flops.sft_step_flops(shape, lengths, result["loss_tokens"])
            result["real_gflops"] = step_flops / result["seconds"] / 1e9
            if peak:
                result["mfu"] = result["real_gflops"] / peak


def sft_rows(settings: dict[str, Any]) -> int:
    return max(64, 4 * settings["sft_steps"] + 16)


def alignkit_examples_per_row(settings: dict[str, Any], tokenizer: Any = None) -> dict[str, float]:
    """Training examples `alignkit sft` makes per conversation of each SFT distribution (`data.sft_examples` with the
    model's tokenizer), where the plain script and the ceiling make one per conversation. A results file records it;
    files from before it did (2026-12-02 and earlier) were made one example per assistant turn."""
    if "alignkit_examples_per_row" in settings:
        return settings["alignkit_examples_per_row"]
    from alignkit.data import prompt_completion, sft_examples

    distributions = {"mixed": data.sft_rows(sft_rows(settings)), "multiturn": data.multiturn_rows(sft_rows(settings))}
    # an older results file (no tokenizer): one prompt->completion example per assistant turn
    examples = prompt_completion if tokenizer is None else lambda rows: sft_examples(rows, tokenizer)
    return {name: len(examples(rows)) / len(rows) for name, rows in distributions.items()}


def add_conversation_rates(reps: list[dict[str, dict[str, Any]]], examples_per_row: dict[str, float]) -> None:
    """conversations_per_s: the data covered per second, comparable where one trainer makes several examples of a
    conversation and another one (real tokens/s is not: a conversation split per turn repeats its earlier turns)."""
    for rep in reps:
        for name, result in rep.items():
            if name.startswith("sft-") and isinstance(result.get("rows_per_s"), int | float):
                distribution = name.partition(":")[2] or "mixed"
                per_row = examples_per_row.get(distribution, 1.0) if name.startswith("sft-alignkit") else 1.0
                result["conversations_per_s"] = result["rows_per_s"] / per_row


def summarise(reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Median of every figure per variant, and ratios taken within each repetition (then their median)."""
    variants = sorted({v for rep in reps for v in rep})
    keys = ["tokens_per_s", "tokens_per_cpu_s", "loss_tokens_per_s", "step_s", "peak_rss_mb", "mfu", "real_gflops"]
    keys += ["gflops", "gguf_mb"]
    keys += ["rows_per_s", "conversations_per_s", "pairs_per_s", "completions_per_s", "wall_s", "read_gb_per_s"]
    medians = {v: {k: median([rep[v] for rep in reps if v in rep], k) for k in keys} for v in variants}
    medians = {v: {k: x for k, x in m.items() if x is not None} for v, m in medians.items()}

    def ratio(a: str, b: str, key: str) -> float | None:
        values = [
            rep[a][key] / rep[b][key] for rep in reps if a in rep and b in rep and rep[a].get(key) and rep[b].get(key)
        ]
        return statistics.median(values) if values else None

    ratios = {
        "sft_tokens_per_s_vs_trl_careful": ratio("sft-alignkit", "sft-trl-careful", "tokens_per_s"),
        "sft_tokens_per_cpu_s_vs_trl_careful": ratio("sft-alignkit", "sft-trl-careful", "tokens_per_cpu_s"),
        "sft_tokens_per_cpu_s_vs_ceiling": ratio("sft-alignkit", "sft-ceiling", "tokens_per_cpu_s"),
        "sft_tokens_per_s_vs_trl_default": ratio("sft-alignkit", "sft-trl-default", "tokens_per_s"),
        "sft_tokens_per_s_vs_ceiling": ratio("sft-alignkit", "sft-ceiling", "tokens_per_s"),
        "sft_trl_careful_vs_ceiling": ratio("sft-trl-careful", "sft-ceiling", "tokens_per_s"),
        "sft_peak_rss_vs_trl_careful": ratio("sft-alignkit", "sft-trl-careful", "peak_rss_mb"),
        "sft_multiturn_tokens_per_s_vs_trl_careful": ratio(
            "sft-alignkit:multiturn", "sft-trl-careful:multiturn", "tokens_per_s"
        ),
        "sft_multiturn_conversations_per_s_vs_trl_careful": ratio(
            "sft-alignkit:multiturn", "sft-trl-careful:multiturn", "conversations_per_s"
        ),
        "sft_multiturn_conversations_per_s_vs_ceiling": ratio(
            "sft-alignkit:multiturn", "sft-ceiling:multiturn", "conversations_per_s"
        ),
        "sft_multiturn_tokens_per_s_vs_ceiling": ratio(
            "sft-alignkit:multiturn", "sft-ceiling:multiturn", "tokens_per_s"
        ),
        "dpo_pairs_per_s_vs_plain": ratio("dpo-alignkit", "dpo-trl-plain", "pairs_per_s"),
        "dpo_precompute_pairs_per_s_vs_plain": ratio("dpo-alignkit-precompute", "dpo-trl-plain", "pairs_per_s"),
        "rl_completions_per_s_vs_plain": ratio("rl-alignkit", "rl-trl-plain", "completions_per_s"),
        "gen_completions_per_s_batched_vs_sequential": ratio("gen-batched", "gen-sequential", "completions_per_s"),
        "gen_single_tokens_per_s_vs_llama_cpp": ratio("gen-single", "gen-llama-cpp-single", "tokens_per_s"),
        "gen_single_tokens_per_s_vs_llama_cpp_same_file": ratio(
            "gen-single", "gen-llama-cpp-single-merged", "tokens_per_s"
        ),
        "gen_single_base_tokens_per_s_vs_llama_cpp": ratio("gen-single-base", "gen-llama-cpp-single", "tokens_per_s"),
        "gen_single_transformers_tokens_per_s_vs_llama_cpp": ratio(
            "gen-single-transformers", "gen-llama-cpp-single", "tokens_per_s"
        ),
        "gen_batched_vs_llama_cpp_sequential": ratio("gen-batched", "gen-llama-cpp-sequential", "completions_per_s"),
    }
    rss = {v: medians.get(v, {}).get("peak_rss_mb") for v in ("dpo-alignkit", "dpo-trl-plain")}
    if all(rss.values()):
        ratios["dpo_peak_rss_saved_mb"] = rss["dpo-trl-plain"] - rss["dpo-alignkit"]
    return {"medians": medians, "ratios": {k: v for k, v in ratios.items() if v is not None}}


def rendered(results: Path) -> str:
    """docs/benchmarks.md as written from the results file `results` (and benchmarks/notes.md)."""
    report = json.loads(results.read_text())
    add_conversation_rates(report["repetitions"], alignkit_examples_per_row(report["settings"]))
    return markdown(report | summarise(report["repetitions"]))


def main() -> None:
    if sys.argv[1:2] == ["--render"]:  # re-render the markdown from a results file (e.g. after editing notes.md)
        doc = Path(os.environ.get("BENCH_DOC", ROOT / "docs" / "benchmarks.md"))
        doc.write_text(rendered(Path(sys.argv[2])))
        print(f"wrote {doc}")
        return
    s = settings()
    from alignkit import models
    from alignkit.config import ModelConfig

    model_dir = models.resolve_model("embedded")
    s["alignkit_examples_per_row"] = alignkit_examples_per_row(s, models.load_tokenizer(ModelConfig(name=model_dir)))
    model_config = json.loads((Path(model_dir) / "config.json").read_text())
    shape = flops.model_shape(model_config)
    out_dir = Path(os.environ.get("BENCH_OUT", ROOT / "benchmarks" / "results"))
    doc = Path(os.environ.get("BENCH_DOC", ROOT / "docs" / "benchmarks.md"))
    work = Path(tempfile.mkdtemp(prefix="alignkit-bench-"))
    print(f"benchmark settings {s}\nwork dir {work}")
    cfg = {
        **s,
        "model_dir": model_dir,
        "hidden_size": model_config["hidden_size"],
        "intermediate_size": model_config["intermediate_size"],
        "sft_data": str(data.write_jsonl(data.sft_rows(sft_rows(s)), work / "sft.jsonl")),
        "sft_data_multiturn": str(data.write_jsonl(data.multiturn_rows(sft_rows(s)), work / "sft-multiturn.jsonl")),
        "dpo_data": str(data.write_jsonl(data.preference_rows(4 * s["dpo_steps"]), work / "pairs.jsonl")),
        "rl_prompts": str(data.write_jsonl(data.rl_prompts(4 * s["rl_steps"]), work / "rl-prompts.jsonl")),
        "work": str(work),
    }
    cfg_path = work / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    if "dpo" in s["sections"] or "rl" in s["sections"]:
        cfg["sft_run"] = prepare_sft_run(cfg, work)
        cfg_path.write_text(json.dumps(cfg))

    skip = os.environ.get("BENCH_SKIP", "").split(",")
    variants = [v for section in s["sections"] for v in SECTIONS.get(section, []) if v not in skip]
    reps: list[dict[str, dict[str, Any]]] = []
    for rep in range(s["reps"]):
        results = {v: run_variant(v, cfg_path, work, rep) for v in variants}
        add_sft_figures(results, shape)
        reps.append(results)
    add_conversation_rates(reps, alignkit_examples_per_row(s))
    extra: dict[str, Any] = {}
    if "loop" in s["sections"] and s["loop"]:
        from benchmarks import loop

        extra["loop"] = loop.demo_stages(work)
    if "roundtrip" in s["sections"]:
        from benchmarks import loop

        extra["roundtrip"] = loop.roundtrip(s["roundtrip_records"], s["reps"])

    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": s,
        "model": {"dir": model_dir, **shape, "weights_mb": weights_mb(Path(model_dir)), "gguf_mb": gguf_mb()},
        **summarise(reps),
        **extra,
        "repetitions": reps,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    result_file = out_dir / f"{report['date'][:10]}.json"
    result_file.write_text(json.dumps(report, indent=1))
    doc.write_text(markdown(report))
    print(json.dumps({"ratios": report["ratios"], **extra}, indent=1))
    print(f"wrote {result_file} and {doc}")


def weights_mb(model_dir: Path) -> float:
    """One copy of the model's weights in memory as stored (fp32 safetensors for the embedded model), in MB."""
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20


def gguf_mb() -> float:
    """The embedded model's GGUF file (what llama.cpp reads per token), in MB."""
    from alignkit import models

    return models.embedded_gguf().stat().st_size / 2**20


def decode_bounds(report: dict[str, Any]) -> dict[str, float]:
    """Tokens/s that single-stream decoding cannot exceed at the measured read bandwidth: each token reads every
    weight once (fp32 safetensors for transformers, the GGUF file for llama.cpp)."""
    bandwidth = report["medians"].get("memory-bandwidth", {}).get("read_gb_per_s")
    if not bandwidth:
        return {}
    sizes = {"fp32": report["model"].get("weights_mb"), "gguf": report["model"].get("gguf_mb")}
    return {name: bandwidth * 1e9 / (mb * 2**20) for name, mb in sizes.items() if mb}


def prepare_sft_run(cfg: dict[str, Any], work: Path) -> str:
    """The SFT run every DPO variant starts from (a few steps: only its adapter's shape matters here)."""
    run_dir = work / "sft-parent"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "alignkit.cli",
            "sft",
            "--data",
            cfg["sft_data"],
            "--max-steps",
            "2",
            "--out",
            str(run_dir),
            "--set",
            "data.validation_split=0",
        ],
        check=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    return str(run_dir)


def cpu_model(machine: dict[str, Any]) -> str:
    """The CPU model and its bf16 and matrix features, as the doc's first line names them; empty where not recorded."""
    if not machine.get("cpu_model"):
        return ""
    features = ", ".join(machine.get("cpu_features", [])) or "no AVX512-BF16 or AMX"
    return f", {machine['cpu_model']} ({features})"


def machine() -> dict[str, Any]:
    import torch

    from alignkit import hardware

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": hardware.cpuinfo_field("model name"),
        "cpu_features": sorted(hardware.NATIVE_BF16_FLAGS & hardware.cpu_flags()),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


SHORT_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
METHOD = [
    "How: each variant runs in its own process (its peak RSS is its own) and the variants alternate within every",
    "repetition. The same hooks time every trainer: rates count steps 2..n (step 1 is warm-up) from the batches each",
    "`training_step` receives. *Real tokens* are non-pad tokens; *loss tokens* those the loss falls on (the replies).",
    "*Real FLOPs* (`benchmarks/flops.py`): 4 x decoder linear params per real token (forward, and backward through",
    "the frozen weights), 4 x LM-head params per loss token, 6 x LoRA params per token, and causal attention",
    "(3 x 4 x layers x width per causal pair); MFU divides them by the matmul peak of the same repetition, in the",
    "run's precision (alignkit's `auto` on this machine, which the plain scripts and the ceiling use too).",
    "The plain scripts (`benchmarks/plain_trl_*.py`, `benchmarks/plain_generate.py`) are what TRL's and transformers'",
    "docs show; the ceiling (`sft-ceiling` in `benchmarks/measure.py`) is a hand-written padding-free step with the LM",
    "head only on loss positions: the least work a step can do.",
]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    m, r, s = report["medians"], report["ratios"], report["settings"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {report['date']} on {report['machine']['cores']} CPU cores{cpu_model(report['machine'])} "
        f"(load average {fmt(report['machine']['load_average_at_end'])} at the end of the run; figures are medians of "
        f"{s['reps']} interleaved repetitions; ratios are taken within each repetition). Reproduce with `make bench`;"
        " every repetition is in `benchmarks/results/`.",
    ]
    sft: list[str] = []  # table rows; none in a generation-only run, which then has no SFT section
    precision = SHORT_PRECISION[s.get("precision", "float32")]  # runs before 2026-12-03 (night) were all fp32
    names = {
        "sft-alignkit": "`alignkit sft` (defaults)",
        "sft-trl-careful": f"plain TRL, {precision}, no gradient checkpointing",
        "sft-trl-default": "plain TRL, defaults untouched",
        "sft-ceiling": "ceiling: frozen-base fwd+bwd, no padding, no extra passes",
        "sft-alignkit:multiturn": "long multi-turn: `alignkit sft` (defaults)",
        "sft-trl-careful:multiturn": f"long multi-turn: plain TRL, {precision}, no gradient checkpointing",
        "sft-ceiling:multiturn": "long multi-turn: ceiling",
    }
    for v, name in names.items():
        if m.get(v):
            x = m[v]
            sft.append(
                f"| {name} | {fmt(x.get('tokens_per_s'), 1)} | {fmt(x.get('tokens_per_cpu_s'), 1)} | "
                f"{fmt(x.get('loss_tokens_per_s'), 1)} | {fmt(x.get('conversations_per_s'), 3)} | "
                f"{fmt(x.get('step_s'))} | {fmt(x.get('peak_rss_mb'), 0)} | {fmt(x.get('real_gflops'), 1)} | "
                f"{fmt(x.get('mfu'))} |"
            )
    for v, error in failures(report).items():
        sft.append(f"| {names.get(v, v)} | did not run: `{error}` ||||||||")
    if sft:
        lines += [
            "",
            "## SFT throughput (embedded SmolLM2-135M, LoRA r=16 on all linear layers, batch 4; mixed-length chats,"
            " and long multi-turn conversations where marked)",
            "",
            "| variant | real tokens/s | real tokens/CPU-s | loss tokens/s | conversations/s | step s | peak RSS MB | "
            "real GFLOP/s | MFU |",
            "|---|---|---|---|---|---|---|---|---|",
            *sft,
        ]
        if "matmul-peak" in m:
            peak = fmt(m["matmul-peak"].get("gflops"), 1)
            lines += ["", f"{precision} matmul peak measured in the same run: {peak} GFLOP/s."]
        lines += ["", *METHOD]
    lines += ["", "## Targets (issues #7 and #16), measured in this run", "", "| figure | target | measured | met |"]
    lines += ["|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {fmt(value)} | {met} |" for name, goal, value, met in targets(report)]
    lines += ["", "All ratios (medians of the per-repetition ratios):", "", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {fmt(v)} |" for k, v in r.items()]
    dpo = {v: m[v] for v in ("dpo-alignkit", "dpo-alignkit-precompute", "dpo-trl-plain") if v in m}
    if dpo:
        lines += ["", "## DPO", "", "| variant | pairs/s (steps) | wall s (with load, precompute) | peak RSS MB |"]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {v} | {fmt(x.get('pairs_per_s'), 3)} | {fmt(x.get('wall_s'), 0)} | {fmt(x.get('peak_rss_mb'), 0)} |"
            for v, x in dpo.items()
        ]
    rl = {v: m[v] for v in SECTIONS["rl"] if v in m}
    if rl:
        lines += ["", "## GRPO (`concise` reward, 4 completions per step, groups of 4, 48 tokens)", ""]
        lines += [
            "| variant | completions/s (steps) | step s | wall s (with load) | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {v} | {fmt(x.get('completions_per_s'), 3)} | {fmt(x.get('step_s'))} | {fmt(x.get('wall_s'), 0)} | "
            f"{fmt(x.get('peak_rss_mb'), 0)} |"
            for v, x in rl.items()
        ]
    gen = [v for v in SECTIONS["gen"] if v in m or v in not_installed(report)]
    if gen:
        lines += ["", "## Generation (embedded SmolLM2-135M)", ""]
        lines += ["| variant | tokens/s | completions/s | wall s (with load) |", "|---|---|---|---|"]
        for v in (v for v in gen if v != "memory-bandwidth"):
            if v in not_installed(report):
                lines.append(f"| {v} | not installed (llama-cpp-python) | | |")
                continue
            x = m[v]
            lines.append(
                f"| {v} | {fmt(x.get('tokens_per_s'), 1)} | {fmt(x.get('completions_per_s'))} | "
                f"{fmt(x.get('wall_s'), 1)} |"
            )
        bounds = decode_bounds(report)
        if llama_single_stream(report):
            precision = stream_precision(report)
            single_stream = (
                f"gen-single is the playground's path for an SFT run (one greedy stream of up to {s['single_tokens']}"
                " tokens: llama.cpp on the GGUF with an adapter of alignkit's default shape merged in, Q8_0, "
                "`alignkit/llamacpp.py`); gen-single-base the playground's stream for the base model (the embedded "
                "GGUF as it is); gen-single-transformers the same stream in transformers "
                f"({precision}, exactly {s['single_tokens']} tokens), which answers where llama.cpp is not installed;"
            )
        else:  # results files from before the llama.cpp engine (2026-12-02 and earlier)
            single_stream = (
                f"gen-single is the playground's and evaluation's path then (transformers, one greedy stream, "
                f"{s['single_tokens']} tokens);"
            )
        if bounds:
            lines += [
                "",
                f"Read bandwidth measured in the same run: {fmt(m['memory-bandwidth']['read_gb_per_s'], 1)} GB/s. "
                f"Single-stream decoding reads every weight per token, so it cannot exceed "
                f"{fmt(bounds.get('fp32'), 1)} tokens/s from the fp32 weights ({fmt(report['model']['weights_mb'], 0)}"
                f" MB) or {fmt(bounds.get('gguf'), 1)} tokens/s from the GGUF file "
                f"({fmt(report['model'].get('gguf_mb'), 0)} MB). {single_stream} gen-batched is `alignkit generate`'s "
                f"({s['gen_prompts']} prompts x {s['gen_n']} candidates x {s['gen_tokens']} tokens, the prompt's "
                "prefill shared by its candidates); gen-sequential the same candidates one prompt at a time with "
                "plain transformers; gen-llama-cpp-single and -sequential the same GGUF in llama.cpp"
                + merged_file(m)
                + ".",
            ]
    if "loop" in report:
        lines += ["", "## Full embedded loop (`alignkit demo`), seconds per stage", ""]
        lines += ["| stage | s |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report["loop"].items()]
    if "roundtrip" in report:
        lines += ["", "## Annotation round-trip (local Argilla)", "", "| step | s |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in report["roundtrip"].items()]
    notes = ROOT / "benchmarks" / "notes.md"  # hand-written: where the time goes, what was tried
    if notes.is_file():
        lines += ["", notes.read_text().strip()]
    return "\n".join(lines) + "\n"


def not_installed(report: dict[str, Any]) -> set[str]:
    """Variants that found their engine missing (llama.cpp) in every repetition."""
    reps = report.get("repetitions", [])
    found = {v for rep in reps for v, r in rep.items() if r.get("not_installed")}
    return {v for v in found if all(rep.get(v, {}).get("not_installed") for rep in reps)}


def ratio_to(value: float | None, bound: float | None) -> float | None:
    return value / bound if value and bound else None


def failures(report: dict[str, Any]) -> dict[str, str]:
    """The last line of each SFT variant's error, for variants that failed in every repetition."""
    out = {}
    for v in sorted({v for rep in report.get("repetitions", []) for v in rep if v.startswith("sft-")}):
        results = [rep[v] for rep in report.get("repetitions", []) if v in rep]
        if results and all("error" in r for r in results):
            out[v] = results[-1]["error"].strip().splitlines()[-1][:160]
    return out


def merged_file(medians: dict[str, Any]) -> str:
    """The sentence on gen-llama-cpp-single-merged, where the run measured it."""
    size = medians.get("gen-llama-cpp-single-merged", {}).get("gguf_mb")
    if not size:
        return ""
    return f"; gen-llama-cpp-single-merged plain llama.cpp on the file gen-single serves ({fmt(size, 0)} MB, Q8_0)"


def merged_size_bound(report: dict[str, Any]) -> float | None:
    """The most an SFT run's stream can reach of llama.cpp's on the base GGUF when both read the same bytes per
    second: every decoded token reads the whole file, and the merged Q8_0 file is larger than the 4-bit base."""
    merged = report["medians"].get("gen-llama-cpp-single-merged", {}).get("gguf_mb")
    base = report["model"].get("gguf_mb")
    return base / merged if base and merged else None


def llama_single_stream(report: dict[str, Any]) -> bool:
    """Whether gen-single is llama.cpp with transformers' stream in a row of its own (results files since
    2026-12-03); before, gen-single was transformers' stream."""
    return any("gen-single-transformers" in rep for rep in report.get("repetitions", []))


def stream_precision(report: dict[str, Any]) -> str:
    """The dtype transformers' single stream ran in (recorded since 2026-12-03; fp32 before)."""
    reps = report.get("repetitions", [])
    return next((r[v]["precision"] for r in reps for v in r if "precision" in r[v]), "torch.float32")


def targets(report: dict[str, Any]) -> list[tuple[str, str, float | None, str]]:
    """(figure, target, measured, met) for each target of the benchmark issue that this run measured."""
    m, r = report["medians"], report["ratios"]
    model_copy_mb = report["model"].get("weights_mb")
    llama_single = llama_single_stream(report)
    transformers_single = m.get("gen-single-transformers" if llama_single else "gen-single", {})
    bounds = decode_bounds(report)
    precision = stream_precision(report)
    bytes_per_weight = 2 if precision in ("torch.bfloat16", "torch.float16") else 4
    rows = [
        ("SFT real tokens/s vs plain TRL (careful)", ">= 1.6", r.get("sft_tokens_per_s_vs_trl_careful"), 1.6, 1),
        ("SFT peak RSS vs plain TRL (careful)", "<= 1.0", r.get("sft_peak_rss_vs_trl_careful"), 1.0, -1),
        ("SFT MFU on real tokens (alignkit)", ">= 0.70", m.get("sft-alignkit", {}).get("mfu"), 0.70, 1),
        ("SFT real tokens/s vs the ceiling", ">= 0.9", r.get("sft_tokens_per_s_vs_ceiling"), 0.9, 1),
        (
            "SFT conversations/s vs plain TRL (careful), long multi-turn",
            ">= 1.6",
            r.get("sft_multiturn_conversations_per_s_vs_trl_careful"),
            1.6,
            1,
        ),
        (
            "SFT real tokens/s vs plain TRL (careful), long multi-turn",
            "(report: counts repeated turns where examples are per turn)",
            r.get("sft_multiturn_tokens_per_s_vs_trl_careful"),
            None,
            1,
        ),
        (
            "SFT conversations/s vs the ceiling, long multi-turn",
            ">= 0.9",
            r.get("sft_multiturn_conversations_per_s_vs_ceiling"),
            0.9,
            1,
        ),
        ("DPO pairs/s vs plain TRL (two models)", ">= 1.3", r.get("dpo_pairs_per_s_vs_plain"), 1.3, 1),
        (
            "DPO pairs/s vs plain TRL, reference log-probs precomputed",
            ">= 1.3",
            r.get("dpo_precompute_pairs_per_s_vs_plain"),
            1.3,
            1,
        ),
        (
            "DPO peak RSS saved, MB (one model copy: " + fmt(model_copy_mb, 0) + " MB)",
            ">= 0.9 x one copy",
            r.get("dpo_peak_rss_saved_mb"),
            0.9 * model_copy_mb if model_copy_mb else None,
            1,
        ),
        ("GRPO completions/s vs plain TRL GRPO", ">= 1.5", r.get("rl_completions_per_s_vs_plain"), 1.5, 1),
        ("Batched generation vs sequential", ">= 3", r.get("gen_completions_per_s_batched_vs_sequential"), 3.0, 1),
        (
            "Single-stream tokens/s vs llama.cpp on the same GGUF: the base model",
            ">= 0.8",
            r.get("gen_single_base_tokens_per_s_vs_llama_cpp"),
            0.8,
            1,
        ),
        (
            "Single-stream tokens/s vs llama.cpp on the same GGUF: an SFT run (base + adapter merged, Q8_0)",
            ">= 0.8",
            r.get("gen_single_tokens_per_s_vs_llama_cpp_same_file"),
            0.8,
            1,
        ),
        (
            "Single-stream tokens/s of an SFT run vs llama.cpp on the base GGUF",
            f"(report: the files' sizes bound it at {fmt(merged_size_bound(report), 2)})",
            r.get("gen_single_tokens_per_s_vs_llama_cpp"),
            None,
            1,
        ),
        ("Batched candidates vs llama.cpp sequential", ">= 4", r.get("gen_batched_vs_llama_cpp_sequential"), 4.0, 1),
        (
            "Single-stream tokens/s (llama.cpp) vs the base GGUF file's bandwidth bound",
            "(report)",
            ratio_to(m.get("gen-single", {}).get("tokens_per_s"), bounds.get("gguf")) if llama_single else None,
            None,
            1,
        ),
        (
            f"Single-stream tokens/s in transformers vs its bandwidth bound ({precision} weights)",
            "(report)",
            ratio_to(transformers_single.get("tokens_per_s"), bounds["fp32"] * 4 / bytes_per_weight)
            if bounds
            else None,
            None,
            1,
        ),
        (
            "Single-stream tokens/s in transformers (fallback) vs llama.cpp",
            "(report)",
            r.get("gen_single_transformers_tokens_per_s_vs_llama_cpp"),
            None,
            1,
        ),
        ("Full embedded loop, s", "<= 600", report.get("loop", {}).get("total"), 600.0, -1),
    ]
    out = []
    for name, goal, value, bound, sign in rows:
        if value is None:
            continue
        met = "—" if bound is None else ("yes" if sign * (value - bound) >= 0 else "no")
        out.append((name, goal, value, met))
    return out


if __name__ == "__main__":
    main()
