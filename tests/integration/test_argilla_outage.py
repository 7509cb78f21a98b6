"""Argilla goes down while annotators rate: answers wait in the durable local outbox (the app says "offline, N
pending") and reach Argilla exactly once after the real server is restarted on the same port and data dir."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import argilla as rg
import pytest
from streamlit.testing.v1 import AppTest

from alignkit.feedback import annotation, client, push, server
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.offline_queue import OfflineQueue
from alignkit.jsonl import write_jsonl

pytestmark = [pytest.mark.argilla, pytest.mark.filterwarnings("ignore:.* not found:UserWarning")]
APP = Path(__file__).resolve().parents[2] / "apps" / "annotate.py"
WORKSPACE = "outage"


class RestartableArgilla:
    """A local Argilla of this module's own (the session's shared server must stay up): stop and start it again on
    the same port and data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = server.start(data_dir=data_dir)
        self.url, self.api_key = self.server.url, self.server.api_key
        self.port = int(self.url.rsplit(":", 1)[-1])

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = server.start(data_dir=self.data_dir, port=self.port)
        assert self.server.url == self.url


@pytest.fixture(scope="module")
def argilla(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableArgilla]:
    local = RestartableArgilla(tmp_path_factory.mktemp("outage-argilla"))
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def owner(argilla: RestartableArgilla) -> rg.Argilla:
    return rg.Argilla(api_url=argilla.url, api_key=argilla.api_key)


def new_round(owner: rg.Argilla, tmp_path: Path, name: str, annotator: str, n_records: int) -> str:
    """A pair round of `n_records` prompts and an annotator in its workspace; returns the annotator's password."""
    rows = [
        {"prompt": f"{name}: question {i}?", "candidates": [{"text": f"short {i}"}, {"text": f"a longer answer {i}"}]}
        for i in range(n_records)
    ]
    write_jsonl(tmp_path / f"{name}.jsonl", rows)
    password = f"{annotator}-password"
    client.add_user(owner, annotator, password, "annotator", [WORKSPACE])
    push.push(str(tmp_path / f"{name}.jsonl"), name, WORKSPACE, min_submitted=1, client=owner)
    return password


def stored_by(owner: rg.Argilla, name: str, username: str) -> list[tuple[str, str, str | None]]:
    """(record id, status, preference) of every response of `username` in the round, as Argilla has it."""
    user_id = str(owner.users(username).id)
    found = []
    for record in owner.datasets(name, workspace=WORKSPACE).records(with_responses=True):
        mine = [r for r in record.responses if str(r.user_id) == user_id]
        by_status = {getattr(r.status, "value", r.status) for r in mine}
        values = {r.question_name: r.value for r in mine}
        found += [(str(record._model.id), status, values.get(schema.PREFERENCE)) for status in by_status]
    return found


def test_queue_keeps_answers_through_an_outage_and_a_partial_flush_sends_each_once(argilla, owner, tmp_path):
    password = new_round(owner, tmp_path, "outage-queue", "queue-rater", 6)
    session = client.annotator_session("queue-rater", password, url=argilla.url)
    dataset_id = next(d["id"] for d in session.datasets() if d["name"] == "outage-queue")
    records = annotation.next_records(session, dataset_id, 6)
    queue = OfflineQueue(session.url, session.username, tmp_path / "outbox.sqlite")
    answers = {r.id: ("1" if i % 2 else "2") for i, r in enumerate(records)}

    for record in records[:2]:
        assert annotation.save_or_queue(session, queue, record.id, {schema.PREFERENCE: answers[record.id]}, "submitted")
    argilla.stop()
    for record in records[2:]:
        values = {schema.PREFERENCE: answers[record.id]}
        assert not annotation.save_or_queue(session, queue, record.id, values, "submitted")
    assert annotation.save_or_queue(session, queue, records[2].id, {schema.PREFERENCE: "1"}, "draft") is False
    answers[records[2].id] = "1"  # a newer answer to a queued record replaces it in the queue
    assert len(queue) == 4
    assert queue.flush(session).pending == 4, "flushing while Argilla is down keeps everything"
    reopened = OfflineQueue(session.url, session.username, tmp_path / "outbox.sqlite")
    assert len(reopened) == 4, "the queue is on disk, not in memory"

    argilla.restart()
    # A flush that sent the first answer and died before deleting its row: the row is sent again on the next flush.
    first = queue.items()[0]
    session.respond(first.record_id, first.values, first.status)
    result = reopened.flush(session)
    assert (result.sent, result.pending, result.failed) == (4, 0, [])
    assert len(queue) == 0

    stored = stored_by(owner, "outage-queue", "queue-rater")
    assert Counter(record_id for record_id, *_ in stored) == Counter({r.id: 1 for r in records}), "none lost or doubled"
    assert {record_id: preference for record_id, _, preference in stored} == answers
    assert {record_id: status for record_id, status, _ in stored}[records[2].id] == "draft"


def app_session(url: str, outbox: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("ARGILLA_API_URL", url)
    monkeypatch.setenv("ALIGNKIT_OUTBOX", str(outbox))
    return AppTest.from_file(str(APP), default_timeout=120)


def button(app: AppTest, label: str) -> object:
    return next(b for b in app.button if b.label == label)


def warnings(app: AppTest) -> str:
    return " ".join(w.value for w in app.warning)


def rate(app: AppTest, choice: str) -> str:
    """Choose a response and submit; returns the prompt that was rated."""
    prompt = next(m.value for m in app.markdown if ": question " in m.value)
    button(app, schema.PREFERENCE_LABELS[choice]).click().run()
    button(app, "Submit").click().run()
    assert not app.exception, app.exception
    return prompt


def test_the_app_keeps_rating_offline_says_so_and_flushes_once_when_argilla_is_back(
    argilla, owner, tmp_path, monkeypatch
):
    password = new_round(owner, tmp_path, "outage-app", "app-rater", 5)
    app = app_session(argilla.url, tmp_path / "outbox.sqlite", monkeypatch)
    app.run()
    app.text_input[0].input("app-rater")
    app.text_input[1].input(password)
    app.button[0].click().run()
    assert not app.exception, app.exception

    rated = {rate(app, "1"): "1"}  # online
    assert "Offline" not in warnings(app)
    argilla.stop()
    for n in (1, 2, 3):
        rated[rate(app, "2")] = "2"
        assert f"Offline, {n} pending" in warnings(app), warnings(app)
    assert len(rated) == 4, "every offline rating was a new record"

    argilla.restart()
    button(app, "Submit").click().run()  # any interaction: the app flushes its outbox first
    assert not app.exception, app.exception
    assert "Offline" not in warnings(app)
    assert len(OfflineQueue(argilla.url, "app-rater", tmp_path / "outbox.sqlite")) == 0

    stored = stored_by(owner, "outage-app", "app-rater")
    prompts = {str(r._model.id): r.fields["prompt"] for r in owner.datasets("outage-app", workspace=WORKSPACE).records}
    assert sorted(prompts[record_id] for record_id, *_ in stored) == sorted(rated), "each rating stored exactly once"
    assert {prompts[record_id]: pref for record_id, status, pref in stored if status == "submitted"} == rated
