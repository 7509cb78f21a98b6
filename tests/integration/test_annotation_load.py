"""50 annotators rate at once against the real local Argilla for a bounded time: afterwards Argilla holds exactly the
answers they gave (none lost, none doubled), and the submit latency is reported (test-artifacts/annotation-load.json).

40 annotators go through the annotate app's submission path (`annotation.save_or_queue`: `AnnotatorSession.respond`,
with the durable outbox catching a timeout), 10 through the Argilla SDK with their own API key.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import argilla as rg
import httpx
import pytest
from argilla._exceptions import ArgillaAPIError, ConflictError
from argilla._models._record._response import UserResponseModel

from alignkit.feedback import annotation, client, push
from alignkit.feedback import argilla_schema as schema
from alignkit.feedback.offline_queue import OfflineQueue
from alignkit.jsonl import write_jsonl

pytestmark = [pytest.mark.argilla, pytest.mark.load, pytest.mark.filterwarnings("ignore:.* not found:UserWarning")]
ANNOTATORS, SDK_ANNOTATORS = 50, 10
RECORDS = 40
SECONDS = float(os.environ.get("ALIGNKIT_LOAD_SECONDS", "40"))  # bounded: at most 180 s
WORKSPACE, DATASET = "load", "load-round"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Annotator:
    username: str
    via_sdk: bool
    given: dict[str, str] = field(default_factory=dict)  # record id -> preference this annotator gave
    latencies: list[float] = field(default_factory=list)
    queued: int = 0  # answers that went to the outbox (a timeout) before reaching Argilla
    errors: list[str] = field(default_factory=list)
    session: Any = None
    dataset_id: str = ""
    sdk: Any = None
    user_id: UUID | None = None


def log_in(annotator: Annotator, url: str) -> None:
    """The annotator's own session (and SDK client): done before the clock starts, as people log in once."""
    annotator.session = client.annotator_session(annotator.username, f"{annotator.username}-password", url=url)
    annotator.dataset_id = next(d["id"] for d in annotator.session.datasets() if d["name"] == DATASET)
    if annotator.via_sdk:
        api_key = annotator.session.http.headers["X-Argilla-Api-Key"]
        annotator.sdk = rg.Argilla(api_url=url, api_key=api_key, timeout=60)
        annotator.user_id = UUID(annotator.session.get("/api/v1/me")["id"])


def rate_until(deadline: float, annotator: Annotator, url: str, outbox: Path) -> None:
    try:
        rate(deadline, annotator, url, outbox)
    except Exception as exc:  # reported and asserted on, never lost in a thread
        annotator.errors.append(f"{type(exc).__name__}: {exc}"[:200])


def rate(deadline: float, annotator: Annotator, url: str, outbox: Path) -> None:
    """Take records from this annotator's queue and answer them until the deadline or the queue ends."""
    session, sdk, user_id = annotator.session, annotator.sdk, annotator.user_id
    queue = OfflineQueue(url, annotator.username, outbox)
    while time.monotonic() < deadline:
        records = annotation.next_records(session, annotator.dataset_id, 5)
        records = [r for r in records if r.id not in annotator.given]
        if not records:
            break
        for record in records:
            if time.monotonic() >= deadline:
                break
            choice = "1" if hash((annotator.username, record.id)) % 2 else "2"
            started = time.perf_counter()
            try:
                if sdk is not None:
                    submit_with_sdk(sdk, user_id, record.id, choice)
                elif not annotation.save_or_queue(
                    session, queue, record.id, {schema.PREFERENCE: choice}, annotation.SUBMITTED
                ):
                    annotator.queued += 1
            except Exception as exc:  # counted and reported: the assertions below must see every failure
                annotator.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            annotator.latencies.append(time.perf_counter() - started)
            annotator.given[record.id] = choice
    if len(queue):  # whatever a timeout left in the outbox goes now
        queue.flush(session)
        assert len(queue) == 0


def submit_with_sdk(sdk: rg.Argilla, user_id: UUID, record_id: str, choice: str, attempts: int = 4) -> None:
    """What a careful SDK user does: retry a failed create; a conflict on a retry means the first one was stored."""
    response = UserResponseModel(values={schema.PREFERENCE: {"value": choice}}, status="submitted", user_id=user_id)
    for attempt in range(attempts):
        try:
            sdk.api.records.create_record_response(UUID(record_id), response)
            return
        except ConflictError:
            if attempt:
                return
            raise
        except (ArgillaAPIError, httpx.HTTPError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def test_fifty_annotators_rating_at_once_lose_and_double_nothing(argilla_server, tmp_path):
    assert SECONDS <= 180, "keep the load test bounded"
    owner = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    annotators = [Annotator(f"load-{i:02d}", via_sdk=i < SDK_ANNOTATORS) for i in range(ANNOTATORS)]
    rg.Workspace(name=WORKSPACE, client=owner).create()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda a: client.add_user(owner, a.username, f"{a.username}-password", "annotator", [WORKSPACE]),
                annotators,
            )
        )
    rows = [
        {"prompt": f"Load question {i}?", "candidates": [{"text": f"short {i}"}, {"text": f"longer answer {i}"}]}
        for i in range(RECORDS)
    ]
    write_jsonl(tmp_path / "load.jsonl", rows)
    push.push(str(tmp_path / "load.jsonl"), DATASET, WORKSPACE, min_submitted=ANNOTATORS, client=owner)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda a: log_in(a, argilla_server.url), annotators))

    started = time.monotonic()
    deadline = started + SECONDS
    threads = [
        threading.Thread(target=rate_until, args=(deadline, a, argilla_server.url, tmp_path / "outbox.sqlite"))
        for a in annotators
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads)

    user_ids = {str(owner.users(a.username).id): a for a in annotators}
    stored: Counter[tuple[str, str]] = Counter()
    values: dict[tuple[str, str], str] = {}
    for record in owner.datasets(DATASET, workspace=WORKSPACE).records(with_responses=True):
        for response in record.responses:
            if response.question_name == schema.PREFERENCE and str(response.user_id) in user_ids:
                key = (user_ids[str(response.user_id)].username, str(record._model.id))
                stored[key] += 1
                values[key] = response.value
    given = {(a.username, record_id): choice for a in annotators for record_id, choice in a.given.items()}
    latencies = sorted(x for a in annotators for x in a.latencies)
    errors = [e for a in annotators for e in a.errors]
    figures = {
        "annotators": ANNOTATORS,
        "sdk_annotators": SDK_ANNOTATORS,
        "seconds": round(elapsed, 1),
        "submissions": len(given),
        "stored_responses": sum(stored.values()),
        "lost": len(set(given) - set(stored)),
        "duplicated": sum(1 for count in stored.values() if count > 1),
        "unexpected": len(set(stored) - set(given)),
        "errors": len(errors),
        "queued_then_flushed": sum(a.queued for a in annotators),
        "submissions_per_s": round(len(given) / elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "latency_max_s": round(latencies[-1], 3),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "annotation-load.json").write_text(json.dumps(figures | {"error_samples": errors[:5]}, indent=2))
    print("\nannotation load:", json.dumps(figures))

    assert len(given) > ANNOTATORS, "every annotator got to rate"
    assert errors == [], errors[:5]
    assert figures["lost"] == figures["duplicated"] == figures["unexpected"] == 0, figures
    assert sum(stored.values()) == len(given)
    assert values == given, "Argilla holds the very answers given"
