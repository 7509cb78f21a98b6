"""The benchmark's accounting (no timings asserted): FLOPs from the config, tokens counted from either batch layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignkit import data, hardware, models, training
from alignkit.config import SFTStageConfig, load_config
from benchmarks import flops, measure


def test_flops_shape_counts_the_models_own_linear_weights(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    shape = flops.model_shape(json.loads((Path(tiny_model) / "config.json").read_text()))
    decoder = sum(m.weight.numel() for n, m in model.model.named_modules() if isinstance(m, torch.nn.Linear))
    assert shape["decoder_params"] == decoder
    assert shape["head_params"] == model.lm_head.weight.numel()


def test_padded_and_padding_free_batches_count_the_same_real_tokens(tmp_path, tiny_model):
    cfg = load_config(SFTStageConfig, values={"model": {"name": tiny_model}})
    precision = hardware.pick_precision()
    replies = ["Five.", "It is five, since two plus three makes five."]
    examples = data.prompt_completion(
        [
            {"messages": [{"role": "user", "content": "Two plus three?"}, {"role": "assistant", "content": reply}]}
            for reply in replies
        ]
    )
    args = training.sft_args(cfg, tmp_path, False, precision)
    model, tokenizer = models.load_base(cfg.model, precision), models.load_tokenizer(cfg.model)
    trainer = training.sft_trainer(args, model, tokenizer, models.peft_config(cfg.peft), examples, [])
    rows = [trainer.train_dataset[i] for i in range(2)]
    padded = measure.batch_stats(trainer.data_collator(rows))
    training.use_padding_free(trainer, None)
    flat = measure.batch_stats(trainer.data_collator(rows))
    assert padded["computed_tokens"] > padded["tokens"]  # padding is computed but not counted
    for key in ("rows", "tokens", "loss_tokens", "lengths"):
        assert flat[key] == padded[key]
    assert flat["computed_tokens"] == flat["tokens"]
    assert 0 < padded["loss_tokens"] < padded["tokens"]  # the loss falls on the replies only


def test_online_rl_rates_count_whole_generation_cycles(monkeypatch):
    """GRPO that samples once every 4 steps: the rate spans whole cycles after the first one (sampling included as
    often as it happens), not steps 2..n, which would count the first cycle's cheap steps without its sampling."""
    args = type("Args", (), {"per_device_train_batch_size": 4, "steps_per_generation": 4})()
    steps, clock = [], 0.0
    for i in range(8):
        clock += 10.0 if i % 4 == 0 else 1.0  # the step that samples is the slow one
        steps.append(measure.online_rl_stats(args) | {"end": clock, "cpu": clock})
    monkeypatch.setattr(measure, "STEPS", steps)
    rate = measure.completions_rate()["completions_per_s"]
    assert rate == pytest.approx(16 / 13)  # steps 5-8: one sampling step and three training steps
    assert measure.steady_state(steps)["rows_per_s"] > rate  # steps 2-8 would hold 7 steps but one sampling step
    monkeypatch.setattr(measure, "STEPS", steps[:6])
    with pytest.raises(RuntimeError, match="whole generation cycles"):
        measure.completions_rate()


def test_report_marks_each_target_met_or_not_from_the_measured_figures():
    from benchmarks import run

    reps = [
        {
            "sft-alignkit": {"tokens_per_s": 100.0, "peak_rss_mb": 900.0, "mfu": 0.6},
            "sft-trl-careful": {"tokens_per_s": 60.0, "peak_rss_mb": 1000.0},
            "dpo-alignkit": {"pairs_per_s": 0.4, "peak_rss_mb": 2000.0},
            "dpo-trl-plain": {"pairs_per_s": 0.2, "peak_rss_mb": 2600.0},
        }
    ]
    report = {
        "date": "2026-11-23T00:00:00+00:00",
        "machine": {"cores": 2, "load_average_at_end": 0.1},
        "settings": {"reps": 1},
        "model": {"weights_mb": 500.0},
        **run.summarise(reps),
        "loop": {"total": 550.0},
        "repetitions": [{"sft-trl-default": {"variant": "sft-trl-default", "error": "Traceback\nValueError: no bf16"}}],
    }
    met = {name: verdict for name, _, _, verdict in run.targets(report)}
    assert met["SFT real tokens/s vs plain TRL (careful)"] == "yes"  # 1.67 >= 1.6
    assert met["SFT MFU on real tokens (alignkit)"] == "no"  # 0.6 < 0.7
    assert met["SFT peak RSS vs plain TRL (careful)"] == "yes"
    assert met["DPO pairs/s vs plain TRL (two models)"] == "yes"
    assert met["DPO peak RSS saved, MB (one model copy: 500 MB)"] == "yes"  # 600 MB >= 450
    assert met["Full embedded loop, s"] == "yes"
    assert "Batched generation vs sequential" not in met  # not measured in this run: no row
    doc = run.markdown(report)
    assert "| SFT MFU on real tokens (alignkit) | >= 0.70 | 0.60 | no |" in doc
    assert "| plain TRL, defaults untouched | did not run: `ValueError: no bf16` |" in doc
    assert "Where the SFT time goes" in doc  # the hand-written notes follow the measured tables


def test_generation_rows_give_the_bandwidth_bound_and_say_when_llama_cpp_is_missing():
    from benchmarks import run

    reps = [
        {
            "memory-bandwidth": {"read_gb_per_s": 20.0},
            "gen-single": {"variant": "gen-single", "not_installed": True},  # the playground's llama.cpp path
            "gen-single-transformers": {"tokens_per_s": 10.0, "wall_s": 5.0, "precision": "torch.float32"},
            "gen-llama-cpp-single": {"variant": "gen-llama-cpp-single", "not_installed": True},
            "gen-batched": {"completions_per_s": 2.0, "wall_s": 40.0},
            "gen-sequential": {"completions_per_s": 0.5, "wall_s": 130.0},
        }
    ]
    report = {
        "date": "2026-12-02T00:00:00+00:00",
        "machine": {"cores": 2, "load_average_at_end": 0.1},
        "settings": {"reps": 1, "single_tokens": 128, "gen_prompts": 16, "gen_n": 4, "gen_tokens": 48},
        "model": {"weights_mb": 500.0, "gguf_mb": 100.0},
        **run.summarise(reps),
        "repetitions": reps,
    }
    bounds = run.decode_bounds(report)
    assert round(bounds["fp32"], 1) == round(20e9 / (500 * 2**20), 1)  # one read of every weight per token
    assert bounds["gguf"] == 5 * bounds["fp32"]
    met = {name: (value, verdict) for name, _, value, verdict in run.targets(report)}
    assert met["Batched generation vs sequential"] == (4.0, "yes")
    assert not any(name.startswith("Single-stream tokens/s vs llama.cpp") for name in met)  # nothing to compare
    transformers_bound = met["Single-stream tokens/s in transformers vs its bandwidth bound (torch.float32 weights)"][0]
    assert round(transformers_bound, 3) == round(10.0 / bounds["fp32"], 3)
    doc = run.markdown(report)
    assert "| gen-llama-cpp-single | not installed (llama-cpp-python) | | |" in doc
    assert "| gen-single | not installed (llama-cpp-python) | | |" in doc
    assert "| gen-single-transformers | 10.0 |" in doc and "(torch.float32, exactly 128 tokens)" in doc


def test_the_two_sft_length_distributions_differ_in_turns_and_length():
    from benchmarks import data

    mixed, multiturn = data.sft_rows(60), data.multiturn_rows(60)
    turns = [sum(m["role"] == "assistant" for m in row["messages"]) for row in multiturn]
    assert min(turns) >= 4 and max(turns) <= 8
    assert all(m["role"] == ("user", "assistant")[i % 2] for row in multiturn for i, m in enumerate(row["messages"]))
    assert all(sum(m["role"] == "assistant" for m in row["messages"]) == 1 for row in mixed)

    def chars(rows: list) -> float:
        return sorted(sum(len(m["content"]) for m in row["messages"]) for row in rows)[len(rows) // 2]

    assert chars(multiturn) > 3 * chars(mixed)  # median conversation length


def test_multi_turn_sft_is_compared_per_conversation_not_per_repeated_token(tiny_model):
    """Where a trainer makes several examples of one conversation, its examples/s over-count the data it covers."""
    from alignkit import models
    from alignkit.config import ModelConfig
    from benchmarks import run

    tokenizer = models.load_tokenizer(ModelConfig(name=tiny_model))
    assert run.alignkit_examples_per_row({"sft_steps": 8}, tokenizer) == {"mixed": 1.0, "multiturn": 1.0}
    per_row = run.alignkit_examples_per_row({"sft_steps": 8})  # results files made one example per assistant turn
    assert per_row["mixed"] == 1.0 and 4 <= per_row["multiturn"] <= 8
    assert run.alignkit_examples_per_row({"sft_steps": 8, "alignkit_examples_per_row": per_row}, tokenizer) == per_row
    reps = [{"sft-alignkit:multiturn": {"rows_per_s": 0.6}, "sft-trl-careful:multiturn": {"rows_per_s": 0.2},
             "sft-alignkit": {"rows_per_s": 0.5}}]  # fmt: skip
    run.add_conversation_rates(reps, per_row)
    assert reps[0]["sft-alignkit:multiturn"]["conversations_per_s"] == 0.6 / per_row["multiturn"]
    assert reps[0]["sft-trl-careful:multiturn"]["conversations_per_s"] == 0.2
    assert reps[0]["sft-alignkit"]["conversations_per_s"] == 0.5
    ratios = run.summarise(reps)["ratios"]
    assert ratios["sft_multiturn_conversations_per_s_vs_trl_careful"] == pytest.approx(3.0 / per_row["multiturn"])


def test_single_stream_is_compared_with_llama_cpp_on_the_file_it_serves():
    """The base model's stream and an SFT run's each against llama.cpp on the GGUF they serve; the SFT run's merged
    file is Q8_0 (4-bit would round the adapter's update away), so against the 4-bit base file it is reported with
    the bound the two files' sizes set."""
    from benchmarks import run

    reps = [
        {
            "gen-single": {"tokens_per_s": 90.0},
            "gen-single-base": {"tokens_per_s": 114.0},
            "gen-llama-cpp-single": {"tokens_per_s": 120.0},
            "gen-llama-cpp-single-merged": {"tokens_per_s": 100.0, "gguf_mb": 138.0},
        }
    ]
    report = {"settings": {}, "model": {"gguf_mb": 92.0}, **run.summarise(reps), "repetitions": reps}
    met = {name: (value, verdict) for name, _, value, verdict in run.targets(report)}
    goals = {name: goal for name, goal, _, _ in run.targets(report)}
    assert met["Single-stream tokens/s vs llama.cpp on the same GGUF: the base model"] == (0.95, "yes")
    same_file = "Single-stream tokens/s vs llama.cpp on the same GGUF: an SFT run (base + adapter merged, Q8_0)"
    assert met[same_file] == (0.9, "yes")
    against_base = "Single-stream tokens/s of an SFT run vs llama.cpp on the base GGUF"
    assert met[against_base] == (0.75, "—")
    assert "bound it at 0.67" in goals[against_base]  # 92 MB / 138 MB
    assert "on the file gen-single serves (138 MB, Q8_0)" in run.merged_file(report["medians"])


def test_the_doc_names_the_cpu_where_the_results_file_records_it():
    from benchmarks import run

    recorded = {"cores": 2, "cpu_model": "Some CPU", "cpu_features": ["amx_bf16", "avx512_bf16"]}
    assert run.cpu_model(recorded) == ", Some CPU (amx_bf16, avx512_bf16)"
    assert run.cpu_model(recorded | {"cpu_features": []}) == ", Some CPU (no AVX512-BF16 or AMX)"
    assert run.cpu_model({"cores": 2}) == ""  # results files before 2026-12-04 (evening)


def test_demo_seeds_meets_dpo_at_least_sft_only_over_the_same_prompts():
    """`met["accuracy"]` compared DPO's and SFT's accuracy whatever prompts each was taken over."""
    from benchmarks import demo_seeds

    figures = {
        "win_rate_vs_sft": 0.8,
        "win_rate_vs_sft_interval": [0.6, 0.9],
        "accuracy": {"sft": 0.5, "dpo": 0.6},
        "degenerate_rate": {"sft": 0.0, "dpo": 0.0},
        "forgetting_ppl_ratio": 1.0,
        "reward_accuracy": 0.9,
        "seconds_total": 500,
        "checked_prompts": {"sft": 76, "dpo": 76},
        "checked_by_skill": {"sft": {"greeting": 4}, "dpo": {"greeting": 4}},
    }
    assert demo_seeds.met(figures)["accuracy"] is True
    other = figures | {"checked_prompts": {"sft": 76, "dpo": 77}, "checked_by_skill": {"sft": None, "dpo": None}}
    assert demo_seeds.met(other)["accuracy"] is False
    per_skill = figures | {"checked_by_skill": {"sft": {"greeting": 4}, "dpo": {"greeting": 3, "json": 1}}}
    assert demo_seeds.met(per_skill)["accuracy"] is False


def test_docs_benchmarks_md_is_what_its_results_file_renders():
    """docs/benchmarks.md is written by `python -m benchmarks.run --render RESULTS`: an edit made in the doc alone (a
    figure, or a note that belongs in benchmarks/notes.md) is lost on the next render, and the doc no longer says what
    its results file holds."""
    from benchmarks import run

    doc = (run.ROOT / "docs" / "benchmarks.md").read_text()
    measured = doc.split("Measured on ", 1)[1].split(" on ", 1)[0]
    [results] = [
        path
        for path in sorted((run.ROOT / "benchmarks" / "results").glob("20*.json"))
        if json.loads(path.read_text()).get("date") == measured
    ]
    assert run.rendered(results) == doc, f"render {results.name}: python -m benchmarks.run --render {results}"
