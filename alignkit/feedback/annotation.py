"""What the annotate app does with Argilla, without a UI: log in, pick the next record, build answers, save them.

The next record is the highest-`priority` one (metadata written by `feedback push` from `ordering.priority`) that
Argilla still needs answers for (record status `pending`: fewer than `distribution.min_submitted` submissions) and
that this annotator has not answered; their own drafts come back once nothing new is left. Both conditions are
search filters evaluated by the server, so two annotators never need to agree on anything but Argilla's state.
Annotators who rate at the same time through one app are spread over the records (`Claims`): each is shown the
highest-priority record that fewer than `min_submitted` other annotators have on screen, so without overlap two of them
do not both rate the record at the top of the queue (one rating would be wasted, and a split vote dropped by pull).

Statuses: submit stores `submitted`, "save draft" stores `draft` (the record comes back later, prefilled), and skip
stores `discarded` with no values: Argilla's own word for "I will not rate this one". A discarded response leaves this
annotator's queue for good, counts as `discarded` in their progress, and does not count towards `min_submitted`, so
the record stays in everyone else's queue. `feedback pull` reads submitted responses only.

Saving is an upsert (`AnnotatorSession.respond`), so a draft is replaced in place when submitted. While Argilla is
unreachable, answers go to a durable local outbox (`offline_queue.py`) and are sent, exactly once, when it is back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from alignkit.errors import AlignkitError
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.client import PRIORITY, AnnotatorSession, ArgillaUnavailable, annotator_session, server_location
from alignkit.feedback.offline_queue import OfflineQueue

SUBMITTED, DRAFT, DISCARDED = "submitted", "draft", "discarded"
STRENGTH_LABELS = {1: "slightly", 2: "clearly", 3: "much"}


@dataclass(frozen=True)
class RecordView:
    """One record as an annotator sees it, with their own draft answer when they saved one."""

    id: str
    prompt: str
    candidates: list[str]
    priority: float | None = None
    draft: dict[str, Any] = field(default_factory=dict)
    suggestion: tuple[int, float] | None = None  # the reward model's pick (shown index, probability), from push
    response: str | None = None  # a review round's one response (accept / edit / reject) instead of candidates

    @property
    def is_pair(self) -> bool:
        return len(self.candidates) == 2

    @property
    def is_review(self) -> bool:
        return self.response is not None


@dataclass(frozen=True)
class Progress:
    """This annotator's response counts, how many records their queue still holds, and the dataset's completion."""

    mine: dict[str, int]
    left: int
    completed: int
    total: int


def argilla_url() -> str:
    """Where annotators log in: `ARGILLA_API_URL`, else the running local server (never needs an API key)."""
    url, _ = server_location(api_key="unused")
    return url


def login(username: str, password: str, url: str | None = None) -> AnnotatorSession:
    """An annotator's own session; every failure (unreachable, bad password, server error) is an AlignkitError."""
    if not username or not password:
        raise AlignkitError("enter a username and a password")
    try:
        return annotator_session(username, password, url=url)
    except httpx.HTTPError as exc:
        raise AlignkitError(
            f"Argilla did not complete the login ({type(exc).__name__})", "retry, or ask the server's owner"
        ) from None


def log_out(session: AnnotatorSession) -> None:
    """Forget the session's connection (and with it the annotator's API key)."""
    session.http.close()


def datasets(session: AnnotatorSession) -> list[dict[str, Any]]:
    """The datasets this annotator may rate (ready ones in their workspaces), by name."""
    return sorted((d for d in session.datasets() if d.get("status", "ready") == "ready"), key=lambda d: d["name"])


def guidelines(dataset: dict[str, Any]) -> str:
    return dataset.get("guidelines") or schema.GUIDELINES


def next_record(session: AnnotatorSession, dataset_id: str) -> RecordView | None:
    """The record to rate now: unanswered first, then this annotator's drafts; None when nothing is left."""
    found = next_records(session, dataset_id, limit=1)
    return found[0] if found else None


def next_records(session: AnnotatorSession, dataset_id: str, limit: int) -> list[RecordView]:
    """Up to `limit` records to rate, in order (unanswered by priority, then drafts): the head of the queue and what
    the app can keep rating from while Argilla is unreachable."""
    found: list[RecordView] = []
    for my_status in ("pending", DRAFT):
        found += [record_view(r) for r in session.queue(dataset_id, my_status, limit=limit - len(found))]
        if len(found) >= limit:
            break
    return found


def min_submitted(dataset: dict[str, Any]) -> int:
    """How many submitted answers a dataset (as `datasets` lists it) wants per record."""
    return int((dataset.get("distribution") or {}).get("min_submitted") or 1)


class Claims:
    """The record each annotator has on screen, per dataset, shared by every session of one app process.

    Argilla has no reservations: each annotator's queue is the same priority order, so annotators rating at once would
    all be shown its first record. `order` puts the records that `overlap` other annotators already have on screen
    last (never leaves them out: once nothing else is left they are still rated). A claim ends when its annotator
    moves on, logs out, or after `ttl_s` (a tab left open).
    """

    def __init__(self, ttl_s: float = 600.0) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], tuple[str, float]] = {}  # (dataset id, annotator) -> (record id, since)

    def hold(self, dataset_id: str, annotator: str, record_id: str | None) -> None:
        """`annotator` now has `record_id` on screen in `dataset_id` (None: no record)."""
        with self._lock:
            if record_id is None:
                self._held.pop((dataset_id, annotator), None)
            else:
                self._held[(dataset_id, annotator)] = (record_id, time.monotonic())

    def release(self, annotator: str) -> None:
        """Drop every claim of `annotator` (logged out)."""
        with self._lock:
            for key in [k for k in self._held if k[1] == annotator]:
                del self._held[key]

    def held_by_others(self, dataset_id: str, annotator: str) -> Counter[str]:
        """How many other annotators have each record of `dataset_id` on screen now."""
        now = time.monotonic()
        with self._lock:
            return Counter(
                record_id
                for (dataset, who), (record_id, since) in self._held.items()
                if dataset == dataset_id and who != annotator and now - since < self.ttl_s
            )

    def order(self, records: list[RecordView], dataset_id: str, annotator: str, overlap: int) -> list[RecordView]:
        """`records` (queue order) with those already on `overlap` other annotators' screens moved last."""
        held = self.held_by_others(dataset_id, annotator)
        return sorted(records, key=lambda record: held[record.id] >= overlap)  # stable: priority order kept


def record_view(record: dict[str, Any]) -> RecordView:
    fields = record["fields"]
    n = schema.n_candidates(list(fields))
    draft = next((r["values"] or {} for r in record.get("responses") or [] if r["status"] == DRAFT), {})
    metadata = record.get("metadata") or {}
    suggested = metadata.get("suggested")
    return RecordView(
        id=record["id"],
        prompt=fields.get("prompt") or "",
        candidates=[fields.get(schema.candidate_field(i)) or "" for i in range(n)],
        priority=metadata.get(PRIORITY),
        draft={name: value.get("value") for name, value in draft.items()},
        suggestion=None if suggested is None else (int(suggested), float(metadata.get("suggested_p") or 0.0)),
        response=fields.get("response") if n == 0 else None,
    )


def pair_values(choice: str | None, strength: int | None = None, rationale: str = "") -> dict[str, Any]:
    """Answer values for two candidates: the choice (`1`, `2`, `tie`), optional strength 1-3 and rationale."""
    if choice not in schema.PREFERENCE_LABELS:
        raise AlignkitError("choose a response first", "press 1 or 2, or t for a tie")
    values: dict[str, Any] = {schema.PREFERENCE: choice}
    if strength is not None and choice != "tie":
        if strength not in schema.STRENGTH_VALUES:
            raise AlignkitError(f"strength {strength!r}: expected one of {schema.STRENGTH_VALUES}")
        values[schema.STRENGTH] = strength
    if rationale.strip():
        values[schema.RATIONALE] = rationale.strip()
    return values


def ranking_values(ranks: list[int | None], rationale: str = "") -> dict[str, Any]:
    """Answer values for N candidates: `ranks[i]` is the rank (1 = best) given to the i-th shown candidate; tied
    candidates share a rank, and the ranks used are 1..k with none skipped."""
    if any(rank is None for rank in ranks) or set(ranks) != set(range(1, max(ranks, default=0) + 1)):
        raise AlignkitError(
            "rank every response", "press their numbers best first (T ties with the previous, Backspace undoes)"
        )
    values: dict[str, Any] = {
        schema.RANKING: [{"value": schema.candidate_field(i), "rank": rank} for i, rank in enumerate(ranks)]
    }
    if rationale.strip():
        values[schema.RATIONALE] = rationale.strip()
    return values


# A ranking being built, best first: groups of shown-candidate indices; the candidates of one group share a rank.
Ranking = list[list[int]]


def place(ranking: Ranking, candidate: int) -> Ranking:
    """`candidate` is the next best (already placed: unchanged)."""
    return ranking if any(candidate in group for group in ranking) else [*ranking, [candidate]]


def tie_with_previous(ranking: Ranking) -> Ranking:
    """The last placed candidate shares its rank with the one placed before it."""
    if sum(len(group) for group in ranking) < 2 or len(ranking[-1]) > 1:
        return ranking
    return [*ranking[:-2], [*ranking[-2], *ranking[-1]]]


def undo(ranking: Ranking) -> Ranking:
    """Take back the last placed candidate."""
    if not ranking:
        return ranking
    return ranking[:-1] + ([ranking[-1][:-1]] if len(ranking[-1]) > 1 else [])


def ranks_of(ranking: Ranking, n: int) -> list[int | None]:
    """The rank of each of the n shown candidates (1 = best, tied ones equal), None where not placed yet."""
    ranks: list[int | None] = [None] * n
    for rank, group in enumerate(ranking, 1):
        for candidate in group:
            ranks[candidate] = rank
    return ranks


def ranking_from_ranks(ranks: list[int | None]) -> Ranking:
    """The groups of a stored ranking (a draft), best first; unranked candidates are left out."""
    return [[i for i, r in enumerate(ranks) if r == rank] for rank in sorted({r for r in ranks if r is not None})]


def ranking_text(ranking: Ranking) -> str:
    """`3 > 1 = 4 > 2`: response numbers best first, `=` for a tie."""
    return " > ".join(" = ".join(str(i + 1) for i in group) for group in ranking)


def review_values(verdict: str | None, edited: str = "", response: str = "") -> dict[str, Any]:
    """Answer values for a review round: `accept` or `reject`, and the edited response when it differs from the
    `response` reviewed (the app's edit box starts with that response)."""
    if verdict not in schema.REVIEW_LABELS:
        raise AlignkitError("accept or reject the response first", "press A or X")
    return {schema.REVIEW: verdict} | review_edit(edited, response)


def review_edit(edited: str, response: str) -> dict[str, str]:
    """`{edited_response: text}` when `edited` changes `response` (beyond surrounding whitespace and line endings),
    else nothing: an edit box left as it started is no edit."""
    text = normalized(edited)
    return {schema.EDITED_RESPONSE: text} if text and text != normalized(response) else {}


def normalized(text: str) -> str:
    """Text as a browser's text box gives it back: `\n` line endings, no surrounding whitespace."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def draft_ranks(record: RecordView) -> list[int | None]:
    """The ranks of a saved draft ranking, in shown order (None where the draft has none)."""
    by_field = {item["value"]: item.get("rank") for item in record.draft.get(schema.RANKING) or []}
    return [by_field.get(schema.candidate_field(i)) for i in range(len(record.candidates))]


def save(session: AnnotatorSession, record_id: str, values: dict[str, Any], status: str) -> dict[str, Any]:
    """Create or replace this annotator's response to a record (submitted, draft or discarded)."""
    return session.respond(record_id, values, status)


def outbox(session: AnnotatorSession) -> OfflineQueue:
    """This annotator's durable outbox for answers given while Argilla is unreachable."""
    return OfflineQueue(session.url, session.username)


def save_or_queue(
    session: AnnotatorSession, queue: OfflineQueue, record_id: str, values: dict[str, Any], status: str
) -> bool:
    """Store an answer in Argilla, or durably in `queue` when Argilla is unreachable; True when Argilla has it.

    Earlier queued answers go first, so a newer answer to a record is never overwritten by an older queued one.
    """
    if len(queue) and queue.flush(session).pending:
        queue.put(record_id, values, status)
        return False
    try:
        save(session, record_id, values, status)
    except ArgillaUnavailable:
        queue.put(record_id, values, status)
        return False
    return True


def skip(session: AnnotatorSession, record_id: str) -> dict[str, Any]:
    """Leave a record to the other annotators (a `discarded` response without values)."""
    return save(session, record_id, {}, DISCARDED)


def progress(session: AnnotatorSession, dataset_id: str) -> Progress:
    mine = session.progress(dataset_id)
    left = sum(session.search(dataset_id, status, limit=1)["total"] for status in ("pending", DRAFT))
    overall = session.get(f"/api/v1/datasets/{dataset_id}/progress")
    return Progress(mine=mine, left=left, completed=overall.get("completed", 0), total=overall.get("total", 0))
