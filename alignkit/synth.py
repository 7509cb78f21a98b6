"""`alignkit synth`: self-instruct-style synthetic SFT data from a run's policy (or a base model) and a few seeds.

Each round, the model is shown `shots` seed tasks (sampled from the seeds file) and asked for one new task; the new
tasks that pass the task filters are answered in one batched call, and the answers that pass the answer filters are
kept. Rounds repeat until `n` rows are kept or `max_attempts` tasks were tried. Filters (the first one a text fails
is counted in the summary): empty, too short/long, truncated (hit the token budget without an end of turn), not
text (odd characters, or a task that is not mostly words), repetitive (repeated word 3-grams or character 8-grams),
and near-duplicates (ROUGE-L F ≥ `max_similarity` against a seed or an already-kept task).

Rows are canonical SFT rows, with their provenance under `synth`:
`{"messages": [user, assistant], "synth": {"seed_ids", "run", "run_id", "model", "sampling", "filters_passed",
"round"}}`.
The file trains as is (`alignkit sft --data`) and pushes as is for review (`feedback.push.push_review`).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignkit import generate, jsonl
from alignkit.data.formats import read_prompt_rows
from alignkit.data.validate import convert_all

TASK_PROMPT = """\
Here are {count} example tasks that a user gave to an AI assistant:

{examples}

Write one new task for the assistant, different from all of these. Reply with the task only, without answering it."""
SEED_CHARS = 600  # long seeds are shortened in the task prompt (they are examples of a kind of task, not content)
TASK_LABEL = re.compile(r"^\s*(?:(?:new|example)\s+)?(?:task|instruction|question)\s*\d*\s*[:.)-]\s*", re.I)
NUMBERING = re.compile(r"^\s*\d+\s*[.):]\s+")
NEXT_ITEM = re.compile(r"\n\s*(?:\d+\s*[.):]|(?:task|instruction|question|answer|response|solution)\s*\d*\s*:)", re.I)
WORD = re.compile(r"[\W_]*(?:[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+(?:[.,:/]\d+)*)[\W_]*")
PLAIN_PUNCTUATION = set(".,;:!?'\"()[]{}<>-–—_/\\|@#$%^&*+=~`’‘“”…«»°€£")

TASK_CHECKS = (
    "task_empty",
    "task_too_short",
    "task_too_long",
    "task_truncated",
    "task_not_text",
    "task_repetitive",
    "similar_to_seed",
    "similar_to_kept",
)
ANSWER_CHECKS = ("answer_empty", "answer_truncated", "answer_too_short", "answer_not_text", "answer_repetitive")


@dataclass
class Filters:
    """What a kept row passed; each threshold is recorded in the summary."""

    max_similarity: float = 0.7  # ROUGE-L F against seeds and kept tasks (self-instruct's value)
    min_task_words: int = 3
    max_task_words: int = 150
    min_answer_words: int = 2
    min_text_share: float = 0.9  # letters, digits, spaces and plain punctuation among characters
    min_word_share: float = 0.6  # word-like tokens among a task's tokens (a task is language, not code or noise)
    max_repetition: float = 0.3  # share of repeated word 3-grams / character 8-grams
    allow_truncated: bool = False  # keep texts that hit the token budget without an end of turn

    def checks(self) -> list[str]:
        """The checks this configuration runs, in order (truncation checks only when truncation is refused)."""
        names = [*TASK_CHECKS, *ANSWER_CHECKS]
        return [c for c in names if not (self.allow_truncated and c.endswith("_truncated"))]


@dataclass
class Sampling:
    """Sampling for writing tasks (more diverse) and for answering them; recorded on every row."""

    task_temperature: float = 1.0
    answer_temperature: float = 0.7
    top_p: float = 0.95
    task_max_new_tokens: int = 64
    max_new_tokens: int = 96
    seed: int = 0

    def __post_init__(self) -> None:
        generate.check_sampling(self.answer_temperature, self.top_p, self.max_new_tokens)
        generate.check_sampling(self.task_temperature, self.top_p, self.task_max_new_tokens, prefix="task_")


def run(
    from_run: str | None,
    model_name: str | None,
    seeds_file: str,
    n: int,
    out: str,
    seed: int = 0,
    max_new_tokens: int = 96,
    overwrite: bool = False,
    shots: int = 3,
    max_attempts: int | None = None,
    batch_size: int = 8,
    temperature: float = 0.7,
    task_temperature: float = 1.0,
    top_p: float = 0.95,
    task_max_new_tokens: int = 64,
    filters: Filters | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Write `n` filtered synthetic SFT rows (fewer if `max_attempts`, default 4n, runs out) to `out`; a summary.

    Kept rows are saved as they come to `out.partial`, renamed to `out` at the end; `resume` continues an
    interrupted synth from them (its new tasks must differ from theirs too), with `max_attempts` (default: 4 per
    row still wanted) and the summary's counts for the resumed part."""
    generate.check_counts(n=n, shots=shots, max_attempts=max_attempts, batch_size=batch_size)
    out_path = Path(out)
    earlier = jsonl.start_partial(out_path, overwrite, resume, "synth")
    seeds = load_seeds(seeds_file)
    filters = filters or Filters()
    sampling = Sampling(task_temperature, temperature, top_p, task_max_new_tokens, max_new_tokens, seed)
    model, tokenizer, source = generate.load_policy(from_run, model_name)
    if earlier:
        made = earlier[0].get("synth", {})
        record = provenance(generate.resumable_source(made, source), sampling)
        jsonl.check_resumable(jsonl.partial_file(out_path), made, record)
    wanted = max(n - len(earlier), 0)
    rows, counts = synthesize(
        model,
        tokenizer,
        seeds,
        n,
        source,
        sampling,
        filters,
        shots,
        max_attempts or 4 * wanted,
        batch_size,
        earlier=earlier,
        save=lambda kept: jsonl.append_partial(out_path, kept),
    )
    jsonl.finish_partial(out_path)
    return {
        "out": str(out_path),
        "kept": len(rows),
        "resumed": len(earlier),
        "wanted": n,
        "attempts": counts.pop("attempts"),
        "rounds": counts.pop("rounds"),
        "unused": counts.pop("unused", 0),
        "rejected": {check: counts[check] for check in filters.checks() if counts[check]},
        "seeds": len(seeds),
        "filters": asdict(filters),
        "sampling": asdict(sampling),
    }


def provenance(source: dict[str, str], sampling: Sampling) -> dict[str, Any]:
    """What each synthesized row records of how it was made (`synth`): the run (path and id: `runs.same_policy`) or
    model, and the sampling."""
    run = {key: source.get(key, "") for key in ("run", "run_id", "model") if key != "run_id" or source.get(key)}
    return run | {"sampling": asdict(sampling)}


def load_seeds(path: str) -> list[dict[str, str]]:
    """`{"id", "task"}` per seed row (rows with `prompt`, `instruction` or `messages`; the last user turn is the
    task, and its id is the prompt's `jsonl.prompt_id`)."""
    prompts = convert_all(
        read_prompt_rows(path, "seeds"),
        jsonl.prompt_row,
        "seed rows with `prompt` (string or messages), `instruction` or `messages`",
    )
    seeds = {jsonl.prompt_id(p): p[-1]["content"].strip() for p in prompts}
    return [{"id": seed_id, "task": task} for seed_id, task in seeds.items()]


def synthesize(
    model: Any,
    tokenizer: Any,
    seeds: list[dict[str, str]],
    n: int,
    source: dict[str, str],
    sampling: Sampling,
    filters: Filters,
    shots: int = 3,
    max_attempts: int = 0,
    batch_size: int = 8,
    earlier: list[dict[str, Any]] | None = None,
    save: Callable[[list[dict[str, Any]]], Any] | None = None,
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Rounds of write-tasks → filter → answer → filter until `n` rows are kept or `max_attempts` tasks were tried.

    `earlier`: rows kept by an interrupted synth, counted towards `n`; `save` is given each round's kept rows."""
    import torch
    from rouge_score import rouge_scorer
    from tqdm.auto import tqdm

    kept: list[dict[str, Any]] = list(earlier or [])
    kept_tasks: list[str] = [row["messages"][-2]["content"] for row in kept]
    # A resumed synth draws from another stream: the seed's own would write the tasks it already kept again.
    stream = sampling.seed if not kept else sampling.seed * 1_000_003 + len(kept)
    torch.manual_seed(stream)
    rng = random.Random(stream)
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    seed_texts = [s["task"] for s in seeds]
    counts: Counter[str] = Counter()
    max_attempts = max_attempts or 4 * (n - len(kept))
    record = provenance(source, sampling)
    task_options = {"temperature": sampling.task_temperature, "top_p": sampling.top_p}
    answer_options = {"temperature": sampling.answer_temperature, "top_p": sampling.top_p}
    with tqdm(total=n, initial=len(kept), desc="synth", unit="row") as progress:
        while len(kept) < n and counts["attempts"] < max_attempts:
            counts["rounds"] += 1
            rate = len(kept) / counts["attempts"] if counts["attempts"] else 0.5  # keep rate so far
            need = math.ceil((n - len(kept)) / max(rate, 0.25))
            size = min(batch_size, max_attempts - counts["attempts"], need)
            counts["attempts"] += size
            shown = [rng.sample(seeds, min(shots, len(seeds))) for _ in range(size)]
            replies = generate.sample(
                model, tokenizer, [task_prompt(s) for s in shown], 1, sampling.task_max_new_tokens, **task_options
            )
            tasks = []
            for examples, (reply,) in zip(shown, replies, strict=True):
                task = clean_task(reply)
                cut = NEXT_ITEM.search(reply) is not None  # the task ended where a next item began
                truncated = not cut and hit_budget(tokenizer, reply, sampling.task_max_new_tokens)
                failed = task_problem(task, truncated, filters, rouge, seed_texts, kept_tasks)
                if failed:
                    counts[failed] += 1
                    continue
                kept_tasks.append(task)  # a later task this round must differ from it too
                tasks.append((task, examples))
            if not tasks:
                progress.set_postfix(attempts=counts["attempts"])
                continue
            conversations = [[{"role": "user", "content": task}] for task, _ in tasks]
            answers = generate.sample(model, tokenizer, conversations, 1, sampling.max_new_tokens, **answer_options)
            kept_before = len(kept)
            for (task, examples), (answer,) in zip(tasks, answers, strict=True):
                failed = answer_problem(answer, hit_budget(tokenizer, answer, sampling.max_new_tokens), filters)
                if failed or len(kept) >= n:
                    counts[failed or "unused"] += 1
                    kept_tasks.remove(task)
                    continue
                kept.append(
                    {
                        "messages": [{"role": "user", "content": task}, {"role": "assistant", "content": answer}],
                        "synth": {
                            "seed_ids": [s["id"] for s in examples],
                            **record,
                            "filters_passed": filters.checks(),
                            "round": counts["rounds"],
                        },
                    }
                )
                progress.update(1)
            if save and len(kept) > kept_before:
                save(kept[kept_before:])
            progress.set_postfix(attempts=counts["attempts"])
    return kept, counts


def task_prompt(examples: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation that asks for one new task, showing the sampled seed tasks as a numbered list."""
    shown = [" ".join(s["task"].split())[:SEED_CHARS] for s in examples]
    listed = "\n".join(f"{i}. {task}" for i, task in enumerate(shown, start=1))
    return [{"role": "user", "content": TASK_PROMPT.format(count=len(shown), examples=listed)}]


def clean_task(reply: str) -> str:
    """The task in a model's reply: without a `Task 4:`-style label or quotes, and cut before a next item/answer."""
    text = TASK_LABEL.sub("", NUMBERING.sub("", reply.strip()))
    text = NEXT_ITEM.split(text, maxsplit=1)[0].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text.strip("“”").strip()


def hit_budget(tokenizer: Any, text: str, max_new_tokens: int) -> bool:
    """Whether a reply used its whole token budget, i.e. stopped without an end of turn (its text re-tokenized;
    a stopped reply has at most max_new_tokens - 1 tokens before its end-of-turn token)."""
    return len(tokenizer(text, add_special_tokens=False).input_ids) >= max_new_tokens - 1


def task_problem(
    task: str, truncated: bool, filters: Filters, rouge: Any, seeds: list[str], kept: list[str]
) -> str | None:
    """The first task check that `task` fails, or None."""
    words = task.split()
    if not words:
        return "task_empty"
    if len(words) < filters.min_task_words:
        return "task_too_short"
    if len(words) > filters.max_task_words:
        return "task_too_long"
    if truncated and not filters.allow_truncated:
        return "task_truncated"
    if text_share(task) < filters.min_text_share or word_share(task) < filters.min_word_share:
        return "task_not_text"
    if repetition(task) > filters.max_repetition:
        return "task_repetitive"
    if max_similarity(rouge, task, seeds) >= filters.max_similarity:
        return "similar_to_seed"
    if max_similarity(rouge, task, kept) >= filters.max_similarity:
        return "similar_to_kept"
    return None


def answer_problem(answer: str, truncated: bool, filters: Filters) -> str | None:
    """The first answer check that `answer` fails, or None."""
    if not answer.strip():
        return "answer_empty"
    if truncated and not filters.allow_truncated:
        return "answer_truncated"
    if len(answer.split()) < filters.min_answer_words:
        return "answer_too_short"
    if text_share(answer) < filters.min_text_share:
        return "answer_not_text"
    if repetition(answer) > filters.max_repetition:
        return "answer_repetitive"
    return None


def text_share(text: str) -> float:
    """Share of characters that are letters, digits, whitespace or plain punctuation (not symbols or U+FFFD)."""
    if not text:
        return 0.0
    plain = sum(1 for c in text if c.isalnum() or c.isspace() or c in PLAIN_PUNCTUATION)
    return plain / len(text) if any(c.isalpha() for c in text) else 0.0


def word_share(text: str) -> float:
    """Share of whitespace-separated tokens that are a word or a number, with punctuation around it."""
    tokens = text.split()
    return sum(1 for t in tokens if WORD.fullmatch(t)) / len(tokens) if tokens else 0.0


def repetition(text: str) -> float:
    """How repetitive a text is: the larger share of repeated word 3-grams and of repeated character 8-grams."""
    words = text.lower().split()
    chars = " ".join(words)
    word_grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    char_grams = [chars[i : i + 8] for i in range(len(chars) - 7)]
    return max(repeated_share(word_grams), repeated_share(char_grams))


def repeated_share(grams: list[Any]) -> float:
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def max_similarity(rouge: Any, text: str, others: list[str]) -> float:
    """The highest ROUGE-L F between `text` and any of `others` (0 when there are none)."""
    return max((rouge.score(other, text)["rougeL"].fmeasure for other in others), default=0.0)
