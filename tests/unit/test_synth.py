"""Synthetic instruction data: the filters on crafted strings, the sampling loop on a scripted model, and the whole
`synth.run` on the tiny model (garbage text: the default filters reject it, relaxed ones keep it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rouge_score import rouge_scorer

from alignkit import data, jsonl, synth
from alignkit.errors import AlignkitError
from tests.conftest import run_cli, write_jsonl

SEEDS = [
    {"prompt": "How many meters are in 18 feet?"},
    {"instruction": "Summarize the text.", "input": "Cats sleep a lot."},
    {
        "messages": [
            {"role": "user", "content": "Name three primary colors."},
            {"role": "assistant", "content": "Red, blue and yellow."},
        ]
    },
    {"prompt": [{"role": "user", "content": "Explain photosynthesis in one sentence."}]},
]
ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
RELAXED = synth.Filters(
    min_task_words=1,
    min_answer_words=1,
    min_text_share=0.0,
    min_word_share=0.0,
    max_repetition=1.0,
    allow_truncated=True,
)


@pytest.fixture
def seeds_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "seeds.jsonl", SEEDS)


def task_problem(task: str, truncated: bool = False, seeds: tuple[str, ...] = (), kept: tuple[str, ...] = ()) -> Any:
    return synth.task_problem(task, truncated, synth.Filters(), ROUGE, list(seeds), list(kept))


def answer_problem(answer: str, truncated: bool = False, filters: synth.Filters | None = None) -> Any:
    return synth.answer_problem(answer, truncated, filters or synth.Filters())


# -- filters on crafted strings -----------------------------------------------------------------------------------


def test_task_filters_name_the_first_problem():
    assert task_problem("   ") == "task_empty"
    assert task_problem("Explain") == "task_too_short"
    assert task_problem(" ".join(["word"] * 151)) == "task_too_long"
    assert task_problem("Write a poem about the sea and", truncated=True) == "task_truncated"
    assert task_problem("istant and\ufffd\nRe\ufffdA{\ufffd\ufffdtanzF\ufffd\ufffd\x02") == "task_not_text"
    assert task_problem("f(x)=g(y); h[z]=k(w); q<r>=s(t);") == "task_not_text"  # symbols, not words
    assert task_problem("Tell me a joke. Tell me a joke. Tell me a joke. Tell me a joke.") == "task_repetitive"
    assert task_problem("hahahahahahahahahahahahaha is it funny") == "task_repetitive"
    assert task_problem("How many meters are in 18 feet?", seeds=("How many meters are in 18 feet?",)) == (
        "similar_to_seed"
    )
    assert task_problem("How many meters are in 20 feet?", seeds=("How many meters are in 18 feet?",)) == (
        "similar_to_seed"
    )
    kept = ("Write a short poem about autumn leaves.",)
    assert task_problem("Write a short poem about the autumn leaves.", kept=kept) == "similar_to_kept"
    assert (
        task_problem("List three uses of baking soda in cleaning.", seeds=("How many meters are in 18 feet?",)) is None
    )
    assert task_problem("List three uses of baking soda in cleaning.", kept=kept) is None


def test_answer_filters_and_truncation_switch():
    assert answer_problem("") == "answer_empty"
    assert answer_problem("The capital of France is Paris, a city on the", truncated=True) == "answer_truncated"
    assert answer_problem("Paris, a city on the", truncated=True, filters=RELAXED) is None
    assert answer_problem("Paris.") == "answer_too_short"
    assert answer_problem("\ufffd\ufffd\x18## \ufffd{ cap\ufffd \x0c\ufffd\ufffd") == "answer_not_text"
    assert answer_problem("I am a robot. I am a robot. I am a robot. I am a robot.") == "answer_repetitive"
    assert answer_problem("The capital of France is Paris.") is None
    code = "def double(x):\n    return x * 2\n\nprint(double(3))  # prints 6"
    assert answer_problem(code) is None  # code is text: only a task must be mostly words
    assert answer_problem("1. Preheat the oven.\n2. Mix flour and sugar.\n3. Add the eggs.\n4. Bake.") is None


def test_repetition_and_text_measures():
    prose = (
        "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
        "glucose and oxygen. It happens in the chloroplasts, mainly in the leaves."
    )
    assert synth.repetition(prose) < 0.05
    assert synth.repetition("the the the the the the the the") > 0.8
    assert synth.repetition("") == 0.0
    assert synth.text_share("Ünïcödé wörds are text, 100% of them.") == 1.0
    assert synth.text_share("1234 5678") == 0.0  # no letter at all
    assert synth.word_share("Hello, world! (really)") == 1.0


def test_clean_task_strips_labels_quotes_and_what_follows():
    assert synth.clean_task('Task 4: "Name two rivers in Africa."') == "Name two rivers in Africa."
    assert synth.clean_task("4. Describe a cat.\n5. Describe a dog.") == "Describe a cat."
    assert synth.clean_task("New task: Sort these numbers: 3, 1, 2.\nAnswer: 1, 2, 3") == (
        "Sort these numbers: 3, 1, 2."
    )
    assert synth.clean_task("Write a haiku about rain.\n\nIt should rhyme.") == (
        "Write a haiku about rain.\n\nIt should rhyme."
    )


def test_hit_budget_counts_tokens(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = "The capital of France is Paris. " * 4
    used = len(tokenizer(text, add_special_tokens=False).input_ids)
    assert synth.hit_budget(tokenizer, text, used)  # all of the budget: cut off
    assert not synth.hit_budget(tokenizer, text, used + 2)  # room left: it stopped by itself


def test_seeds_come_from_any_prompt_format_with_stable_ids(seeds_file):
    seeds = synth.load_seeds(str(seeds_file))
    assert [s["task"] for s in seeds] == [
        "How many meters are in 18 feet?",
        "Summarize the text.\n\nCats sleep a lot.",
        "Name three primary colors.",
        "Explain photosynthesis in one sentence.",
    ]
    assert seeds[0]["id"] == jsonl.prompt_id([{"role": "user", "content": "How many meters are in 18 feet?"}])


def test_seeds_file_problems_name_the_row(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"ask": "no known field"}])
    with pytest.raises(AlignkitError, match=r"bad.jsonl:line 2: field `prompt`: missing"):
        synth.load_seeds(str(bad))


# -- the loop, on a scripted model ---------------------------------------------------------------------------------


class ScriptedModel:
    """Stands in for `generate.sample`: task prompts get the next scripted task, tasks get their scripted answer."""

    def __init__(self, tasks: list[str], answers: dict[str, str]) -> None:
        self.tasks = list(tasks)
        self.answers = answers
        self.calls: list[int] = []

    def sample(self, model: Any, tokenizer: Any, conversations: list, n: int, max_new_tokens: int, **options: Any):
        self.calls.append(len(conversations))
        content = [c[-1]["content"] for c in conversations]
        if content[0].startswith("Here are"):
            if KeyboardInterrupt in self.tasks[: len(content)]:
                raise KeyboardInterrupt
            return [[self.tasks.pop(0)] for _ in content]
        return [[self.answers[task]] for task in content]


class WordTokenizer:
    def __call__(self, text: str, add_special_tokens: bool = False) -> Any:
        return type("Encoded", (), {"input_ids": text.split()})()


def scripted_run(monkeypatch, tasks, answers, n, **kwargs):
    fake = ScriptedModel(tasks, answers)
    monkeypatch.setattr(synth.generate, "sample", fake.sample)
    seeds = [{"id": f"s{i}", "task": t} for i, t in enumerate(["How many meters are in 18 feet?", "Name a color."])]
    source = {"run": "runs/sft-x", "model": "tiny"}
    sampling = synth.Sampling(task_max_new_tokens=32, max_new_tokens=40)
    rows, counts = synth.synthesize(None, WordTokenizer(), seeds, n, source, sampling, synth.Filters(), **kwargs)
    return rows, counts, fake


def test_loop_filters_counts_and_records_provenance(monkeypatch):
    tasks = [
        "Write a limerick about a sleepy cat.",
        "How many meters are in 19 feet?",  # near-duplicate of a seed
        "Write a limerick about a sleepy cat please.",  # near-duplicate of the task kept just before
        "Explain why the sky looks blue.",  # its answer runs out of tokens
        "Give two tips for learning to juggle.",
        "List three capitals in South America.",
        "Suggest a name for a bakery.",  # answered, but 3 rows are already kept
        "Translate 'good morning' into Spanish.",
    ]
    answers = {
        "Write a limerick about a sleepy cat.": "A cat who would nap on the mat dreamed all day of a rat.",
        "Explain why the sky looks blue.": " ".join(["Sunlight scatters off air molecules"] * 8),
        "Give two tips for learning to juggle.": "Start with two balls, and practise over a bed.",
        "List three capitals in South America.": "Lima, Quito and Santiago.",
        "Suggest a name for a bakery.": "The Rolling Pin.",
        "Translate 'good morning' into Spanish.": "Buenos días.",
    }
    rows, counts, fake = scripted_run(monkeypatch, tasks, answers, n=3, batch_size=4, shots=2)
    assert [r["messages"][0]["content"] for r in rows] == [tasks[0], tasks[4], tasks[5]]
    assert counts["similar_to_seed"] == 1 and counts["similar_to_kept"] == 1 and counts["answer_truncated"] == 1
    assert counts["attempts"] == 8 and counts["rounds"] == 2 and counts["unused"] == 2
    first = rows[0]
    assert first["messages"][1] == {"role": "assistant", "content": answers[tasks[0]]}
    assert first["synth"]["run"] == "runs/sft-x" and first["synth"]["model"] == "tiny"
    assert first["synth"]["round"] == 1 and rows[2]["synth"]["round"] == 2
    assert len(first["synth"]["seed_ids"]) == 2 and set(first["synth"]["seed_ids"]) <= {"s0", "s1"}
    assert first["synth"]["sampling"]["max_new_tokens"] == 40
    assert "answer_truncated" in first["synth"]["filters_passed"]
    assert fake.calls == [4, 2, 4, 4]  # tasks, answers to the two that passed, then a second round


def test_loop_stops_at_max_attempts(monkeypatch):
    tasks = ["Name a color."] * 5  # all near-duplicates of a seed
    rows, counts, fake = scripted_run(monkeypatch, tasks, {}, n=2, batch_size=2, max_attempts=5)
    assert rows == [] and counts["attempts"] == 5 and counts["similar_to_seed"] == 5
    assert fake.calls == [2, 2, 1]  # no answer calls: nothing passed the task filters


def test_loop_keeps_exactly_n_and_counts_the_rest_unused(monkeypatch):
    tasks = ["Describe a sunny beach.", "Describe a rainy forest.", "Describe a snowy mountain."]
    answers = {t: f"It is {t.split()[-2]} there, and quiet." for t in tasks}
    rows, counts, fake = scripted_run(monkeypatch, tasks, answers, n=1, batch_size=3)
    assert len(rows) == 1 and counts["attempts"] == 2 and counts["unused"] == 1
    assert fake.calls == [2, 2]  # a round asks for what is missing over the keep rate (0.5 at first), not a batch


def test_an_interrupted_synth_keeps_each_rounds_rows_and_resumes_without_repeating_them(monkeypatch, tmp_path):
    """A long synth used to write its rows only at the end: Ctrl-C or a kill after an hour lost them all."""
    out = tmp_path / "synth.jsonl"
    tasks = ["Describe a sunny beach.", "Give two tips for learning to juggle."]
    answers = {t: f"Here is a fine answer to: {t}" for t in tasks}

    def save(rows: list[dict[str, Any]]) -> None:
        jsonl.append_partial(out, rows)

    with pytest.raises(KeyboardInterrupt):  # round 1 keeps both tasks; round 2 is interrupted
        scripted_run(monkeypatch, [*tasks, KeyboardInterrupt], answers, n=3, batch_size=2, save=save)
    assert not out.exists()
    with pytest.raises(AlignkitError, match="interrupted `alignkit synth` saved 2 rows here"):
        jsonl.start_partial(out, overwrite=False, resume=False, command="synth")
    earlier = jsonl.start_partial(out, overwrite=False, resume=True, command="synth")
    assert [row["messages"][0]["content"] for row in earlier] == tasks

    more = ["Describe a sunny beach.", "List three capitals in South America."]  # the first was kept before
    answers[more[1]] = "Lima, Quito and Santiago."
    rows, counts, _ = scripted_run(monkeypatch, more, answers, n=3, batch_size=2, earlier=earlier, save=save)
    assert rows[:2] == earlier and rows[2]["messages"][0]["content"] == more[1]
    assert counts["similar_to_kept"] == 1 and counts["attempts"] == 2
    jsonl.finish_partial(out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert not jsonl.partial_file(out).exists()


# -- the whole run on the tiny model ------------------------------------------------------------------------------


def test_default_filters_reject_the_tiny_models_garbage(tiny_model, seeds_file, tmp_path):
    out = tmp_path / "synth.jsonl"
    summary = synth.run(None, tiny_model, str(seeds_file), 2, str(out), max_new_tokens=12, max_attempts=4)
    assert summary["kept"] == 0 and summary["attempts"] == 4
    assert sum(summary["rejected"].values()) + summary["unused"] == 4
    assert out.read_text() == ""


def test_relaxed_run_writes_sft_ready_rows_with_provenance(tiny_model, seeds_file, tmp_path):
    out = tmp_path / "synth.jsonl"
    summary = synth.run(
        None,
        tiny_model,
        str(seeds_file),
        2,
        str(out),
        seed=3,
        max_new_tokens=12,
        task_max_new_tokens=12,
        batch_size=2,
        filters=RELAXED,
    )
    assert summary["kept"] == 2 and summary["wanted"] == 2 and summary["seeds"] == len(SEEDS)
    assert summary["attempts"] == 2 + sum(summary["rejected"].values()) + summary["unused"]
    assert summary["filters"]["allow_truncated"] is True and summary["sampling"]["seed"] == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2
    seed_ids = {s["id"] for s in synth.load_seeds(str(seeds_file))}
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in row["messages"])
        provenance = row["synth"]
        assert set(provenance["seed_ids"]) <= seed_ids and len(provenance["seed_ids"]) == 3
        assert provenance["run"] == "" and provenance["model"] == tiny_model and provenance["round"] >= 1
        assert provenance["sampling"]["max_new_tokens"] == 12
        assert "answer_truncated" not in provenance["filters_passed"]  # truncation was allowed, not checked
        assert "similar_to_seed" in provenance["filters_passed"]
    assert data.load_chat([str(out)]) == [{"messages": row["messages"]} for row in rows]  # `synth` is extra
    assert not jsonl.partial_file(out).exists()


def test_resuming_a_synth_keeps_its_rows_and_refuses_other_sampling(tiny_model, seeds_file, tmp_path):
    out = tmp_path / "synth.jsonl"
    options = {"max_new_tokens": 12, "task_max_new_tokens": 12, "batch_size": 2, "filters": RELAXED}
    first = synth.run(None, tiny_model, str(seeds_file), 1, str(tmp_path / "first.jsonl"), seed=3, **options)
    saved = (tmp_path / "first.jsonl").read_text()
    assert first["kept"] == 1
    partial = jsonl.partial_file(out)
    partial.write_text(saved + '{"messages": [{"role": "user", "content": "cut off by a ki')  # killed mid-write
    with pytest.raises(AlignkitError, match=r"sampling\.seed=3, not 4"):
        synth.run(None, tiny_model, str(seeds_file), 3, str(out), seed=4, resume=True, **options)
    summary = synth.run(None, tiny_model, str(seeds_file), 3, str(out), seed=3, resume=True, **options)
    rows = out.read_text().splitlines()
    assert summary["resumed"] == 1 and summary["kept"] == 3 and len(rows) == 3
    assert rows[0] + "\n" == saved and not partial.exists()
    with pytest.raises(AlignkitError, match="nothing to resume"):
        synth.run(None, tiny_model, str(seeds_file), 3, str(tmp_path / "other.jsonl"), resume=True, **options)


def test_existing_output_is_kept_unless_overwrite(tiny_model, seeds_file, tmp_path):
    out = tmp_path / "synth.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(AlignkitError, match="output file exists"):
        synth.run(None, tiny_model, str(seeds_file), 1, str(out))
    with pytest.raises(AlignkitError, match="at least 1"):
        synth.run(None, tiny_model, str(seeds_file), 0, str(tmp_path / "other.jsonl"))
    assert out.read_text() == "keep me\n"


def test_cli_synth_writes_rows_and_a_summary_and_keeps_existing_output(tiny_model, seeds_file, tmp_path):
    out = tmp_path / "synth.jsonl"
    args = ["synth", "--model", tiny_model, "--seeds", str(seeds_file), "--n", "1", "--out", str(out)]
    args += ["--max-new-tokens", "8", "--max-attempts", "2", "--allow-truncated"]
    sampling = ["--task-temperature", "0.9", "--task-max-new-tokens", "12", "--top-p", "0.8"]
    result = run_cli(*args, *sampling)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["attempts"] <= 2 and summary["kept"] == len(out.read_text().splitlines())
    assert summary["filters"]["allow_truncated"] is True
    chosen = {"task_temperature": 0.9, "task_max_new_tokens": 12, "top_p": 0.8}
    assert summary["sampling"].items() >= chosen.items()
    again = run_cli(*args)
    assert again.returncode == 2 and "output file exists" in again.stderr
