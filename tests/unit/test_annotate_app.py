"""The annotate app's behaviour under Streamlit's AppTest (no browser, no server): Argilla is a fake in memory.

The real server and a real browser are in tests/e2e/test_annotate_browser.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from alignkit.errors import AlignkitError
from alignkit.feedback import annotation, client
from alignkit.feedback import argilla_schema as schema

APP = Path(__file__).resolve().parents[2] / "apps" / "annotate.py"
UNREACHABLE = "http://127.0.0.1:9"
SECRET = "annotator.secret.api.key"


class FakeArgilla:
    """Just enough of `annotation`'s Argilla calls: one dataset, a queue of records, saved answers."""

    def __init__(self, records: list[annotation.RecordView]) -> None:
        self.queue = list(records)
        self.saved: list[tuple[str, dict[str, Any], str]] = []
        self.down = False
        self.closed = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(annotation, "login", self.login)
        monkeypatch.setattr(annotation, "datasets", lambda session: [{"id": "d1", "name": "round-1"}])
        monkeypatch.setattr(annotation, "next_record", self.next_record)
        monkeypatch.setattr(annotation, "next_records", self.next_records)
        monkeypatch.setattr(annotation, "progress", self.progress)
        monkeypatch.setattr(annotation, "save", self.save)

    def login(self, username: str, password: str, url: str | None = None) -> Any:
        if password != "right-password":
            raise AlignkitError(f"Argilla login failed for {username!r}", "check the username and password")
        return SimpleNamespace(url=UNREACHABLE, username=username, api_key=SECRET, http=self)

    def close(self) -> None:  # the session's connection
        self.closed = True

    @property
    def is_closed(self) -> bool:
        return self.closed

    def next_record(self, session: Any, dataset_id: str) -> annotation.RecordView | None:
        return self.check(self.queue[0] if self.queue else None)

    def next_records(self, session: Any, dataset_id: str, limit: int) -> list[annotation.RecordView]:
        return self.check(self.queue[:limit])

    def check(self, value: Any) -> Any:
        if self.down:
            raise AlignkitError("Argilla at http://127.0.0.1:6900 is unreachable (ConnectError)", "retry later")
        return value

    def progress(self, session: Any, dataset_id: str) -> annotation.Progress:
        submitted = sum(1 for *_, status in self.saved if status == "submitted")
        return self.check(annotation.Progress({"submitted": submitted}, len(self.queue), submitted, 4))

    def save(self, session: Any, record_id: str, values: dict[str, Any], status: str) -> dict[str, Any]:
        self.check(None)
        self.saved.append((record_id, values, status))
        if status != "draft":
            self.queue = [r for r in self.queue if r.id != record_id]
        return {}


def pair(i: int, **draft: Any) -> annotation.RecordView:
    return annotation.RecordView(f"rec-{i}", f"Prompt {i}?", [f"first answer {i}", f"second answer {i}"], 1.0, draft)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AppTest:
    monkeypatch.setenv("ARGILLA_API_URL", UNREACHABLE)
    monkeypatch.setenv("ALIGNKIT_OUTBOX", str(tmp_path / "outbox.sqlite"))
    return AppTest.from_file(str(APP), default_timeout=30)


def logged_in(app: AppTest, fake: FakeArgilla, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    fake.install(monkeypatch)
    app.run()
    app.text_input[0].input("ann")
    app.text_input[1].input("right-password")
    return app.button[0].click().run()


def button(app: AppTest, label: str) -> Any:
    return next(b for b in app.button if b.label == label)


def markdown(app: AppTest) -> str:
    return "\n".join(m.value for m in app.markdown)


def test_login_form_renders_with_the_server_url(app):
    app.run()
    assert not app.exception
    assert [t.label for t in app.text_input] == ["Username", "Password"]
    assert app.button[0].label == "Log in"
    assert UNREACHABLE in app.caption[0].value


def test_unreachable_argilla_at_login_is_a_notice_not_a_traceback(app):
    app.run()
    app.text_input[0].input("ann")
    app.text_input[1].input("some-password")
    app.button[0].click().run()
    assert not app.exception
    assert "unreachable" in app.error[0].value
    assert "session" not in app.session_state


def test_no_argilla_configured_is_a_notice(app, monkeypatch, tmp_path):
    monkeypatch.delenv("ARGILLA_API_URL")
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))  # no local server state there
    app.run()
    assert not app.exception
    assert "no Argilla server" in app.error[0].value
    assert "alignkit serve" in app.caption[0].value


def test_wrong_password_is_a_notice_and_stays_on_login(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    fake.install(monkeypatch)
    app.run()
    app.text_input[0].input("ann")
    app.text_input[1].input("wrong-password")
    app.button[0].click().run()
    assert not app.exception
    assert "login failed" in app.error[0].value
    assert app.button[0].label == "Log in"


def test_choose_strength_rationale_then_submit_stores_it_and_shows_the_next_record(app, monkeypatch):
    fake = FakeArgilla([pair(1), pair(2)])
    logged_in(app, fake, monkeypatch)
    assert "Prompt 1?" in markdown(app) and "second answer 1" in markdown(app)
    button(app, "Response 2 is better").click().run()
    button(app, "3 · much").click().run()
    app.text_area[0].input("  more specific  ").run()
    button(app, "Submit").click().run()
    assert not app.exception
    assert fake.saved == [
        ("rec-1", {schema.PREFERENCE: "2", schema.STRENGTH: 3, schema.RATIONALE: "more specific"}, "submitted")
    ]
    assert "Prompt 2?" in markdown(app)
    assert app.text_area[0].value == ""  # the next record starts blank
    assert not any(b.label == "3 · much" for b in app.button)  # no choice yet, so no strength


def test_a_click_from_the_page_of_the_record_just_answered_cannot_choose_on_the_next(app, monkeypatch):
    """While the next record loads, the browser still shows the one just submitted, and a key pressed there reaches
    the server as a click on that page's button. Streamlit routes a click by widget id: when both records' choice
    buttons had one id, it chose on the next record, unseen. They must share none."""
    fake = FakeArgilla([pair(1), pair(2)])
    logged_in(app, fake, monkeypatch)
    labels = ("Response 1 is better", "Response 2 is better", "Tie")
    first_page = {button(app, label).id for label in labels}
    button(app, "Response 1 is better").click().run()
    button(app, "Submit").click().run()
    assert "Prompt 2?" in markdown(app)
    assert first_page.isdisjoint(b.id for b in app.button), "a late press on record 1's page would choose here"
    assert button(app, "Response 1 is better").proto.type == "secondary"  # record 2 starts with nothing chosen


def test_submit_without_a_choice_is_a_notice_and_stores_nothing(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    logged_in(app, fake, monkeypatch)
    button(app, "Submit").click().run()
    assert not app.exception
    assert fake.saved == []
    assert "choose a response first" in app.error[0].value


def test_tie_drops_strength(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    logged_in(app, fake, monkeypatch)
    button(app, "Response 1 is better").click().run()
    button(app, "2 · clearly").click().run()
    button(app, "Tie").click().run()
    button(app, "Submit").click().run()
    assert fake.saved == [("rec-1", {schema.PREFERENCE: "tie"}, "submitted")]


def test_skip_stores_a_discarded_response_without_values(app, monkeypatch):
    fake = FakeArgilla([pair(1), pair(2)])
    logged_in(app, fake, monkeypatch)
    button(app, "Skip").click().run()
    assert fake.saved == [("rec-1", {}, "discarded")]
    assert "Prompt 2?" in markdown(app)


def test_draft_is_saved_and_comes_back_prefilled(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    logged_in(app, fake, monkeypatch)
    button(app, "Response 1 is better").click().run()
    button(app, "Save draft").click().run()
    assert fake.saved == [("rec-1", {schema.PREFERENCE: "1"}, "draft")]

    fake.queue = [pair(1, preference="1", rationale="half done")]  # what Argilla hands back for a draft
    app.session_state["record_dataset"] = None
    app.run()
    assert button(app, "Response 1 is better").proto.type == "primary"
    assert app.text_area[0].value == "half done"
    assert "You saved a draft" in app.info[0].value


def test_ranking_is_built_best_first_with_ties_and_undo_and_shown_before_submit(app, monkeypatch):
    four = annotation.RecordView("rec-r", "Rank?", ["a", "b", "c", "d"], 0.5)
    fake = FakeArgilla([four])
    logged_in(app, fake, monkeypatch)

    def place(i: int) -> None:
        app.button(key=f"place-rec-r-{i}").click().run()

    place(2)
    place(0)
    button(app, "Tie with previous").click().run()  # response 1 shares response 3's rank
    place(1)
    assert "**Ranking:** 3 = 1 > 2" in markdown(app)
    button(app, "Submit").click().run()
    assert fake.saved == [] and "rank every response" in app.error[0].value
    place(3)
    button(app, "Undo").click().run()  # takes back response 4
    place(1)  # already placed: nothing changes
    assert "**Ranking:** 3 = 1 > 2" in markdown(app) and button(app, "Response 3: rank 1").proto.type == "primary"
    place(3)
    button(app, "Submit").click().run()
    ranking = [
        {"value": "candidate_1", "rank": 1},
        {"value": "candidate_2", "rank": 2},
        {"value": "candidate_3", "rank": 1},
        {"value": "candidate_4", "rank": 3},
    ]
    assert fake.saved == [("rec-r", {schema.RANKING: ranking}, "submitted")]


def test_a_draft_ranking_comes_back_placed(app, monkeypatch):
    draft = {schema.RANKING: [{"value": "candidate_1", "rank": 2}, {"value": "candidate_2", "rank": 1},
                              {"value": "candidate_3", "rank": 2}]}  # fmt: skip
    fake = FakeArgilla([annotation.RecordView("rec-d", "Rank?", ["a", "b", "c"], 0.5, draft=draft)])
    logged_in(app, fake, monkeypatch)
    assert "**Ranking:** 2 > 1 = 3" in markdown(app)


def test_argilla_going_away_mid_session_is_a_notice(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    logged_in(app, fake, monkeypatch)
    fake.down = True
    button(app, "Response 1 is better").click().run()
    assert not app.exception
    assert "unreachable" in app.error[0].value
    assert any(b.label == "Retry" for b in app.button)


def test_log_out_closes_the_session_and_shows_the_login_form(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    logged_in(app, fake, monkeypatch)
    button(app, "Log out").click().run()
    assert fake.closed and "session" not in app.session_state
    assert [t.label for t in app.text_input] == ["Username", "Password"]


def test_nothing_left_says_so(app, monkeypatch):
    logged_in(app, FakeArgilla([]), monkeypatch)
    assert "Nothing left to rate" in app.success[0].value


def test_the_app_never_shows_an_api_key(app, monkeypatch):
    fake = FakeArgilla([pair(1)])
    logged_in(app, fake, monkeypatch)
    assert app.session_state["session"].api_key == SECRET
    assert "Prompt 1?" in rendered(app)
    assert SECRET not in rendered(app)


def rendered(app: AppTest) -> str:
    """Every element's protobuf, main area and sidebar: all the page can show."""
    parts = []

    def walk(node: Any) -> None:
        if getattr(node, "proto", None) is not None:
            parts.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(app.main)
    walk(app.sidebar)
    return "\n".join(parts)


# -- answer values (no Streamlit) --------------------------------------------------------------------------------


def test_pair_values_validate_choice_and_strength():
    assert annotation.pair_values("1", 2, " ok ") == {"preference": "1", "strength": 2, "rationale": "ok"}
    assert annotation.pair_values("tie", 3) == {"preference": "tie"}
    with pytest.raises(AlignkitError, match="choose a response"):
        annotation.pair_values(None)
    with pytest.raises(AlignkitError, match="strength"):
        annotation.pair_values("2", 5)


def test_ranking_values_allow_ties_but_no_gap_or_unranked_response():
    assert annotation.ranking_values([2, 1, 2])[schema.RANKING] == [
        {"value": "candidate_1", "rank": 2},
        {"value": "candidate_2", "rank": 1},
        {"value": "candidate_3", "rank": 2},
    ]
    for ranks in ([1, None, 2], [1, 2, 4], [2, 2]):
        with pytest.raises(AlignkitError, match="rank every response"):
            annotation.ranking_values(ranks)


def test_placing_tying_and_undoing_build_dense_ranks():
    ranking = annotation.place(annotation.place(annotation.place([], 1), 3), 0)
    assert annotation.ranks_of(ranking, 4) == [3, 1, None, 2]
    tied = annotation.tie_with_previous(ranking)
    assert annotation.ranks_of(tied, 4) == [2, 1, None, 2] and annotation.ranking_text(tied) == "2 > 4 = 1"
    assert annotation.tie_with_previous(tied) == tied  # the last one is tied already
    assert annotation.undo(tied) == [[1], [3]] and annotation.undo(annotation.undo(annotation.undo(tied))) == []
    assert annotation.ranks_of(annotation.ranking_from_ranks(annotation.ranks_of(tied, 4)), 4) == [2, 1, None, 2]


def test_queue_asks_argilla_for_pending_records_by_priority():
    query = client.queue_query("pending")
    record_filter, response_filter = query["filters"]["and"]
    assert record_filter["scope"] == {"entity": "record", "property": "status"}
    assert record_filter["values"] == ["pending"]
    assert response_filter["scope"] == {"entity": "response", "property": "status"}
    assert query["sort"] == [{"scope": {"entity": "metadata", "metadata_property": "priority"}, "order": "desc"}]


# -- model suggestion (reward model pre-label) and review rounds -------------------------------------------------


def suggested(i: int) -> annotation.RecordView:
    return annotation.RecordView(
        f"rec-{i}", f"Prompt {i}?", [f"first answer {i}", f"second answer {i}"], 1.0, suggestion=(1, 0.834)
    )


def test_model_suggestion_is_shown_only_when_asked_for_on_each_record(app, monkeypatch):
    fake = FakeArgilla([suggested(1), suggested(2)])
    logged_in(app, fake, monkeypatch)
    assert "Model suggests" not in rendered(app)
    assert app.toggle[0].label == "Show model suggestion" and not app.toggle[0].value
    app.toggle[0].set_value(True).run()
    assert "Model suggests: Response 2 (p=0.83)" in [i.value for i in app.info]
    button(app, "Response 1 is better").click().run()
    button(app, "Submit").click().run()
    assert fake.saved == [("rec-1", {schema.PREFERENCE: "1"}, "submitted")]  # the suggestion is never an answer
    assert "Prompt 2?" in markdown(app)
    assert not app.toggle[0].value and "Model suggests" not in rendered(app)  # asked for again per record


def test_no_suggestion_no_toggle(app, monkeypatch):
    logged_in(app, FakeArgilla([pair(1)]), monkeypatch)
    assert len(app.toggle) == 0


def review(i: int, **draft: Any) -> annotation.RecordView:
    return annotation.RecordView(f"rev-{i}", f"Task {i}?", [], 1.0, draft, response=f"answer {i}")


def test_review_accept_with_an_edit_then_reject(app, monkeypatch):
    fake = FakeArgilla([review(1), review(2)])
    logged_in(app, fake, monkeypatch)
    assert "Task 1?" in markdown(app) and "answer 1" in markdown(app)
    assert [t.label for t in app.text_area] == [
        "Edited response (optional: correct the response here; your version replaces it when you accept)"
    ]
    button(app, "Submit").click().run()
    assert fake.saved == [] and "accept or reject" in app.error[0].value
    button(app, "Accept").click().run()
    app.text_area[0].input("  a better answer  ").run()
    button(app, "Submit").click().run()
    button(app, "Reject").click().run()
    button(app, "Submit").click().run()
    assert not app.exception
    assert fake.saved == [
        ("rev-1", {schema.REVIEW: "accept", schema.EDITED_RESPONSE: "a better answer"}, "submitted"),
        ("rev-2", {schema.REVIEW: "reject"}, "submitted"),
    ]


def test_review_edit_box_starts_with_the_response_and_left_as_is_is_no_edit(app, monkeypatch):
    """Correcting one word is an edit of the response, not a retyping of it; accepting the box as it started stores
    the verdict alone (pull keeps the response, `edited: false`)."""
    fake = FakeArgilla([review(1), review(2)])
    logged_in(app, fake, monkeypatch)
    assert app.text_area[0].value == "answer 1"
    button(app, "Accept").click().run()
    button(app, "Submit").click().run()
    assert app.text_area[0].value == "answer 2"
    app.text_area[0].input("answer 2, corrected").run()
    button(app, "Accept").click().run()
    button(app, "Submit").click().run()
    assert fake.saved == [
        ("rev-1", {schema.REVIEW: "accept"}, "submitted"),
        ("rev-2", {schema.REVIEW: "accept", schema.EDITED_RESPONSE: "answer 2, corrected"}, "submitted"),
    ]


def test_back_keeps_the_answer_in_progress_on_the_record_left(app, monkeypatch):
    """An edit and a choice given but not submitted are still there when `Back` has been used and the record returns
    (they were lost, and the annotator had to redo the edit)."""
    fake = FakeArgilla([review(1), review(2)])
    logged_in(app, fake, monkeypatch)
    button(app, "Accept").click().run()
    button(app, "Submit").click().run()
    app.text_area[0].input("answer 2, half corrected").run()
    button(app, "Reject").click().run()
    button(app, "Back").click().run()
    assert "Task 1?" in markdown(app) and app.text_area[0].value == "answer 1"
    button(app, "Submit").click().run()
    assert "Task 2?" in markdown(app) and app.text_area[0].value == "answer 2, half corrected"
    assert button(app, "Reject").proto.type == "primary"


def test_review_draft_comes_back_prefilled(app, monkeypatch):
    fake = FakeArgilla([review(1)])
    logged_in(app, fake, monkeypatch)
    app.text_area[0].input("half an edit").run()
    button(app, "Save draft").click().run()
    assert fake.saved == [("rev-1", {schema.EDITED_RESPONSE: "half an edit"}, "draft")]

    fake.queue = [review(1, review="accept", edited_response="half an edit")]
    app.session_state["record_dataset"] = None
    app.run()
    assert button(app, "Accept").proto.type == "primary"
    assert app.text_area[0].value == "half an edit"


def test_record_view_reads_suggestion_and_review_response():
    record = {
        "id": "x",
        "fields": {"prompt": "p", "candidate_1": "a", "candidate_2": "b"},
        "metadata": {"priority": 0.5, "suggested": 1, "suggested_p": 0.75},
    }
    assert annotation.record_view(record).suggestion == (1, 0.75)
    assert annotation.record_view({**record, "metadata": {}}).suggestion is None
    view = annotation.record_view({"id": "y", "fields": {"prompt": "p", "response": "r"}, "metadata": {}})
    assert view.is_review and view.response == "r" and view.candidates == []
    assert annotation.review_values("accept", " fixed ") == {"review": "accept", "edited_response": "fixed"}
    assert annotation.review_values("accept", "line 1\r\nline 2 ", "line 1\nline 2") == {"review": "accept"}
    with pytest.raises(AlignkitError, match="accept or reject"):
        annotation.review_values(None)
