"""Evaluation: perplexity and forgetting, task metrics, win-rate (reward model and oracle rule), KL to a reference.

`alignkit eval --runs A B` answers held-out prompts with each run, compares every later run with the first, and
writes `eval.json`, `report.md` and PNG plots into the output dir.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]
Judge = Callable[[Messages, str, str], float]  # 1.0: first answer better, 0.0: second, 0.5: tie


def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> float:
    """Token-weighted perplexity of `texts` (next-token loss on every real token)."""
    import torch

    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
            add_special_tokens=False,
        ).to(model.device)
        with torch.no_grad():
            logits = model(**batch).logits[:, :-1].float()
        labels = batch.input_ids[:, 1:]
        mask = batch.attention_mask[:, 1:].bool()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        total_nll += float(nll[mask].sum())
        total_tokens += int(mask.sum())
    return math.exp(total_nll / max(1, total_tokens))


def forgetting(base_ppl: float, tuned_ppl: float, threshold: float = 0.05) -> dict[str, Any]:
    """Perplexity on general held-out text, tuned vs base; flagged when worse by more than `threshold`."""
    ratio = tuned_ppl / base_ppl
    return {"base_ppl": base_ppl, "tuned_ppl": tuned_ppl, "ppl_ratio": ratio, "forgetting": ratio > 1 + threshold}


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = prediction.lower().split(), reference.lower().split()
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
    if not pred or not ref or not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def task_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU (sacrebleu), ROUGE-L F (rouge-score), token F1 and exact-containment against reference answers."""
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    n = max(1, len(predictions))
    return {
        "bleu": sacrebleu.corpus_bleu(list(predictions), [list(references)]).score,
        "rougeL": sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)) / n,
        "token_f1": sum(token_f1(p, r) for p, r in zip(predictions, references, strict=True)) / n,
        "contains_reference": sum(normalise(r) in normalise(p) for p, r in zip(predictions, references, strict=True))
        / n,
    }


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def oracle_judge(rule_name: str, exact: bool = True) -> Judge:
    """A judge from the simulated annotators' rule (`feedback.simulate.RULES`): by its exact score, or (`exact=False`)
    only where the gap is one an annotator notices."""
    from alignkit.feedback.simulate import rule

    oracle = rule(rule_name)

    def judge(prompt: Messages, first: str, second: str) -> float:
        return oracle.compare(first, second, exact)

    return judge


def reward_judge(scorer: Any) -> Judge:
    """A judge from a reward model (`scorer.score(prompts, completions) -> rewards`)."""

    def judge(prompt: Messages, first: str, second: str) -> float:
        a, b = scorer.score([prompt, prompt], [first, second])
        return 0.5 if a == b else float(a > b)

    return judge


def win_rate(
    prompts: Sequence[Messages], answers: Sequence[str], baseline: Sequence[str], judge: Judge
) -> dict[str, float]:
    """Share of prompts where `answers` beat `baseline` (ties count half)."""
    outcomes = [judge(p, a, b) for p, a, b in zip(prompts, answers, baseline, strict=True)]
    n = max(1, len(outcomes))
    return {
        "win_rate": sum(outcomes) / n,
        "wins": sum(o == 1.0 for o in outcomes),
        "ties": sum(o == 0.5 for o in outcomes),
        "losses": sum(o == 0.0 for o in outcomes),
    }


def sequence_logprobs(model: Any, tokenizer: Any, prompts: Sequence[Messages], answers: Sequence[str]) -> list[float]:
    """Sum of log-probabilities each model assigns to each answer given its prompt (chat template applied)."""
    import torch

    scores = []
    for prompt, answer_text in zip(prompts, answers, strict=True):
        prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer_text}], tokenize=False)
        prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids
        ids = tokenizer(full, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        scores.append(float(logprobs[len(prefix_ids) - 1 :].sum()))
    return scores


def kl_to_reference(
    policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[Messages], policy_answers: Sequence[str]
) -> float:
    """Monte-Carlo KL(policy || reference) per answer: mean of log p_policy − log p_ref over the policy's samples."""
    own = sequence_logprobs(policy, tokenizer, prompts, policy_answers)
    ref = sequence_logprobs(reference, tokenizer, prompts, policy_answers)
    return sum(o - r for o, r in zip(own, ref, strict=True)) / max(1, len(own))


def write_report(out_dir: Path, results: dict[str, Any]) -> None:
    """eval.json, report.md and bar plots of win-rates and perplexities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    lines = ["# alignkit evaluation", ""]
    for name, run in results["runs"].items():
        lines.append(f"## {name}")
        lines += [
            f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in run.items() if k != "answers"
        ]
        lines.append("")
    for name, comparison in results.get("comparisons", {}).items():
        lines.append(f"## {name}")
        lines += [f"- {k}: {v}" for k, v in comparison.items()]
        lines.append("")
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
    names = list(results["runs"])
    ppl = [results["runs"][n].get("general_ppl") for n in names]
    if all(p is not None for p in ppl):
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(names, ppl)
        ax.set_ylabel("perplexity (general held-out)")
        fig.tight_layout()
        fig.savefig(out_dir / "perplexity.png")
        plt.close(fig)
    comparisons = results.get("comparisons", {})
    if comparisons:
        fig, ax = plt.subplots(figsize=(5, 3))
        labels = list(comparisons)
        ax.bar(labels, [c.get("oracle", c.get("reward_model", {})).get("win_rate", 0) for c in comparisons.values()])
        ax.axhline(0.5, color="gray", linestyle="--")
        ax.set_ylabel("win-rate")
        fig.tight_layout()
        fig.savefig(out_dir / "win_rate.png")
        plt.close(fig)


def read_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """The `text` of each row of a JSONL file (general held-out text for perplexity)."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line)["text"] for line in lines[:limit]]


def load_eval_prompts(path: str) -> tuple[list[Messages], list[str | None]]:
    """Prompts (as messages) and optional reference answers (`reference`, or the final assistant turn)."""
    from alignkit.data.formats import read_rows
    from alignkit.data.validate import convert_all
    from alignkit.generate import prompt_row

    def row(data: dict[str, Any]) -> tuple[Messages, str | None]:
        reference = data.get("reference")
        if reference is None and isinstance(data.get("messages"), list) and data["messages"]:
            last = data["messages"][-1]
            reference = last.get("content") if isinstance(last, dict) and last.get("role") == "assistant" else None
        return prompt_row(data), reference

    rows = convert_all(read_rows(path), row, "rows with `prompt` (and optional `reference`) or `messages`")
    return [p for p, _ in rows], [r for _, r in rows]


def run_eval(
    run_dirs: Sequence[str],
    out_dir: str,
    prompts_file: str,
    general_file: str,
    reward_run: str | None = None,
    rule: str | None = None,
    max_new_tokens: int = 64,
    forgetting_threshold: float = 0.05,
    limit: int | None = None,
) -> dict[str, Any]:
    """Evaluate runs on held-out prompts; compare each later run with the first (its baseline)."""
    from alignkit import models, runs
    from alignkit.generate import greedy_replies

    prompts, references = load_eval_prompts(prompts_file)
    prompts, references = prompts[:limit], references[:limit]
    general = read_texts(general_file)
    results: dict[str, Any] = {"prompts_file": prompts_file, "runs": {}, "comparisons": {}}
    answers: dict[str, list[str]] = {}
    loaded = [runs.open_run(d) for d in run_dirs]
    for run in loaded:
        model, tokenizer = run.load_model()
        name = run.path.name
        answers[name] = greedy_replies(model, tokenizer, prompts, max_new_tokens)
        figures: dict[str, Any] = {"stage": run.stage, "general_ppl": perplexity(model, tokenizer, general)}
        with_reference = [(a, r) for a, r in zip(answers[name], references, strict=True) if r]
        if with_reference:
            figures["task"] = task_metrics([a for a, _ in with_reference], [r for _, r in with_reference])
        figures["mean_words"] = sum(len(a.split()) for a in answers[name]) / max(1, len(prompts))
        results["runs"][name] = figures
    model_cfg = loaded[0].model_config
    base = models.load_base(model_cfg, models.pick_precision(model_cfg.precision))
    base_ppl = perplexity(base, models.load_tokenizer(model_cfg), general)
    del base
    for figures in results["runs"].values():
        figures["forgetting"] = forgetting(base_ppl, figures["general_ppl"], forgetting_threshold)
    scorer = None
    if reward_run:
        from alignkit.stages.reward import load_scorer

        scorer = load_scorer(reward_run)
        for name in answers:
            rewards = scorer.score(prompts, answers[name])
            results["runs"][name]["reward_mean"] = sum(rewards) / max(1, len(rewards))
    baseline = loaded[0].path.name
    for run in loaded[1:]:
        name = run.path.name
        comparison: dict[str, Any] = {}
        if rule:
            comparison["oracle"] = win_rate(prompts, answers[name], answers[baseline], oracle_judge(rule))
        if scorer is not None:
            comparison["reward_model"] = win_rate(prompts, answers[name], answers[baseline], reward_judge(scorer))
        policy, tokenizer = run.load_model()
        reference, _ = loaded[0].load_model()
        comparison["kl_to_baseline"] = kl_to_reference(policy, reference, tokenizer, prompts, answers[name])
        results["comparisons"][f"{name} vs {baseline}"] = comparison
    results["examples"] = [
        {"prompt": p[-1]["content"], **{n: a[i] for n, a in answers.items()}} for i, p in enumerate(prompts[:5])
    ]
    write_report(Path(out_dir), results)
    return results
