"""Several annotators (or one in a reloaded tab) rating one round at the same time through one annotate app (its
sessions run in-process with Streamlit's AppTest, against the real local Argilla), then `feedback pull`."""

from __future__ import annotations

from pathlib import Path

import argilla as rg
import pytest
from streamlit.testing.v1 import AppTest

from alignkit.feedback import annotation, client, pull, push
from alignkit.feedback import argilla_schema as schema
from alignkit.jsonl import write_jsonl

pytestmark = [pytest.mark.argilla, pytest.mark.filterwarnings("ignore:.* not found:UserWarning")]
APP = Path(__file__).resolve().parents[2] / "apps" / "annotate.py"
PASSWORD = "at-once-password"


def signed_in(url: str, username: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A browser session of the app (its own session state; the app's process is this one), signed in."""
    monkeypatch.setenv("ARGILLA_API_URL", url)
    monkeypatch.setenv("ALIGNKIT_OUTBOX", str(tmp_path / "outbox.sqlite"))
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.run()
    app.text_input[0].input(username)
    app.text_input[1].input(PASSWORD)
    app.button[0].click().run()
    assert not app.exception, app.exception
    return app


def on_screen(app: AppTest) -> str:
    return next(m.value for m in app.markdown if ": question " in m.value)


def submit(app: AppTest, choice: str) -> None:
    next(b for b in app.button if b.label == schema.PREFERENCE_LABELS[choice]).click().run()
    next(b for b in app.button if b.label == "Submit").click().run()
    assert not app.exception, app.exception


@pytest.mark.parametrize("overlap", [1, 2])
def test_annotators_rating_at_once_share_a_record_only_where_the_round_wants_overlap(
    argilla_server, tmp_path, monkeypatch, overlap
):
    """Without overlap, two annotators signed in at once are shown different records (both were shown the queue's
    first: both rated it, and pull dropped the record when they disagreed); with min_submitted=2 they rate the same
    ones, and pull counts both on each."""
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    name, workspace = f"at-once-{overlap}", f"at-once-{overlap}"
    rows = [
        {"prompt": f"{name}: question {i}?", "candidates": [{"text": f"short {i}"}, {"text": f"a longer answer {i}"}]}
        for i in range(4)
    ]
    write_jsonl(tmp_path / "candidates.jsonl", rows)
    users = [f"{name}-a", f"{name}-b"]
    ids = {str(client.add_user(owner, user, PASSWORD, "annotator", [workspace]).id) for user in users}
    push.push(str(tmp_path / "candidates.jsonl"), name, workspace, min_submitted=overlap, client=owner)
    a, b = (signed_in(argilla_server.url, user, tmp_path, monkeypatch) for user in users)

    for _ in range(4 // (3 - overlap)):  # without overlap: 2 rounds of 2 different records; with: 4 of the same
        shown = on_screen(a), on_screen(b)
        assert (shown[0] == shown[1]) == (overlap == 2), shown
        submit(a, "1")
        submit(b, "2")  # they disagree: a record rated by both would be a split vote

    records = owner.datasets(name, workspace=workspace).records(with_responses=True)
    raters = [set(client.submitted_answers(record)) for record in records]
    if overlap == 2:
        assert raters == [ids] * 4
    else:
        assert [len(r) for r in raters] == [1] * 4 and set.union(*raters) == ids
    summary = pull.pull(name, workspace, client=owner).summary
    assert (summary["pairs"], summary["dropped_low_agreement"]) == ((0, 4) if overlap == 2 else (4, 0))


def test_a_reload_mid_record_keeps_the_choice_and_the_reason_given_so_far(argilla_server, tmp_path, monkeypatch):
    """A reload is a new session of the app with the same sign-in (the cookie finds it; here it is handed over): the
    record comes back with the choice and the rationale given before it, which the new session submits. Before, both
    were blank again, without a word."""
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    pair = [{"text": "short"}, {"text": "longer"}]
    rows = [{"prompt": f"reload: question {i}?", "candidates": pair} for i in range(2)]
    write_jsonl(tmp_path / "candidates.jsonl", rows)
    user = client.add_user(owner, "reloader", PASSWORD, "annotator", ["reload"])
    push.push(str(tmp_path / "candidates.jsonl"), "reload", "reload", client=owner)
    before = signed_in(argilla_server.url, "reloader", tmp_path, monkeypatch)
    shown = on_screen(before)
    next(b for b in before.button if b.label == schema.PREFERENCE_LABELS["2"]).click().run()
    before.text_area(key=next(k for k in before.session_state if str(k).startswith("rationale-"))).input("terse").run()

    after = AppTest.from_file(str(APP), default_timeout=120)
    after.session_state["session"] = before.session_state["session"]
    after.run()
    assert on_screen(after) == shown
    assert next(b for b in after.button if b.label == schema.PREFERENCE_LABELS["2"]).proto.type == "primary"
    assert [t.value for t in after.text_area] == ["terse"]
    next(b for b in after.button if b.label == "Submit").click().run()
    assert not after.exception, after.exception

    record = next(r for r in owner.datasets("reload", workspace="reload").records(with_responses=True)
                  if r.fields["prompt"] == shown)  # fmt: skip
    assert client.submitted_answers(record) == {str(user.id): {schema.PREFERENCE: "2", schema.RATIONALE: "terse"}}


def test_a_draft_comes_back_to_its_annotator_after_others_complete_its_record(argilla_server, tmp_path):
    """A saves a draft, B's answer completes the record (min_submitted 1): A's queue still holds the draft to finish.
    Before, the record left every queue once complete, while A's sidebar went on counting 1 draft."""
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    rows = [{"prompt": "drafted: question?", "candidates": [{"text": "short"}, {"text": "longer"}]}]
    write_jsonl(tmp_path / "candidates.jsonl", rows)
    for user in ("drafter", "finisher"):
        client.add_user(owner, user, PASSWORD, "annotator", ["drafted"])
    push.push(str(tmp_path / "candidates.jsonl"), "drafted", "drafted", min_submitted=1, client=owner)
    a, b = (annotation.login(user, PASSWORD, url=argilla_server.url) for user in ("drafter", "finisher"))
    dataset_id = next(d["id"] for d in annotation.datasets(a) if d["name"] == "drafted")
    record = annotation.next_record(a, dataset_id)
    annotation.save(a, record.id, annotation.pair_values("1", rationale="half"), "draft")
    annotation.save(b, record.id, annotation.pair_values("2"), "submitted")

    assert annotation.next_record(b, dataset_id) is None  # complete: nothing new for anyone
    back = annotation.next_record(a, dataset_id)
    assert back is not None and back.id == record.id and back.draft[schema.RATIONALE] == "half"
    assert annotation.progress(a, dataset_id).left == 1
