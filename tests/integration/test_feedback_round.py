"""A collection round against the real local Argilla: push, two annotators rate with overlap 2, pull pairs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import argilla as rg
import pytest

from alignkit.errors import AlignkitError
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback import client, pull, push, simulate
from alignkit.jsonl import write_jsonl

pytestmark = pytest.mark.argilla

PROMPTS = [f"Tell me about topic number {i}." for i in range(6)]


def candidates_file(tmp_path: Path, n: int) -> Path:
    rows = []
    for i, prompt in enumerate(PROMPTS):
        texts = [" ".join(["word"] * (3 + 4 * k + i)) + f" ({k})" for k in range(n)]  # candidate k has 3+4k+i words
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "candidates": [{"text": t, "run": "runs/sft-x"} for t in texts],
            }
        )
    path = tmp_path / f"candidates-{n}.jsonl"
    write_jsonl(path, rows)
    return path


@pytest.fixture(scope="module")
def owner(argilla_server) -> rg.Argilla:
    return rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)


@pytest.fixture(scope="module")
def annotators(owner) -> list[tuple[str, str]]:
    accounts = [("rater-a", "rater-a-password"), ("rater-b", "rater-b-password")]
    for username, password in accounts:
        client.add_user(owner, username, password, "annotator", ["collect"])
    return accounts


def test_two_annotators_overlap_two_pull_expected_pairs(tmp_path, owner, annotators, argilla_server):
    summary = push.push(str(candidates_file(tmp_path, 2)), "round-1", "collect", min_submitted=2, client=owner)
    assert summary["records"] == len(PROMPTS) and summary["candidates_per_record"] == 2
    dataset = owner.datasets("round-1", workspace="collect")
    assert dataset.settings.distribution.min_submitted == 2
    orders = {r.metadata["order"] for r in dataset.records}
    assert orders == {"0,1", "1,0"}, "A/B order is shuffled per record and recorded"

    for username, password in annotators:
        session = client.annotator_session(username, password, url=argilla_server.url)
        assert simulate.rate_all(session, "round-1", "concise", noise=0.0) == len(PROMPTS)
        assert session.queue(next(d["id"] for d in session.datasets() if d["name"] == "round-1")) == []

    result = pull.pull("round-1", "collect", client=owner)
    assert result.summary["pairs"] == len(PROMPTS) and result.summary["annotators"] == 2
    assert result.summary["pairwise_agreement"] == 1.0 and result.summary["krippendorff_alpha"] == 1.0
    for pair in result.pairs:
        assert pair["chosen_candidate"] == 0 and pair["rejected_candidate"] == 1  # the shorter one (concise rule)
        assert len(pair["chosen"][0]["content"]) < len(pair["rejected"][0]["content"])
        assert pair["annotators"] == ["rater-a", "rater-b"]  # as people know them, not Argilla's user ids
        assert pair["agreement"] == 1.0 and pair["margin"] >= 1
        assert pair["prompt"][0]["role"] == "user" and pair["dataset"] == "round-1"
        assert pair["round"] == 1 and pair["candidates_from"] == [{"run": "runs/sft-x"}]  # which policy, which round


def test_records_nobody_rated_are_told_from_records_rated_by_too_few(tmp_path, owner, annotators, argilla_server):
    """`below_min_annotators` counted the records nobody had rated yet, even at the default --min-annotators 1."""
    push.push(str(candidates_file(tmp_path, 2)), "round-partly", "collect", min_submitted=2, client=owner)
    sessions = [client.annotator_session(user, password, url=argilla_server.url) for user, password in annotators]
    dataset_id = next(d["id"] for d in sessions[0].datasets() if d["name"] == "round-partly")
    records = sessions[0].queue(dataset_id, limit=3)
    for session, rated in zip(sessions, (records[:3], records[:1]), strict=True):
        for record in rated:
            session.respond(record["id"], {schema.PREFERENCE: "1"})

    by_one = pull.pull("round-partly", "collect", client=owner).summary
    assert (by_one["rated_records"], by_one["unrated_records"], by_one["below_min_annotators"]) == (3, 3, 0)
    by_two = pull.pull("round-partly", "collect", min_annotators=2, client=owner).summary
    assert (by_two["rated_records"], by_two["unrated_records"], by_two["below_min_annotators"]) == (1, 3, 2)


def test_disagreement_is_measured_and_filtered(tmp_path, owner, annotators, argilla_server):
    push.push(str(candidates_file(tmp_path, 2)), "round-split", "collect", min_submitted=2, client=owner)
    (a_user, a_pass), (b_user, b_pass) = annotators
    simulate.rate_all(client.annotator_session(a_user, a_pass, url=argilla_server.url), "round-split", "concise", 0.0)
    simulate.rate_all(client.annotator_session(b_user, b_pass, url=argilla_server.url), "round-split", "verbose", 0.0)
    result = pull.pull("round-split", "collect", client=owner, min_agreement=0.6)
    assert result.pairs == [] and result.summary["dropped_low_agreement"] == len(PROMPTS)
    assert result.summary["pairwise_agreement"] == 0.0 and result.summary["krippendorff_alpha"] < 0
    out = tmp_path / "pairs.jsonl"  # no pair decided: one line, as for a round of ties, not an empty pairs file
    line = cli_error(argilla_server, "pull", "--dataset", "round-split", "--workspace", "collect", "--out", str(out))
    assert f"decided no comparison ({len(PROMPTS)} split evenly between annotators)" in line, line
    assert "have one more annotator rate the split records" in line and not out.exists()


def test_rankings_become_all_ordered_pairs(tmp_path, owner, annotators, argilla_server):
    push.push(str(candidates_file(tmp_path, 3)), "round-rank", "collect", min_submitted=1, client=owner)
    username, password = annotators[0]
    simulate.rate_all(
        client.annotator_session(username, password, url=argilla_server.url), "round-rank", "concise", 0.0
    )
    result = pull.pull("round-rank", "collect", client=owner)
    assert len(result.pairs) == 3 * len(PROMPTS)
    assert all(p["chosen_candidate"] < p["rejected_candidate"] for p in result.pairs)  # fewer words = lower index


def test_rankings_keep_their_ranks_and_ties(tmp_path, owner, annotators, argilla_server):
    """The app submits ranks in shown order (not best-first) and the oracle may share a rank: pull reads the ranks."""
    from alignkit.feedback import annotation

    push.push(str(candidates_file(tmp_path, 3)), "round-ranks", "collect", min_submitted=1, client=owner)
    username, password = annotators[0]
    session = client.annotator_session(username, password, url=argilla_server.url)
    dataset_id = next(d["id"] for d in session.datasets() if d["name"] == "round-ranks")
    for record in session.queue(dataset_id, limit=50):
        session.respond(record["id"], annotation.ranking_values([3, 1, 2]))  # shown #2 best, then #3, then #1
    result = pull.pull("round-ranks", "collect", client=owner)
    assert len(result.pairs) == 3 * len(PROMPTS)
    records = owner.datasets("round-ranks", workspace="collect").records
    best = {str(r.id): int(r.metadata["order"].split(",")[1]) for r in records}  # the candidate shown second
    assert all(p["rejected_candidate"] != best[p["record_id"]] for p in result.pairs)
    assert sum(p["chosen_candidate"] == best[p["record_id"]] for p in result.pairs) == 2 * len(PROMPTS)
    widest = pull.pull("round-ranks", "collect", client=owner, pairing="best-worst").pairs
    worst = {str(r.id): int(r.metadata["order"].split(",")[0]) for r in records}  # ranked 3rd: shown first
    assert len(widest) == len(PROMPTS)  # one pair per record: best vs worst
    assert all(
        (p["chosen_candidate"], p["rejected_candidate"]) == (best[id_], worst[id_])
        for p in widest
        for id_ in [p["record_id"]]
    )

    tied = {
        "prompt": [{"role": "user", "content": "q"}],
        "candidates": [{"text": t} for t in ("a b c d e", "a b c d", "x")],
    }
    write_jsonl(tmp_path / "tied.jsonl", [tied])
    push.push(str(tmp_path / "tied.jsonl"), "round-tied", "collect", min_submitted=1, client=owner)
    assert simulate.rate_all(session, "round-tied", "concise", noise=0.0) == 1
    result = pull.pull("round-tied", "collect", client=owner)
    assert result.summary["ties"] == 1 and len(result.pairs) == 2  # 5 vs 4 words: not noticeable; 1 word beats both
    assert all(p["chosen"][0]["content"] == "x" for p in result.pairs)


def test_pairs_file_loads_with_datasets(tmp_path, owner):
    result = pull.pull("round-1", "collect", client=owner)
    out = tmp_path / "pairs.jsonl"
    write_jsonl(out, result.pairs)
    from datasets import load_dataset

    loaded = load_dataset("json", data_files=str(out), split="train")
    assert set(loaded.column_names) >= {"prompt", "chosen", "rejected", "margin", "agreement"}
    assert json.loads(out.read_text().splitlines()[0])["chosen"][0]["role"] == "assistant"


def test_unreachable_argilla_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ARGILLA_API_KEY", "x")
    with pytest.raises(AlignkitError, match="unreachable"):
        client.connect()


def test_annotator_outside_workspace_cannot_see_or_submit(owner, argilla_server, tmp_path):
    client.add_user(owner, "outsider", "outsider-password", "annotator", ["elsewhere"])
    session = client.annotator_session("outsider", "outsider-password", url=argilla_server.url)
    assert "round-1" not in {d["name"] for d in session.datasets()}
    record = next(iter(owner.datasets("round-1", workspace="collect").records))
    with pytest.raises(AlignkitError, match="may not access"):
        session.respond(str(record._model.id), {schema.PREFERENCE: "1"})


def test_best_vs_worst_keeps_each_prompts_widest_pair_of_any_pairs_file():
    def pair(prompt, chosen, rejected, margin, tie=False):
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "margin": margin,
            "tie": tie,
        }

    pairs = [pair("p", "a", "b", 1.0), pair("p", "a", "c", 2.0), pair("p", "b", "c", 1.0), pair("q", "x", "y", 0, True)]
    assert pull.best_vs_worst(pairs) == [pairs[1]]  # q's only pair is a tie: no pair for q
    with pytest.raises(AlignkitError, match="best-worst"):
        pull.pull("round-1", pairing="widest")


def test_careful_annotators_check_against_their_answer_key_and_rate_the_same_content_alike(
    tmp_path, owner, annotators, argilla_server
):
    questions = [f"What is {i} plus {i}?" for i in range(6)]
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(
        prompts, [{"prompt": q, "skill": "arithmetic", "reference": str(2 * i)} for i, q in enumerate(questions)]
    )
    rows = [
        {
            "prompt": [{"role": "user", "content": q}],
            "candidates": [
                {"text": f"The answer is {2 * i + 1}."},  # shorter, wrong
                {"text": f"{i} + {i} = {2 * i}, so the answer is {2 * i}."},  # longer, right
                {"text": "Deer. Deer. Deer."},  # degenerate
            ],
        }
        for i, q in enumerate(questions)
    ]
    candidates = tmp_path / "careful.jsonl"
    write_jsonl(candidates, rows)
    key = simulate.load_answer_key(str(prompts))
    rankings = {}
    for name in ("careful-a", "careful-b"):  # the same content twice: new server ids, the same noisy ratings
        push.push(str(candidates), name, "collect", min_submitted=2, client=owner)
        for username, password in annotators:
            session = client.annotator_session(username, password, url=argilla_server.url)
            assert simulate.rate_all(session, name, "careful", noise=0.3, seed=1, answer_key=key) == len(questions)
        result = pull.pull(name, "collect", client=owner, min_agreement=0.0)
        rankings[name] = sorted((p["prompt"][0]["content"], p["chosen_candidate"], p["rejected_candidate"])
                                for p in result.pairs)  # fmt: skip
    assert rankings["careful-a"] == rankings["careful-b"]
    unanimous = pull.pull("careful-a", "collect", client=owner, min_agreement=1.0).pairs
    assert unanimous and all(p["chosen_candidate"] != 2 for p in unanimous)  # degenerate never wins unanimously
    assert all((p["chosen_candidate"], p["rejected_candidate"]) in ((1, 0), (1, 2), (0, 2)) for p in unanimous)


def cli_error(argilla_server, *args: str) -> str:
    """The one line a failing `alignkit feedback ...` prints (exit status non-zero, no traceback)."""
    from tests.conftest import run_cli

    env = {"ARGILLA_API_URL": argilla_server.url, "ARGILLA_API_KEY": argilla_server.api_key}
    result = run_cli("feedback", *args, env=env, timeout=180)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


def test_pulling_a_missing_workspace_or_a_review_round_is_one_clear_line(tmp_path, owner, argilla_server):
    out = str(tmp_path / "pairs.jsonl")
    line = cli_error(argilla_server, "pull", "--dataset", "round-1", "--workspace", "no-such-team", "--out", out)
    assert "no workspace 'no-such-team'" in line
    write_jsonl(
        tmp_path / "sft.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    push.push_review(str(tmp_path / "sft.jsonl"), "review-not-rating", "collect", client=owner)
    line = cli_error(argilla_server, "pull", "--dataset", "review-not-rating", "--workspace", "collect", "--out", out)
    assert "not a rating round" in line and "feedback review pull" in line
    assert not Path(out).exists()


def test_pulling_before_anyone_rated_is_one_clear_line_and_writes_no_pairs_file(
    tmp_path, owner, annotators, argilla_server
):
    """A pull right after the push wrote an empty pairs file and exited 0; `reward` then said "no rows ... add at
    least one example" of a file that only needed rating."""
    push.push(str(candidates_file(tmp_path, 2)), "round-unrated", "collect", min_submitted=2, client=owner)
    out = tmp_path / "pairs.jsonl"
    line = cli_error(argilla_server, "pull", "--dataset", "round-unrated", "--workspace", "collect", "--out", str(out))
    assert f"none of its {len(PROMPTS)} records has a submitted rating yet" in line and "feedback simulate" in line
    assert not out.exists() and not out.with_suffix(".summary.json").exists()

    session = client.annotator_session(*annotators[0], url=argilla_server.url)
    record = session.queue(next(d["id"] for d in session.datasets() if d["name"] == "round-unrated"), limit=1)[0]
    session.respond(record["id"], {schema.PREFERENCE: "1"})
    with pytest.raises(AlignkitError, match="fewer submitted ratings than --min-annotators 2"):
        pull.pull("round-unrated", "collect", min_annotators=2, client=owner)
    assert pull.pull("round-unrated", "collect", client=owner).summary["rated_records"] == 1


def test_pulling_a_round_rated_all_ties_is_one_clear_line_and_writes_no_pairs_file(
    tmp_path, owner, annotators, argilla_server
):
    """Every rated record a tie (the annotators saw no difference): pull wrote an empty pairs file and exited 0, as
    a pull before anyone rated did."""
    import alignkit

    push.push(str(candidates_file(tmp_path, 2)), "round-all-ties", "collect", min_submitted=1, client=owner)
    session = client.annotator_session(*annotators[0], url=argilla_server.url)
    records = session.queue(next(d["id"] for d in session.datasets() if d["name"] == "round-all-ties"), limit=4)
    for record in records[:3]:
        session.respond(record["id"], {schema.PREFERENCE: "tie"})
    out = tmp_path / "pairs.jsonl"
    line = cli_error(argilla_server, "pull", "--dataset", "round-all-ties", "--workspace", "collect", "--out", str(out))
    assert "its 3 rated records are all ties (3 comparisons rated as no difference)" in line, line
    assert "no pairs to pull" in line and "rate more records" in line
    assert not out.exists() and not out.with_suffix(".summary.json").exists()
    with pytest.raises(AlignkitError, match="all ties"):  # ties are never kept there
        alignkit.pull("round-all-ties", out, "collect", ties="keep", client=owner, pairing="best-worst")
    assert not out.exists()
    assert pull.pull("round-all-ties", "collect", client=owner).pairs == []  # the demo adds a round's pairs to others'
    kept = pull.pull("round-all-ties", "collect", ties="keep", client=owner).pairs  # asked for: margin-0 pairs
    assert len(kept) == 3 and all(p["tie"] and p["margin"] == 0 for p in kept)

    session.respond(records[3]["id"], {schema.PREFERENCE: "1"})
    result = pull.pull("round-all-ties", "collect", client=owner)
    assert len(result.pairs) == 1 and result.summary["ties"] == 3


def test_appending_another_candidate_count_is_refused_in_one_line(tmp_path, owner, argilla_server):
    push.push(str(candidates_file(tmp_path, 2)), "round-append-n", "collect", client=owner)
    three = str(candidates_file(tmp_path, 3))
    line = cli_error(argilla_server, "push", "--candidates", three, "--dataset", "round-append-n", "--workspace",
                     "collect", "--append")  # fmt: skip
    assert "shows 2 candidates per record" in line and "has 3 per prompt" in line
    assert len(list(owner.datasets("round-append-n", workspace="collect").records)) == len(PROMPTS)


def test_appending_new_candidates_for_rated_prompts_never_rewrites_what_was_rated(
    tmp_path, owner, annotators, argilla_server
):
    first = candidates_file(tmp_path, 2)
    push.push(str(first), "round-append-again", "collect", client=owner)
    username, password = annotators[0]
    session = client.annotator_session(username, password, url=argilla_server.url)
    assert simulate.rate_all(session, "round-append-again", "concise", noise=0.0) == len(PROMPTS)
    rated = {
        (p["chosen"][0]["content"], p["rejected"][0]["content"])
        for p in pull.pull("round-append-again", "collect", client=owner).pairs
    }

    rows = [json.loads(line) for line in first.read_text().splitlines()]
    for row in rows:  # a second generate for the same prompts: other texts
        row["candidates"] = [{"text": "again: " + c["text"]} for c in row["candidates"]]
    write_jsonl(tmp_path / "again.jsonl", rows)
    push.push(str(tmp_path / "again.jsonl"), "round-append-again", "collect", append=True, client=owner)
    result = pull.pull("round-append-again", "collect", client=owner)
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in result.pairs} == rated
    assert result.summary["records"] == 2 * len(PROMPTS)

    # the same file again, with a seed that shows 5 of the 6 in the other order: its records are there already, so the
    # candidates under the ratings given stay where they were rated
    summary = push.push(str(first), "round-append-again", "collect", seed=6, append=True, client=owner)
    assert (summary["records"], summary["already_in_dataset"]) == (0, len(PROMPTS))
    result = pull.pull("round-append-again", "collect", client=owner)
    assert result.summary["records"] == 2 * len(PROMPTS)
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in result.pairs} == rated


def test_appending_a_new_policys_candidates_is_refused_and_more_of_the_same_keep_the_round(tmp_path, owner):
    """Round 2's candidates (from the DPO run) `--append`ed to round 1's dataset were filed as round 1, beside the SFT
    run's, and pulled with them as one round; more candidates of the round's own policy were filed as round 1 too."""
    first = candidates_file(tmp_path, 2)
    push.push(str(first), "round-append-policy", "collect", round_number=2, client=owner)
    rows = [json.loads(line) for line in first.read_text().splitlines()]

    def rewritten(name: str, run: str) -> str:
        for row in rows:
            row["candidates"] = [{"text": f"{name}: {c['text']}", "run": run} for c in row["candidates"]]
        write_jsonl(tmp_path / f"{name}.jsonl", rows, overwrite=True)
        return str(tmp_path / f"{name}.jsonl")

    with pytest.raises(AlignkitError, match=r"runs/dpo-y.*runs/sft-x.*another round") as refused:
        push.push(rewritten("dpo", "runs/dpo-y"), "round-append-policy", "collect", append=True, client=owner)
    assert "--round 3" in refused.value.hint
    dataset = owner.datasets("round-append-policy", workspace="collect")
    assert len(list(dataset.records)) == len(PROMPTS)

    summary = push.push(rewritten("more", "runs/sft-x"), "round-append-policy", "collect", append=True, client=owner)
    assert (summary["records"], summary["round"]) == (len(PROMPTS), 2)
    summary = push.push(rewritten("dpo", "runs/dpo-y"), "round-append-policy", "collect", 3, append=True, client=owner)
    assert summary["round"] == 3
    by_run = Counter((r.metadata["runs"], r.metadata["round"]) for r in dataset.records)
    assert by_run == {("runs/sft-x", "2"): 2 * len(PROMPTS), ("runs/dpo-y", "3"): len(PROMPTS)}


def test_appending_the_same_runs_candidates_after_runs_moved_keeps_the_round(
    tmp_path, owner, annotators, argilla_server, tiny_model, monkeypatch
):
    """`generate` named a run by its absolute path: once runs/ was renamed (or the project copied to another
    machine), more candidates of the very policy were refused by `push --append` as another policy's; and the pairs
    pulled named it by those paths, so a reward run's `pairs_origin` counted one policy as two."""
    import shutil

    import alignkit
    from alignkit import runs
    from alignkit.data import preferences
    from tests.conftest import CHAT_ROWS

    write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    tiny = {"per_device_train_batch_size": 4, "max_steps": 1}
    sft = alignkit.sft(data={"paths": [str(tmp_path / "chat.jsonl")]}, model={"name": tiny_model},
                       out=str(tmp_path / "runs" / "sft"), trainer=tiny)  # fmt: skip
    sample = {"n": 2, "max_new_tokens": 6, "temperature": 1.5}
    first = alignkit.candidates(tmp_path / "prompts.jsonl", tmp_path / "first.jsonl", from_run=sft, **sample)
    assert push.push(str(first), "round-moved-runs", "collect", client=owner)["round"] == 1

    shutil.move(tmp_path / "runs", tmp_path / "runs-2026")
    moved = tmp_path / "runs-2026" / "sft"
    more = alignkit.candidates(tmp_path / "prompts.jsonl", tmp_path / "more.jsonl", from_run=moved, seed=1, **sample)
    summary = push.push(str(more), "round-moved-runs", "collect", append=True, client=owner)
    assert summary["round"] == 1 and summary["records"] > 0

    session = client.annotator_session(*annotators[0], url=argilla_server.url)
    for record in session.queue(next(d["id"] for d in session.datasets() if d["name"] == "round-moved-runs"), limit=50):
        session.respond(record["id"], {schema.PREFERENCE: "1"})
    pairs = pull.pull("round-moved-runs", "collect", client=owner).pairs
    run_id = runs.Run(moved).manifest["id"]
    assert {json.dumps(p["candidates_from"], sort_keys=True) for p in pairs} == {
        json.dumps([{"run_id": run_id, "run": str(where.resolve())}], sort_keys=True)  # the path: a hint
        for where in (tmp_path / "runs" / "sft", moved)
    }
    (origin,) = preferences.pairs_origin(pairs, tmp_path)  # one policy, wherever its candidates were made
    assert origin["rows"] == len(pairs) and origin["candidates_from"][0]["run_id"] == run_id
    monkeypatch.chdir(tmp_path)  # pulled from the project's folder into pairs/: paths relative to the file's folder
    alignkit.pull("round-moved-runs", tmp_path / "pairs" / "round-1.jsonl", "collect", client=owner)
    written = [json.loads(line) for line in (tmp_path / "pairs" / "round-1.jsonl").read_text().splitlines()]
    assert {p["candidates_from"][0]["run"] for p in written} == {"../runs/sft", "../runs-2026/sft"}

    # trained again in its place: another policy
    alignkit.sft(
        data={"paths": [str(tmp_path / "chat.jsonl")]}, model={"name": tiny_model}, out=str(moved), overwrite=True,
        trainer=tiny,
    )  # fmt: skip
    again = alignkit.candidates(tmp_path / "prompts.jsonl", tmp_path / "again.jsonl", from_run=moved, seed=2, **sample)
    with pytest.raises(AlignkitError, match=r"trained again since.*another round"):
        push.push(str(again), "round-moved-runs", "collect", append=True, client=owner)
    recorded = json.loads(Path(first).read_text().splitlines()[0])["candidates"][0]["run_id"]
    assert recorded == json.loads(Path(more).read_text().splitlines()[0])["candidates"][0]["run_id"]
    assert runs.Run(moved).manifest["id"] != recorded


def test_appending_to_a_dataset_pushed_with_older_record_ids_adds_no_second_copy(tmp_path, owner):
    first = candidates_file(tmp_path, 2)
    dataset = push.round_dataset(owner, "collect", "round-old-ids", False, lambda: schema.preference_settings(2, 2))
    records = push.records_for_round(push.load_candidates(str(first)), 2, 1, 0)
    for record in records:  # ids as pushes made them before they were built from content
        record.id = f"r1-{record.metadata['prompt_id']}"
    dataset.records.log(records)

    summary = push.push(str(first), "round-old-ids", "collect", append=True, client=owner)
    assert (summary["records"], summary["already_in_dataset"]) == (0, len(PROMPTS))
    assert summary["min_submitted"] == 2  # the dataset's, not the command's default
    assert len(list(owner.datasets("round-old-ids", workspace="collect").records)) == len(PROMPTS)


def test_an_agreement_threshold_outside_zero_to_one_is_refused_not_an_empty_pairs_file():
    for bad in (2.0, 60.0, -0.1):
        with pytest.raises(AlignkitError, match="between 0 and 1"):
            pull.pull("round-1", "collect", min_agreement=bad)
    with pytest.raises(AlignkitError, match="min-annotators"):
        pull.pull("round-1", "collect", min_annotators=0)


def test_repeated_candidate_texts_are_shown_once(tmp_path):
    rows = [
        {"prompt": "a", "candidates": [{"text": "x"}, {"text": "y"}, {"text": "x"}]},
        {"prompt": "b", "candidates": [{"text": "same"}, {"text": "same"}]},  # one distinct candidate: not pushed
    ]
    write_jsonl(tmp_path / "repeated.jsonl", rows)
    loaded = push.load_candidates(str(tmp_path / "repeated.jsonl"))
    assert [[c["text"] for c in row["candidates"]] for row in loaded] == [["x", "y"], ["same"]]
