"""Evaluation: metrics on known inputs, and `alignkit eval` end to end on tiny runs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter

import pytest

import alignkit
from alignkit import evaluate, runs
from alignkit.errors import AlignkitError, calling
from alignkit.judges import Prompt, PromptSpec
from tests.conftest import run_cli, write_jsonl


def test_token_f1_and_task_metrics_on_known_answers():
    assert evaluate.token_f1("the answer is 42", "the answer is 42") == 1.0
    assert evaluate.token_f1("no overlap", "something else") == 0.0
    metrics = evaluate.task_metrics(["Paris is the capital.", "It is 7."], ["Paris", "It is 8."])
    assert metrics["contains_reference"] == 0.5
    assert 0 < metrics["rougeL"] < 1 and 0 <= metrics["bleu"] <= 100


def test_win_rate_counts_ties_half_and_forgetting_flags_worse_perplexity():
    judge = evaluate.oracle_judge("concise", exact=True)
    prompts = [Prompt([{"role": "user", "content": "q"}])] * 3
    result = evaluate.win_rate(prompts, ["short", "a b c d", "x y"], ["a b c", "short", "p q"], judge)
    assert result["interval_95"] == [round(x, 4) for x in evaluate.win_rate_interval(1, 1, 1)]
    assert {k: v for k, v in result.items() if k != "interval_95"} == {
        "win_rate": 0.5,
        "wins": 1,
        "ties": 1,
        "losses": 1,
        "identical": 0,  # "x y" vs "p q" tie by the rule, with different words
    }
    unmoved = evaluate.win_rate(prompts, ["short", "a b c d", "x y"], ["short", "short", " x y"], judge)
    assert (unmoved["ties"], unmoved["identical"]) == (2, 2)
    noticed = evaluate.win_rate(
        prompts, ["short", "a b c d", "x y"], ["a b c", "short", "p q"], evaluate.oracle_judge("concise")
    )
    assert noticed["ties"] == 2 and noticed["losses"] == 1  # 1 vs 3 words: a gap no annotator notices; 4 vs 1 is
    assert evaluate.forgetting(10.0, 10.4)["forgetting"] is False
    assert evaluate.forgetting(10.0, 10.6)["forgetting"] is True


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("eval-runs")
    data = write_jsonl(
        root / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Add {i} and {i}."},
                    {"role": "assistant", "content": f"It is {2 * i}."},
                ]
            }
            for i in range(16)
        ],
    )
    made = []
    for name, steps in (("first", 1), ("second", 3)):
        made.append(
            alignkit.sft(
                data={"paths": [str(data)]},
                model={"name": tiny_model},
                out=str(root / name),
                trainer={"max_steps": steps, "per_device_train_batch_size": 4},
            )
        )
    return made


def test_eval_cli_writes_report_with_win_rate_kl_and_forgetting(two_runs, tmp_path):
    first, second = two_runs
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{"prompt": f"Add {i} and 1.", "reference": f"It is {i + 1}."} for i in range(4)]
    )
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "Bread rises because yeast makes gas."}] * 3)
    out = tmp_path / "eval"
    result = run_cli(
        "eval",
        "--runs",
        str(first.path),
        "--runs",
        str(second.path),
        "--prompts",
        str(prompts),
        "--general",
        str(general),
        "--rule",
        "concise",
        "--max-new-tokens",
        "8",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"evaluating: 100%.* 12/12 ", result.stderr)  # one bar over 3 models x 4 answers
    report = json.loads((out / "eval.json").read_text())
    assert set(report["runs"]) == {"base", "first", "second"}  # each compared with the one before it
    for figures in report["runs"].values():
        assert math.isfinite(figures["general_ppl"]) and "ppl_ratio" in figures["forgetting"]
        assert set(figures["task"]) >= {"bleu", "rougeL", "token_f1"}
    assert set(report["comparisons"]) == {"first vs base", "second vs first"}
    comparison = report["comparisons"]["second vs first"]
    oracle = comparison["oracle"]
    assert oracle["wins"] + oracle["ties"] + oracle["losses"] == 4 and comparison["kl_along_answers"] > 0
    low, high = oracle["interval_95"]
    assert low <= oracle["win_rate"] <= high
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 3 * 4 and {a["run"] for a in answers} == {"base", "first", "second"}
    assert all("degenerate" in a and "accurate" in a for a in answers)  # every answer saved with its checks
    assert [a["reference"] for a in answers[:4]] == [f"It is {i + 1}." for i in range(4)]  # and what it was checked by
    for name in ("report.md", "perplexity.png", "win_rate.png", "accuracy.png"):
        assert (out / name).is_file(), name
    assert "## Alarms" in (out / "report.md").read_text()


def test_runs_are_named_by_the_shortest_path_tail_that_tells_them_apart():
    assert runs.distinct_names(["x/a/sft", "x/b/sft", "x/dpo"]) == ["a/sft", "b/sft", "dpo"]
    assert runs.distinct_names(["x/sft", "y/sft/sft"]) == ["x/sft", "sft/sft"]
    assert runs.distinct_names(["x/base", "x/sft"], taken={"base"}) == ["x/base", "sft"]


def small_eval_files(tmp_path, checkable=True):
    """(prompts, general text) for a quick evaluation: two prompts, with references or with nothing to check."""
    rows = [{"prompt": f"Add {i} and 1.", **({"reference": f"It is {i + 1}."} if checkable else {})} for i in range(2)]
    name = "prompts.jsonl" if checkable else "open-prompts.jsonl"
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "Bread rises because yeast makes gas."}] * 2)
    return write_jsonl(tmp_path / name, rows), general


def test_runs_with_the_same_folder_name_keep_their_own_answers(two_runs, tmp_path):
    """The demo names its runs `runs/<group>/sft`: two of them are `a/sft` and `b/sft`, not one merged `sft`."""
    for group, run in zip(("a", "b"), two_runs, strict=True):
        shutil.copytree(run.path, tmp_path / group / "sft")
    prompts, general = small_eval_files(tmp_path)
    out = tmp_path / "eval"
    same_name = [tmp_path / "a" / "sft", tmp_path / "b" / "sft"]
    results = alignkit.evaluate_runs(same_name, out, prompts, general, max_new_tokens=4)
    assert list(results["runs"]) == ["base", "a/sft", "b/sft"]
    assert list(results["comparisons"]) == ["a/sft vs base", "b/sft vs a/sft"]
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert Counter(a["run"] for a in answers) == {"base": 2, "a/sft": 2, "b/sft": 2}


def test_answers_cut_by_the_token_budget_are_named_beside_the_verdicts(tmp_path):
    """At a small --max-new-tokens most answers stopped mid-sentence: every one degenerate, every comparison a tie,
    and the eval said "no measurable difference" with nothing pointing at the budget."""
    prompts, _ = small_eval_files(tmp_path)
    loaded = evaluate.load_eval_prompts(str(prompts))
    cut = ["To add these two numbers we first write them one under the other and", "The sum of the two numbers is"]
    whole = ["It is 1.", "It is 2."]
    results = {"prompts": len(loaded), "max_new_tokens": 16, "runs": {}, "comparisons": {}, "alarms": {}}
    for name, answers in (("base", cut), ("sft", whole)):
        results["runs"][name], _ = evaluate.answer_figures(loaded, answers)
        results["runs"][name] |= {"p90_words": 0, "forgetting": {"ppl_ratio": 1.0}}
    assert results["runs"]["base"]["degenerate_reasons"] == {"truncated": 1}  # the short one is not called cut
    note = "1 of base's 2 answers end mid-sentence (degenerate: truncated) at --max-new-tokens 16"
    assert evaluate.cut_off_note(results).startswith(note)
    assert note in evaluate.report_markdown(results)
    with calling(alignkit.evaluate_runs):  # a notebook's report names the keyword, not --max-new-tokens
        assert "at max_new_tokens=16: " in evaluate.cut_off_note(results)
        assert evaluate.cut_off_note(results).endswith("raise `max_new_tokens`")
    results["runs"]["base"] |= evaluate.answer_figures(loaded, whole)[0]
    assert evaluate.cut_off_note(results) is None and "mid-sentence" not in evaluate.report_markdown(results)


def user(text):
    return [{"role": "user", "content": text}]


# Prompts whose checks depend on the answer in the old code: a greeting without a name to repeat (scored only when
# it failed) and a definition (no spec: scored only when refused).
OPEN_AND_CHECKED = [
    Prompt(user("What is 2 + 3?"), PromptSpec(skill="arithmetic", reference="5")),
    Prompt(user("Good morning!"), PromptSpec(skill="greeting")),
    Prompt(user("What is a noun?"), PromptSpec(skill="definition")),
    Prompt(user("Hi, I'm Sam."), PromptSpec(skill="greeting", must_contain=("Sam",))),
]
POLITE = ["The answer is 5.", "Good morning! How can I help you today?", "A noun is a word that names a thing."]
RUDE = ["The answer is 5.", "The weather is cold today.", "I can't help with that."]


def test_every_model_is_scored_on_the_same_prompts_whatever_it_answers():
    """A polite answer to a greeting with no name left it unscored, an impolite one scored it wrong; a refused
    definition was scored wrong, an answered one not at all: base / SFT / DPO accuracies were over different prompts
    (76 against 77 of the demo's). Which prompts are scored is the prompts' spec's decision, for every model."""
    polite, polite_checks = evaluate.answer_figures(OPEN_AND_CHECKED, [*POLITE, "Hello Sam, nice to meet you!"])
    rude, rude_checks = evaluate.answer_figures(OPEN_AND_CHECKED, [*RUDE, "Hello Sam, nice to meet you!"])
    scored = [[c["accurate"] is not None for c in checks] for checks in (polite_checks, rude_checks)]
    assert scored[0] == scored[1] == [True, True, False, True]
    for figures in (polite, rude):
        assert figures["checked_prompts"] == 3 and figures["checked_by_skill"] == {"arithmetic": 1, "greeting": 2}
    assert (polite["accuracy"], rude["accuracy"]) == (1.0, 2 / 3)  # the greeting that does not greet back is wrong
    assert (polite["accuracy_by_skill"]["greeting"], rude["accuracy_by_skill"]["greeting"]) == (1.0, 0.5)
    # the refused definition is no accuracy figure, it is a false refusal
    assert (polite["false_refusal_rate"], rude["false_refusal_rate"]) == (0.0, 0.25)
    refused, _ = evaluate.answer_figures(OPEN_AND_CHECKED[:1], ["I can't help with that."])
    assert (refused["accuracy"], refused["false_refusal_rate"]) == (0.0, 1.0)  # checkable: wrong and counted


def test_accuracies_over_other_prompts_are_flagged_not_compared_and_the_report_says_n():
    """The alarm "checked accuracy fell" compared accuracies over whatever each model was scored on; the report
    never said over how many prompts."""
    loaded = OPEN_AND_CHECKED[:3]
    results = {"prompts": len(loaded), "runs": {}, "comparisons": {}, "alarms": {}}
    for name, answers in (("sft", POLITE), ("dpo", RUDE)):
        results["runs"][name], _ = evaluate.answer_figures(loaded, answers)
        results["runs"][name] |= {"p90_words": 0, "forgetting": {"ppl_ratio": 1.0}}
    sft, dpo = results["runs"]["sft"], results["runs"]["dpo"]
    assert evaluate.alarms(dpo, sft, {})[0] == "checked accuracy fell: 1.000 -> 0.500"
    report = evaluate.report_markdown(results)
    assert "Accuracy is over the 2 of 3 prompts that can be checked" in report
    assert "| skill | n | sft | dpo |" in report and "| greeting | 1 | 1.000 | 0.000 |" in report
    # figures taken over other prompts (another prompt file, an older eval.json): flagged, not read as a fall
    other = dpo | {"accuracy": 0.4, "checked_prompts": 5, "checked_by_skill": {"arithmetic": 1, "greeting": 4}}
    found = evaluate.alarms(other, sft, {})
    assert found == [
        "accuracy not comparable: checked on 5 prompts {'arithmetic': 1, 'greeting': 4}, the baseline on 2 "
        "{'arithmetic': 1, 'greeting': 1}"
    ]
    assert evaluate.verdict({"oracle": {"interval_95": [0.6, 0.8]}}, found) == "flagged"
    results["runs"]["dpo"] = other
    assert "| greeting | sft 1, dpo 4 |" in evaluate.report_markdown(results)


def test_eval_out_is_kept_unless_overwrite_which_leaves_nothing_stale(two_runs, tmp_path):
    prompts, general = small_eval_files(tmp_path)
    open_prompts, _ = small_eval_files(tmp_path, checkable=False)
    out, run = tmp_path / "eval", str(two_runs[0].path)
    alignkit.evaluate_runs([run], out, prompts, general, max_new_tokens=4)
    assert (out / "accuracy.png").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(AlignkitError, match=r"exists and is not empty.*overwrite=True"):
        alignkit.evaluate_runs([run], out, open_prompts, general, max_new_tokens=4)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    argv = ["--prompts", str(open_prompts), "--general", str(general), "--max-new-tokens", "4", "--out", str(out)]
    result = run_cli("eval", "--runs", run, *argv, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No prompt was checkable" in result.stderr
    assert not (out / "accuracy.png").exists(), "the earlier evaluation's plot is gone"
    report = (out / "report.md").read_text()
    assert "No prompt was checkable" in report and "accuracy.png" not in report
    assert json.loads((out / "eval.json").read_text())["prompts_file"] == str(open_prompts)

    notes = tmp_path / "notes"  # a folder that holds no evaluation is never replaced
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(AlignkitError, match="is not an evaluation"):
        alignkit.evaluate_runs([run], notes, prompts, general, max_new_tokens=4, overwrite=True)
    assert [p.name for p in notes.iterdir()] == ["keep.txt"]


def test_inference_model_is_the_run_model_with_its_adapter_merged(two_runs):
    """Evaluation, `generate` and the playground answer with the adapter merged (no per-layer LoRA matmuls): the
    same logits and greedy answers as the run's PeftModel."""
    import torch

    from alignkit import generate, lineage

    run_model, tokenizer = lineage.load_run_model(two_runs[1].path)
    merged, _ = lineage.load_inference_model(two_runs[1].path)
    assert not any("lora" in name for name, _ in merged.named_modules())
    assert any("lora" in name for name, _ in run_model.named_modules())
    prompts = [[{"role": "user", "content": f"Add {i} and 2."}] for i in range(4)]
    ids = tokenizer.apply_chat_template(prompts[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        assert torch.allclose(run_model(**ids).logits, merged(**ids).logits, atol=1e-5)
    greedy = [generate.greedy_replies(m, tokenizer, prompts, 8) for m in (run_model, merged)]
    assert greedy[0] == greedy[1]


def exact_kl(policy: object, baseline: object, ids: list[int], prefix_len: int) -> float:
    """KL(policy ‖ baseline) of the next-token distributions at each answer token of `ids`, one position at a time."""
    import torch
    from torch.distributions import Categorical, kl_divergence

    with torch.no_grad():
        own, theirs = (m(torch.tensor([ids])).logits[0, :-1].float() for m in (policy, baseline))
    return sum(
        float(kl_divergence(Categorical(logits=own[t]), Categorical(logits=theirs[t])))
        for t in range(prefix_len - 1, len(ids) - 1)
    )


def test_kl_is_the_exact_divergence_along_the_answers_zero_for_a_model_with_itself(tiny_model, tmp_path):
    """`kl_to_baseline` averaged log p_policy - log p_baseline over the policy's greedy answers: no KL estimate (the
    answers are no samples of the policy), and it came out negative (-1.88 for dpo vs sft). The KL is now the exact
    divergence of the two models' next-token distributions at each answer token, summed: 0 for a model with itself,
    positive between two models, the same in right-padded batches as one answer at a time."""
    from transformers import AutoModelForCausalLM

    from alignkit import models
    from alignkit.config import ModelConfig
    from tests.conftest import build_tiny_model

    tokenizer = models.load_tokenizer(ModelConfig(name=tiny_model))
    other = build_tiny_model(tmp_path / "other", initializer_range=0.05)  # the same tokenizer, other weights
    policy, baseline = (AutoModelForCausalLM.from_pretrained(path).eval() for path in (tiny_model, other))
    prompts = [[{"role": "user", "content": f"Add {i} and {i}."}] for i in range(5)]
    answers = ["It is 2.", "", "It is four, since two and two make four.", "Six", "It is 8, I think, or maybe 9."]
    alone = evaluate.answer_kl(policy, baseline, tokenizer, prompts, answers, batch_size=1)
    batched = evaluate.answer_kl(policy, baseline, tokenizer, prompts, answers, batch_size=4)
    assert batched == pytest.approx(alone, rel=1e-4)
    for prompt, answer, figure in zip(prompts, answers, alone, strict=True):
        prefix = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
        full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}])["input_ids"]
        assert figure == pytest.approx(exact_kl(policy, baseline, full, len(prefix)), rel=1e-4)
    assert min(alone) > 0 and len(set(alone)) == len(alone)  # each answer's own figure, not a neighbour's
    assert evaluate.answer_kl(policy, policy, tokenizer, prompts, answers) == [0.0] * len(answers)

    loaders = [(name, lambda: (policy, tokenizer)) for name in ("a", "same as a")]
    same, _ = evaluate.evaluate_models(loaders, [Prompt(p) for p in prompts], ["Some text."], max_new_tokens=4)
    assert same["comparisons"]["same as a vs a"]["kl_along_answers"] == 0.0


def test_batched_perplexity_is_the_one_by_one_figure(two_runs):
    """Perplexity scores texts in right-padded batches of similar lengths: the figure is the one of each text alone."""
    from alignkit import lineage

    model, tokenizer = lineage.load_inference_model(two_runs[1].path)
    texts = ["Compost needs air.", "Water the beds early, before the sun is high, and mulch them well.", "Dig."]
    perplexity_alone = evaluate.perplexity(model, tokenizer, texts, batch_size=1)
    assert evaluate.perplexity(model, tokenizer, texts, batch_size=3) == pytest.approx(perplexity_alone, rel=1e-4)
    assert evaluate.perplexity(model, tokenizer, texts[:1], batch_size=1) != pytest.approx(perplexity_alone, rel=1e-3)


def test_reward_judge_reuses_known_rewards_and_keeps_what_it_scores(tiny_model):
    """The reward-model comparisons reuse the rewards each run's answers got: an answer is scored once."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from alignkit import models
    from alignkit.config import ModelConfig
    from alignkit.lineage import Scorer

    torch.manual_seed(0)  # the random score head of the tiny model
    tokenizer = models.load_tokenizer(ModelConfig(name=tiny_model))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    scorer = Scorer(model, tokenizer)
    prompt = Prompt([{"role": "user", "content": "Hi, I am Ada."}])
    key = evaluate.prompt_key(prompt)
    known = {(key, "known"): -1e9}
    judge = evaluate.reward_judge(scorer, known)
    assert judge(prompt, "known", "Hello Ada.") == 0.0  # the known reward, not a fresh score
    alone = {a: scorer.score([prompt.messages], [a])[0] for a in ("Hello Ada.", "Nice to meet you, Ada!")}
    assert known[(key, "Hello Ada.")] == pytest.approx(alone["Hello Ada."], abs=1e-5)
    assert judge(prompt, "Hello Ada.", "Nice to meet you, Ada!") == float(
        alone["Hello Ada."] > alone["Nice to meet you, Ada!"]
    )
    assert set(known) == {(key, "known"), (key, "Hello Ada."), (key, "Nice to meet you, Ada!")}


def test_reward_and_kl_of_tool_prompts_see_the_tools_the_answers_were_generated_with(tiny_model, tmp_path):
    """eval answered a tool prompt with its `tools` in the chat template, then scored the answer (reward model) and
    measured its KL to the baseline with the tools left out: figures of a prompt the model was not answering."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from alignkit.lineage import Scorer
    from tests.conftest import build_tiny_model
    from tests.unit.test_data_formats import TOOLS_TEMPLATE, WEATHER_TOOL, openai_tool_row, tokenizer_with

    tokenizer = tokenizer_with(tiny_model, TOOLS_TEMPLATE)
    other = build_tiny_model(tmp_path / "other", initializer_range=0.5)  # the same tokenizer, other weights
    policies = {
        name: AutoModelForCausalLM.from_pretrained(path).eval() for name, path in [("a", tiny_model), ("b", other)]
    }
    torch.manual_seed(0)  # the random score head
    head = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).eval()
    head.config.pad_token_id = tokenizer.pad_token_id
    messages = openai_tool_row("Paris")["messages"][:3]
    messages[1] = {**messages[1], "content": ""}  # as the prompt reader gives it
    prompts = [Prompt(messages, tools=[WEATHER_TOOL])]
    loaders = [(name, lambda model=model: (model, tokenizer)) for name, model in policies.items()]
    results, rows = evaluate.evaluate_models(loaders, prompts, ["Some text."], scorer=Scorer(head, tokenizer))
    answer = next(row["answer"] for row in rows if row["run"] == "b")

    def render(tools: list | None, reply: str | None = None) -> list[int]:
        turns = messages + ([{"role": "assistant", "content": reply}] if reply is not None else [])
        return tokenizer.apply_chat_template(turns, tools=tools, add_generation_prompt=reply is None)["input_ids"]

    def reward(tools: list | None) -> float:
        with torch.no_grad():
            return float(head(torch.tensor([render(tools, answer)])).logits[0, 0])

    def kl(tools: list | None) -> float:
        return exact_kl(policies["b"], policies["a"], render(tools, answer), len(render(tools)))

    assert reward([WEATHER_TOOL]) != pytest.approx(reward(None), abs=1e-4)  # the tools change both figures
    assert kl([WEATHER_TOOL]) != pytest.approx(kl(None), abs=1e-3)
    assert next(row["reward"] for row in rows if row["run"] == "b") == pytest.approx(reward([WEATHER_TOOL]), abs=1e-4)
    assert results["comparisons"]["b vs a"]["kl_along_answers"] == pytest.approx(kl([WEATHER_TOOL]), rel=1e-4)
    assert [row["tools"] for row in rows] == [[WEATHER_TOOL]] * 2  # answers.jsonl says what each was answered with


def test_prompts_are_checked_once_per_chat_template_not_once_per_model(tiny_model, monkeypatch):
    """The runs evaluated together usually share their base's tokenizer: every prompt was rendered through the same
    chat template again for each model. A model whose tokenizer has another template is still checked."""
    from transformers import AutoModelForCausalLM

    from alignkit import models
    from alignkit.config import ModelConfig
    from tests.unit.test_data_formats import TOOLS_TEMPLATE, tokenizer_with

    shared, other = models.load_tokenizer(ModelConfig(name=tiny_model)), tokenizer_with(tiny_model, TOOLS_TEMPLATE)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    checked: list[str] = []
    real_check = evaluate.check_prompt_tools

    def check(tokenizer: object, prompts: list[Prompt], source: str) -> None:
        checked.append(tokenizer.chat_template)
        real_check(tokenizer, prompts, source)

    monkeypatch.setattr(evaluate, "check_prompt_tools", check)
    loaders = [
        (name, lambda t=tokenizer: (model, t))
        for name, tokenizer in zip("abcd", [shared, shared, other, shared], strict=True)
    ]
    prompts = [Prompt([{"role": "user", "content": "Hi, I am Ada."}])]
    results, _ = evaluate.evaluate_models(loaders, prompts, ["Some text."], max_new_tokens=2)
    assert list(results["runs"]) == ["a", "b", "c", "d"]
    assert checked == [shared.chat_template, other.chat_template] and shared.chat_template != other.chat_template


def test_sign_test_is_the_binomial_tail_of_the_discordant_outcomes():
    assert evaluate.sign_test(5, 0) == 1 / 32  # five of five one way: the smallest count that clears 0.05
    assert evaluate.sign_test(4, 0) == 1 / 16 > 0.05
    assert evaluate.sign_test(1, 0) == evaluate.sign_test(3, 2) == 0.5  # one prompt ahead is never evidence
    assert evaluate.sign_test(0, 0) == 1.0
    assert evaluate.sign_test(12, 0) < evaluate.sign_test(10, 1) < 0.05 < evaluate.sign_test(9, 3)


def test_runs_of_different_base_models_are_refused_before_any_answer(two_runs, tmp_path):
    """The base answers first and every run is compared with it (forgetting, KL): a run of another base would be
    measured against a model it was never trained on."""
    from tests.conftest import build_tiny_model

    other_base = str(build_tiny_model(tmp_path / "qwen", architecture="qwen2"))
    data = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "Hi?", "completion": "Hello."}] * 8)
    other = alignkit.sft(
        data={"paths": [str(data)]},
        model={"name": other_base},
        out=str(tmp_path / "qwen-sft"),
        trainer={"max_steps": 1, "per_device_train_batch_size": 4},
    )
    prompts, general = small_eval_files(tmp_path)
    out = tmp_path / "eval"
    with pytest.raises(AlignkitError, match=r"qwen-sft was trained on .*qwen.*eval compares runs of one base"):
        alignkit.evaluate_runs([two_runs[0].path, other.path], out, prompts, general, max_new_tokens=4)
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "times", "expected"),
    [
        ({"limit": 0}, 1, "`limit` must be at least 1, got 0 (pass limit=1 or more"),
        ({"limit": -1}, 1, "`limit` must be at least 1, got -1"),
        ({"max_new_tokens": 0}, 1, "`max_new_tokens` must be at least 1"),
        ({}, 2, "passed to `runs` twice (pass each run once)"),
    ],
)
def test_eval_refuses_no_prompts_or_no_tokens_instead_of_an_empty_report(two_runs, tmp_path, option, times, expected):
    """`--limit 0` gave a report of zero prompts with a 0.000 win-rate; `--limit -1` left out the last prompt. Each
    refusal is spelled as `evaluate_runs` takes it (a notebook was told `--limit`, `--runs`)."""
    prompts, general = small_eval_files(tmp_path)
    out = tmp_path / "eval"
    with pytest.raises(AlignkitError) as refused:
        alignkit.evaluate_runs([two_runs[0].path] * times, out, prompts, general, **{"max_new_tokens": 4, **option})
    assert expected in str(refused.value) and "--" not in str(refused.value)
    assert not out.exists()


def test_held_out_sft_rows_in_every_chat_format_are_checked_against_their_answers(tmp_path):
    """A held-out split of SFT data in Alpaca, prompt/completion or ShareGPT shape had no reference (only `messages`
    rows did), so `alignkit eval` said nothing was checkable; each shape now gives the prompts and references of the
    same rows as `messages`."""
    pairs = [
        ("What is 2 plus 2?", "The answer is 4."),
        ("Is water wet?", "Yes, it is."),
        ("Capital of France?", "Paris"),
    ]
    shapes = {
        "messages": [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs
        ],
        "sharegpt": [{"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]} for q, a in pairs],
        "alpaca": [{"instruction": q, "output": a} for q, a in pairs],
        "completion": [{"prompt": q, "completion": a} for q, a in pairs],
        "response": [{"prompt": q, "response": a} for q, a in pairs],
        "turns": [
            {"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
            for q, a in pairs
        ],
    }
    loaded = {
        name: evaluate.load_eval_prompts(str(write_jsonl(tmp_path / f"{name}.jsonl", rows)))
        for name, rows in shapes.items()
    }
    assert [p.spec.reference for p in loaded["messages"]] == ["4", "Yes", "Paris"]
    for name, prompts in loaded.items():
        assert prompts == loaded["messages"], name
    unlabelled = [{"prompt": q, "completion": a, "label": False} for q, a in pairs]  # KTO: what not to answer
    prompt_only = [{"prompt": q} for q, _ in pairs]
    for rows in (unlabelled, prompt_only):
        assert all(
            p.spec.reference is None for p in evaluate.load_eval_prompts(str(write_jsonl(tmp_path / "x.jsonl", rows)))
        )


def test_sample_answers_show_where_the_last_run_and_its_parent_differ_not_where_the_base_does():
    def prompt(text: str, skill: str) -> Prompt:
        return Prompt([{"role": "user", "content": text}], PromptSpec(skill=skill))

    prompts = [prompt("Hi, I am Ada.", "greeting"), prompt("Hello, I'm Bo.", "greeting"), prompt("2+2?", "arithmetic")]
    answers = {
        "base": ["Ada Ada Ada", "Bo Bo", "22"],
        "sft": ["Hello Ada!", "Hi.", "4."],
        "dpo": ["Hello Ada!", "Hi Bo!", "4."],
    }
    picked = {example["skill"]: example for example in evaluate.examples(prompts, answers)}
    assert picked["greeting"]["prompt"] == "Hello, I'm Bo."  # the first where SFT and DPO differ
    assert picked["arithmetic"]["prompt"] == "2+2?"  # none differs: the skill's first prompt


@pytest.fixture(scope="module")
def sibling_runs(tmp_path_factory, tiny_model):
    """runs/sft, and two DPO runs trained from it with different betas: runs/dpo and runs/dpo-b."""
    from tests.conftest import train_sft_and_dpo

    root = tmp_path_factory.mktemp("siblings")
    runs_dir = train_sft_and_dpo(root, tiny_model, 2)
    alignkit.dpo(
        data={"paths": [str(root / "pairs.jsonl")]},
        from_run=str(runs_dir / "sft"),
        out=str(runs_dir / "dpo-b"),
        trainer={"max_steps": 2, "beta": 0.5, "per_device_train_batch_size": 4, "learning_rate": 1e-2},
    )
    return runs_dir


def test_baseline_and_compare_name_the_pairs_and_a_sibling_is_not_called_an_ancestor(sibling_runs, tmp_path):
    """Two DPO runs from one SFT could not be compared with each other and with SFT in one evaluation: eval compared
    each run with the one before it only, and called the sibling before it the baseline it was trained from."""
    prompts, general = small_eval_files(tmp_path)
    runs_argv = [arg for name in ("sft", "dpo", "dpo-b") for arg in ("--runs", str(sibling_runs / name))]
    files = ["--prompts", str(prompts), "--general", str(general), "--max-new-tokens", "6", "--rule", "concise"]
    out = tmp_path / "eval"
    compare = f"dpo-b vs {sibling_runs / 'dpo'}"  # by name or by path
    result = run_cli(
        "eval", *runs_argv, *files, "--baseline", "sft", "--compare", compare, "--out", str(out), env={"COLUMNS": "60"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "eval.json").read_text())
    comparisons = report["comparisons"]
    assert list(comparisons) == ["dpo-b vs dpo", "base vs sft", "dpo vs sft", "dpo-b vs sft"]
    assert {k: c["baseline_is"] for k, c in comparisons.items()} == {
        "dpo-b vs dpo": "not in its lineage",
        "base vs sft": "descendant",
        "dpo vs sft": "ancestor",
        "dpo-b vs sft": "ancestor",
    }
    assert (
        "dpo is not an ancestor of dpo-b" in result.stderr
        and "dpo is not an ancestor" in (out / "report.md").read_text()
    )
    answers: dict[str, list[str]] = {}
    for row in map(json.loads, (out / "answers.jsonl").read_text().splitlines()):
        answers.setdefault(row["run"], []).append(row["answer"])
    for key, comparison in comparisons.items():  # a 60-column terminal wraps the lines, not rich inside a figure
        low, high = comparison["oracle"]["interval_95"]
        assert f"{key}{evaluate.lineage_note(comparison)}: oracle win-rate {comparison['oracle']['win_rate']:.3f} " \
               f"[{low:.3f}, {high:.3f}], KL {comparison['kl_along_answers']:.3f}" in result.stderr  # fmt: skip
    for name, figures in report["runs"].items():
        assert f"│ {name} " in result.stdout and f"({figures['forgetting']['ppl_ratio']:.3f}×)" in result.stdout
    assert f"report: {out / 'report.md'}" in result.stderr
    loaded = evaluate.load_eval_prompts(str(prompts))
    for key, comparison in comparisons.items():  # each pair judged on its own two models' answers
        judged = evaluate.win_rate(loaded, answers[comparison["policy"]], answers[comparison["baseline"]],
                                   evaluate.oracle_judge("concise"))  # fmt: skip
        assert comparison["oracle"] == judged, key
    # the default (each with the one before it) gives the same KL for the pair it shares: the baseline kept in memory
    # or loaded again at the end score the policy's answers alike
    chained = alignkit.evaluate_runs(
        [sibling_runs / n for n in ("sft", "dpo", "dpo-b")], tmp_path / "chain", prompts, general, rule="concise",
        max_new_tokens=6,
    )  # fmt: skip
    for key in ("dpo vs sft", "dpo-b vs dpo"):
        assert comparisons[key]["kl_along_answers"] == pytest.approx(chained["comparisons"][key]["kl_along_answers"])
    assert chained["comparisons"]["dpo-b vs dpo"]["baseline_is"] == "not in its lineage"
    assert set(chained["alarms"]) >= {"sft vs base", "dpo vs sft", "dpo-b vs sft"}  # each against its own parent


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--baseline", "runs/rl"], "--baseline runs/rl: not one of the evaluated models (base, sft, dpo)"),
        (["--compare", "dpo"], "--compare 'dpo': expected 'RUN vs BASELINE'"),
        (["--compare", "dpo vs dpo"], "--compare dpo vs dpo: a model against itself"),
        (["--rule", "carefull"], "unknown oracle rule 'carefull'"),  # was refused after two models had answered
    ],
)
def test_a_bad_comparison_or_rule_is_refused_before_any_answer(sibling_runs, tmp_path, option, expected):
    prompts, general = small_eval_files(tmp_path)
    out = tmp_path / "eval"
    runs_argv = ["--runs", str(sibling_runs / "sft"), "--runs", str(sibling_runs / "dpo")]
    result = run_cli(
        "eval", *runs_argv, "--prompts", str(prompts), "--general", str(general), *option, "--out", str(out)
    )
    assert result.returncode != 0 and expected in result.stderr and "Traceback" not in result.stderr
    assert "evaluating" not in result.stderr and not out.exists()


def test_a_bad_comparison_from_python_names_the_keywords(sibling_runs, tmp_path):
    import alignkit

    prompts, general = small_eval_files(tmp_path)
    runs_given = [str(sibling_runs / "sft"), str(sibling_runs / "dpo")]
    with pytest.raises(AlignkitError) as raised:
        alignkit.evaluate_runs(runs_given, tmp_path / "eval", prompts, general, baseline="runs/rl")
    assert "`baseline` runs/rl: not one of the evaluated models" in str(raised.value)
    assert "passed to `runs`" in raised.value.hint and "--" not in str(raised.value)


def test_alarms_are_a_run_against_its_ancestor_never_against_a_sibling():
    """Compared with a sibling DPO run that answers more prompts right, a DPO run that did better than its SFT parent
    got "checked accuracy fell" and the verdict `flagged`: a difference between two runs read as reward hacking. A run
    that fell against its own parent stays flagged in every comparison, whatever it beats."""
    prompts = [Prompt([{"role": "user", "content": f"q{i}"}]) for i in range(12)]
    better = evaluate.win_rate(prompts, ["a"] * 12, ["a b c"] * 12, evaluate.oracle_judge("concise", exact=True))
    figures = {"degenerate_rate": 0.0}
    results = {
        "runs": {
            "base": figures | {"accuracy": 0.2},
            "sft": figures | {"accuracy": 0.5},
            "dpo": figures | {"accuracy": 0.9},
            "dpo-b": figures | {"accuracy": 0.7},
            "dpo-c": figures | {"accuracy": 0.4},
        },
        "comparisons": {},
        "alarms": {},
    }
    ancestors = {
        "base": [],
        "sft": ["base"],
        "dpo": ["sft", "base"],
        "dpo-b": ["sft", "base"],
        "dpo-c": ["sft", "base"],
    }
    for policy, baseline in (("dpo-b", "dpo"), ("dpo-c", "dpo"), ("dpo-c", "base")):
        results["comparisons"][f"{policy} vs {baseline}"] = {
            "policy": policy,
            "baseline": baseline,
            "baseline_is": evaluate.relation(policy, baseline, ancestors),
            "oracle": better,
        }
    subjects = evaluate.lineage_alarms(results, ancestors)
    evaluate.take_verdicts(results, subjects)
    assert subjects == {"sft": "sft vs base", "dpo": "dpo vs sft", "dpo-b": "dpo-b vs sft", "dpo-c": "dpo-c vs sft"}
    assert results["alarms"]["dpo-b vs dpo"] == [] and results["alarms"]["dpo-b vs sft"] == []
    assert results["comparisons"]["dpo-b vs dpo"]["verdict"] == "better"
    assert results["alarms"]["dpo-c vs sft"] == ["checked accuracy fell: 0.500 -> 0.400"]
    assert results["comparisons"]["dpo-c vs dpo"]["verdict"] == "flagged"
    assert results["comparisons"]["dpo-c vs base"]["verdict"] == "flagged"  # it beats the base, yet fell since SFT


def test_an_evaluation_replaced_with_another_run_added_reuses_the_answers_it_has(sibling_runs, tmp_path):
    """Adding a run to an evaluation (`--overwrite` into the same --out) answered every prompt again with every model:
    on a real model, hours for answers it already had. Answers of the same model (base weights, precision, the
    files of each run it is built from) at the same --max-new-tokens are now reused; a run trained again is not."""
    runs_dir = tmp_path / "runs"
    shutil.copytree(sibling_runs, runs_dir)
    prompts, general = small_eval_files(tmp_path)
    out = tmp_path / "eval"
    first = alignkit.evaluate_runs([runs_dir / "sft", runs_dir / "dpo"], out, prompts, general, max_new_tokens=6)
    assert {n: f["reused_answers"] for n, f in first["runs"].items()} == {"base": 0, "sft": 0, "dpo": 0}
    earlier = (out / "answers.jsonl").read_text().splitlines()

    runs_argv = [arg for name in ("sft", "dpo", "dpo-b") for arg in ("--runs", str(runs_dir / name))]
    argv = ["--prompts", str(prompts), "--general", str(general), "--max-new-tokens", "6", "--out", str(out)]
    result = run_cli("eval", *runs_argv, *argv, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"evaluating: 100%.* 2/2 ", result.stderr)  # only the added run answered
    assert "reused 6 answers of the evaluation this one replaced" in result.stderr
    rows = (out / "answers.jsonl").read_text().splitlines()
    assert len(rows) == 4 * 2 and set(earlier) <= set(rows)  # complete, the earlier rows as they were
    assert Counter(json.loads(row)["run"] for row in rows) == {"base": 2, "sft": 2, "dpo": 2, "dpo-b": 2}

    from safetensors.torch import load_file, save_file

    weights = runs_dir / "dpo" / "adapter" / "adapter_model.safetensors"  # as if trained again: other weights
    save_file({name: tensor * 1.5 for name, tensor in load_file(weights).items()}, weights)
    retrained = alignkit.evaluate_runs(
        [runs_dir / "sft", runs_dir / "dpo"], out, prompts, general, max_new_tokens=6, overwrite=True
    )
    assert {n: f["reused_answers"] for n, f in retrained["runs"].items()} == {"base": 2, "sft": 2, "dpo": 0}
    longer = alignkit.evaluate_runs([runs_dir / "sft"], out, prompts, general, max_new_tokens=7, overwrite=True)
    assert {n: f["reused_answers"] for n, f in longer["runs"].items()} == {"base": 0, "sft": 0}


def test_a_hub_id_bases_answers_are_reused_and_its_runs_found_once_it_moved(tiny_model, tmp_path):
    """A run on a hub id recorded no sha256 of its base (its weights sit in the hub cache, not in a dir the name
    points at): `eval --overwrite` and `--resume` answered every prompt again without a word, and the run could not be
    pointed at a copy of the base elsewhere. The snapshot's weights are hashed now; the answers' fingerprints name
    the weights, not where they are."""
    from alignkit.paths import file_sha256

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "ALIGNKIT_CACHE": str(tmp_path / "cache")}
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "Hi", "completion": "Hello!"}] * 8)
    tiny = ["--set", "trainer.max_steps=1", "--set", "trainer.per_device_train_batch_size=4"]
    sft = tmp_path / "runs" / "sft"
    trained = run_cli("sft", "--model", "org/tiny", "--data", str(chat), "--out", str(sft), *tiny, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert runs.Run(sft).manifest["base"]["sha256"] == file_sha256(snapshot / "model.safetensors")

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}, {"prompt": "How are you?"}])
    evaluate_it = ["eval", "--runs", str(sft), "--prompts", str(prompts), "--max-new-tokens", "4"]
    first = run_cli(*evaluate_it, "--out", str(tmp_path / "eval"), env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli(*evaluate_it, "--out", str(tmp_path / "eval"), "--overwrite", env=env)
    assert "reused 4 answers of the evaluation this one replaced" in again.stderr, again.stderr[-2000:]

    shutil.copytree(snapshot, tmp_path / "models" / "tiny")  # the base copied to a machine without the hub cache
    shutil.rmtree(tmp_path / "hub")
    # without a word of where a copy is: the loader's "not loadable as a hub id ... pass a hub id while online" said
    # nothing of ALIGNKIT_MODEL_PATH or --model, nor which run's base it was
    gone = run_cli(*evaluate_it, "--out", str(tmp_path / "eval"), "--overwrite", env=env)
    assert gone.returncode != 0 and "Traceback" not in gone.stderr
    assert f"base model org/tiny of {sft}: not in the hub cache, and the hub cannot be reached" in gone.stderr
    assert "set ALIGNKIT_MODEL_PATH=LOCAL_COPY (the model dir or the folder holding it as tiny/)" in gone.stderr
    generated = run_cli("generate", "--from", str(sft), "--prompts", str(prompts), "--out", str(tmp_path / "c.jsonl"),
                        env=env)  # fmt: skip
    assert "pass a local copy of it with --model LOCAL_COPY" in generated.stderr, generated.stderr[-2000:]
    moved = run_cli(*evaluate_it, "--out", str(tmp_path / "eval"), "--overwrite",
                    env=env | {"ALIGNKIT_MODEL_PATH": str(tmp_path / "models")})  # fmt: skip
    assert "reused 4 answers of the evaluation this one replaced" in moved.stderr, moved.stderr[-2000:]


# The real CLI, stopped for good once the first model has answered: its perplexity (measured after its answers are
# saved) never returns, and the marker file says so, so the test can kill -9 it right there.
STALL_AFTER_FIRST_ANSWERS = """
import sys, time
from pathlib import Path
from alignkit import cli, evaluate
marker, real = Path(sys.argv[1]), evaluate.perplexity
def stalled(*args, **kwargs):
    marker.write_text("answered")
    time.sleep(600)
evaluate.perplexity = stalled
sys.argv = ["alignkit", *sys.argv[2:]]
cli.main()
"""


def test_a_killed_evaluation_resumes_with_the_models_that_had_not_answered(sibling_runs, tmp_path):
    """eval wrote its answers only at the very end: a kill (or Ctrl-C, or the OOM killer) after hours of answers kept
    nothing, and the rerun answered everything again. Each batch of answers is now saved in OUT as it is made;
    `--resume` answers only the rest, and the finished files are those of an uninterrupted evaluation."""
    import signal
    import subprocess
    import sys
    import time

    prompts, general = small_eval_files(tmp_path)
    runs_argv = [arg for name in ("sft", "dpo") for arg in ("--runs", str(sibling_runs / name))]
    argv = [*runs_argv, "--prompts", str(prompts), "--general", str(general), "--max-new-tokens", "6"]
    whole = tmp_path / "whole"
    uninterrupted = run_cli("eval", *argv, "--out", str(whole))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    out, marker = tmp_path / "eval", tmp_path / "stalled"
    command = [sys.executable, "-c", STALL_AFTER_FIRST_ANSWERS, str(marker), "eval", *argv, "--out", str(out)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "the first model never answered"
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    partial = evaluate.saved_answers_file(out)
    saved = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [row["run"] for row in saved] == ["base", "base"] and not (out / "eval.json").exists()
    partial.write_text(partial.read_text() + '{"run": "sft", "answer": "cut off mid-wri')  # killed mid-write

    again = run_cli("eval", *argv, "--out", str(out))
    assert again.returncode == 2 and "an interrupted `alignkit eval` saved 2 answers here" in again.stderr
    assert "--resume" in again.stderr and "Traceback" not in again.stderr
    other = run_cli("eval", *argv, "--max-new-tokens", "7", "--out", str(out), "--resume")
    assert other.returncode == 2 and "made with max_new_tokens=6, not 7" in other.stderr
    assert "start over: --overwrite without --resume" in other.stderr  # with --resume too, it was refused again
    resumed = run_cli("eval", *argv, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming: 2 answers were saved by the interrupted evaluation" in resumed.stderr
    assert re.search(r"evaluating: 100%.* 4/4 ", resumed.stderr)  # sft and dpo answered, the base did not
    for name in ("eval.json", "answers.jsonl", "report.md"):
        assert (out / name).read_text() == (whole / name).read_text(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())  # no partial left
    nothing = run_cli("eval", *argv, "--out", str(out), "--resume", "--overwrite")
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr
