"""Against the real local Argilla: a review round of synthetic rows (accept / edit / reject, then pull the accepted
rows), and a rating round ordered by a reward model's uncertainty with its pre-label stored for the annotate app."""

from __future__ import annotations

import math
from pathlib import Path

import argilla as rg
import pytest

from alignkit import cli, data
from alignkit.errors import AlignkitError
from alignkit.feedback import annotation, client, ordering, pull, push
from alignkit.feedback import argilla_schema as schema
from alignkit.jsonl import write_jsonl
from tests.conftest import run_cli

pytestmark = pytest.mark.argilla

WORKSPACE = "review-al"
SYNTH_ROWS = [
    {
        "messages": [{"role": "user", "content": task}, {"role": "assistant", "content": answer}],
        "synth": {"seed_ids": ["s1", "s2"], "run": "runs/sft-x", "model": "tiny", "round": 1},
    }
    for task, answer in [
        ("Name a fruit that is yellow.", "A banana."),
        ("What is 2 + 2?", "It is 5."),
        ("Write a word.", "zzzz zzzz zzzz"),
    ]
]


@pytest.fixture(scope="module")
def owner(argilla_server) -> rg.Argilla:
    return rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)


@pytest.fixture(scope="module")
def reviewers(owner, argilla_server) -> list[client.AnnotatorSession]:
    accounts = [("reviewer-a", "reviewer-a-password"), ("reviewer-b", "reviewer-b-password")]
    for username, password in accounts:
        client.add_user(owner, username, password, "annotator", [WORKSPACE])
    return [client.annotator_session(u, p, url=argilla_server.url) for u, p in accounts]


def dataset_id(session: client.AnnotatorSession, name: str) -> str:
    return next(d["id"] for d in session.datasets() if d["name"] == name)


def queue_by_response(session: client.AnnotatorSession, name: str) -> dict[str, annotation.RecordView]:
    return {view.response: view for view in map(annotation.record_view, session.queue(dataset_id(session, name)))}


def test_review_round_pulls_accepted_rows_with_edits(tmp_path, owner, reviewers):
    synth_file = tmp_path / "synth.jsonl"
    write_jsonl(synth_file, SYNTH_ROWS)
    summary = push.push_review(str(synth_file), "synth-review", WORKSPACE, client=owner)
    assert summary["records"] == 3 and summary["duplicates"] == 0
    questions = {q.name for q in owner.datasets("synth-review", workspace=WORKSPACE).settings.questions}
    assert questions == {schema.REVIEW, schema.EDITED_RESPONSE}

    reviewer = reviewers[0]
    queue = queue_by_response(reviewer, "synth-review")
    assert set(queue) == {"A banana.", "It is 5.", "zzzz zzzz zzzz"}
    assert all(view.is_review and view.candidates == [] for view in queue.values())
    assert queue["A banana."].prompt == "Name a fruit that is yellow."
    reviewer.respond(queue["A banana."].id, annotation.review_values("accept"))
    reviewer.respond(queue["It is 5."].id, annotation.review_values("accept", "It is 4."))
    reviewer.respond(queue["zzzz zzzz zzzz"].id, annotation.review_values("reject", "ignored on a reject"))

    rows = pull.pull_review("synth-review", WORKSPACE, client=owner)
    by_task = {row["messages"][0]["content"]: row for row in rows}
    assert set(by_task) == {"Name a fruit that is yellow.", "What is 2 + 2?"}
    assert by_task["Name a fruit that is yellow."]["messages"] == SYNTH_ROWS[0]["messages"]
    assert by_task["What is 2 + 2?"]["messages"][1] == {"role": "assistant", "content": "It is 4."}
    assert by_task["What is 2 + 2?"]["review"]["edited"] is True
    assert by_task["Name a fruit that is yellow."]["review"]["edited"] is False
    for row in rows:
        assert row["synth"] == SYNTH_ROWS[0]["synth"]  # provenance survives the round trip
        assert row["review"]["accepts"] == 1 and row["review"]["rejects"] == 0
        assert row["review"]["reviewers"] == [reviewer.username]
    out = tmp_path / "reviewed.jsonl"
    write_jsonl(out, rows)
    assert len(data.load_chat([str(out)])) == 2  # SFT-ready

    with pytest.raises(AlignkitError, match="already exists"):
        push.push_review(str(synth_file), "synth-review", WORKSPACE, client=owner)


def test_review_needs_a_majority_of_reviewers(tmp_path, owner, reviewers):
    synth_file = tmp_path / "synth.jsonl"
    write_jsonl(synth_file, SYNTH_ROWS[:2])
    push.push_review(str(synth_file), "synth-review-2", WORKSPACE, client=owner, min_submitted=2)
    first, second = (queue_by_response(r, "synth-review-2") for r in reviewers)
    first_reviewer, second_reviewer = reviewers
    first_reviewer.respond(first["A banana."].id, annotation.review_values("accept"))
    second_reviewer.respond(second["A banana."].id, annotation.review_values("accept", "A ripe banana."))
    first_reviewer.respond(first["It is 5."].id, annotation.review_values("accept"))
    second_reviewer.respond(second["It is 5."].id, annotation.review_values("reject"))  # a tie is no acceptance

    rows = pull.pull_review("synth-review-2", WORKSPACE, client=owner)
    assert [row["messages"][1]["content"] for row in rows] == ["A ripe banana."]
    assert rows[0]["review"]["accepts"] == 2
    assert pull.pull_review("synth-review-2", WORKSPACE, client=owner, min_reviews=3) == []


def test_an_edited_response_equal_to_the_response_is_no_edit(tmp_path, owner, reviewers):
    """A client whose edit box starts with the response may store it back unchanged (or with another line ending):
    the pulled row keeps the response and says it was not edited."""
    synth_file = tmp_path / "synth.jsonl"
    write_jsonl(synth_file, SYNTH_ROWS[:1])
    push.push_review(str(synth_file), "synth-review-3", WORKSPACE, client=owner)
    (view,) = queue_by_response(reviewers[0], "synth-review-3").values()
    reviewers[0].respond(view.id, {schema.REVIEW: "accept", schema.EDITED_RESPONSE: "A banana.\r\n"})

    (row,) = pull.pull_review("synth-review-3", WORKSPACE, client=owner)
    assert row["messages"][1]["content"] == "A banana." and row["review"]["edited"] is False


@pytest.mark.skipif(
    "review" not in {g.name for g in cli.feedback_app.registered_groups},
    reason="`alignkit feedback review` is not in the CLI yet",
)
def test_cli_review_push_then_pull(tmp_path, owner, reviewers, argilla_server, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    synth_file = tmp_path / "synth.jsonl"
    write_jsonl(synth_file, SYNTH_ROWS[:1])
    pushed = run_cli(
        "feedback", "review", "push", "--data", str(synth_file), "--dataset", "cli-review", "--workspace", WORKSPACE
    )
    assert pushed.returncode == 0, pushed.stderr
    (view,) = queue_by_response(reviewers[0], "cli-review").values()
    reviewers[0].respond(view.id, annotation.review_values("accept", "Bananas are yellow."))
    out = tmp_path / "reviewed.jsonl"
    pulled = run_cli(
        "feedback", "review", "pull", "--dataset", "cli-review", "--workspace", WORKSPACE, "--out", str(out)
    )
    assert pulled.returncode == 0, pulled.stderr
    assert "1 accepted rows (1 edited)" in pulled.stderr
    assert data.load_chat([str(out)])[0]["messages"][1]["content"] == "Bananas are yellow."


# -- active learning: a reward model orders the round and pre-labels it ------------------------------------------

# candidate pairs whose lengths differ by 1, 5, 20 and 40 characters: the length "reward model" is least sure first
LENGTH_GAPS = {"gap-20": 20, "gap-1": 1, "gap-40": 40, "gap-5": 5}


def length_scorer(prompt: list[dict[str, str]], candidates: list[str]) -> list[float]:
    return [len(text) / 10 for text in candidates]


def candidates_file(tmp_path: Path) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Prompt {name}"}],
            "candidates": [{"text": "x" * (10 + gap), "run": "runs/sft-x"}, {"text": "y" * 10, "run": "runs/sft-x"}],
        }
        for name, gap in LENGTH_GAPS.items()
    ]
    path = tmp_path / "candidates.jsonl"
    write_jsonl(path, rows)
    return path


def test_reward_scorer_orders_by_uncertainty_and_stores_suggestions(tmp_path, owner, reviewers):
    push.push(str(candidates_file(tmp_path)), "al-round", WORKSPACE, client=owner, scorer=length_scorer)
    records = {r.fields["prompt"]: r for r in owner.datasets("al-round", workspace=WORKSPACE).records}
    for name, gap in LENGTH_GAPS.items():
        metadata = records[f"Prompt {name}"].metadata
        p_longer = 1 / (1 + math.exp(-gap / 10))
        assert metadata["priority"] == pytest.approx(1 - 2 * abs(p_longer - 0.5), abs=1e-5)
        assert metadata["suggested_p"] == pytest.approx(p_longer, abs=1e-5)
        suggested_text = records[f"Prompt {name}"].fields[schema.candidate_field(metadata["suggested"])]
        assert suggested_text.startswith("x"), "the suggestion is the shown position of the longer candidate"

    annotator = reviewers[0]
    queue = [annotation.record_view(r) for r in annotator.queue(dataset_id(annotator, "al-round"))]
    assert [view.prompt for view in queue] == ["Prompt gap-1", "Prompt gap-5", "Prompt gap-20", "Prompt gap-40"]
    for view in queue:
        shown, p = view.suggestion
        assert view.candidates[shown].startswith("x") and 0.5 < p < 1


def test_without_a_scorer_there_is_no_suggestion(tmp_path, owner):
    push.push(str(candidates_file(tmp_path)), "al-plain", WORKSPACE, client=owner)
    for record in owner.datasets("al-plain", workspace=WORKSPACE).records:
        assert "suggested" not in record.metadata and "priority" in record.metadata
    with pytest.raises(AlignkitError, match="not a review round"):
        pull.pull_review("al-plain", WORKSPACE, client=owner)


def test_reward_scorer_adapts_a_reward_run_to_the_ordering_signature(monkeypatch):
    calls = []

    class FakeRewardModel:
        def score(self, prompts, completions):
            calls.append((prompts, completions))
            return [float(len(c)) for c in completions]

    monkeypatch.setattr("alignkit.lineage.load_scorer", lambda run_dir: FakeRewardModel())
    scorer = ordering.reward_scorer("runs/reward-x")
    prompt = [{"role": "user", "content": "hi"}]
    assert scorer(prompt, ["a", "bbb"]) == [1.0, 3.0]
    assert calls == [([prompt, prompt], ["a", "bbb"])]
